"""HTR-JAND network: layers, attention and the assembled HTRNet with its presets."""
from .config import PRESETS, ModelConfig, preset

__all__ = ["PRESETS", "HTRNet", "ModelConfig", "count_parameters", "preset"]


def __getattr__(name: str):
    """The network (and PyTorch) load on first use; configurations do not need them."""
    if name in ("HTRNet", "count_parameters"):
        from . import network

        return getattr(network, name)
    raise AttributeError(f"module 'htrjand.model' has no attribute {name!r}")
