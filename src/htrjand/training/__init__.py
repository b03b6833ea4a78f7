"""Training on PyTorch Lightning: data module, Lightning module and the `train()` entry point."""
from .run import train

__all__ = ["train"]
