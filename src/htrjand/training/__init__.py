"""Training on PyTorch Lightning: data module, Lightning module and the `train()` entry point."""

__all__ = ["train"]


def __getattr__(name: str):
    """`htrjand.training.train` imports Lightning only when used (the CLI parser imports submodules)."""
    if name == "train":
        from .run import train

        return train
    raise AttributeError(f"module 'htrjand.training' has no attribute {name!r}")
