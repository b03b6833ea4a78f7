"""HTR-JAND network: layers, attention and the assembled HTRNet with its presets."""
from .network import PRESETS, HTRNet, ModelConfig, count_parameters, preset

__all__ = ["PRESETS", "HTRNet", "ModelConfig", "count_parameters", "preset"]
