"""Architecture of an HTRNet and the Teacher/Student presets (no torch: the CLI and the ONNX
runtime read configurations without loading PyTorch)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


@dataclass
class ModelConfig:
    """Architecture of an HTRNet; every field is a CLI option of `htrjand train`."""

    height: int = field(default=64, metadata={"help": "input line height in pixels"})
    channels: tuple[int, ...] = field(default=(32, 48, 64, 80, 96, 112),
                                      metadata={"help": "output channels of the CNN blocks"})
    pools: tuple[tuple[int, int], ...] = field(
        default=((2, 2), (2, 2), (2, 2), (2, 1), (2, 1), (1, 1)),
        metadata={"help": "(height, width) pooling after each CNN block"})
    light_blocks: int = field(default=1, metadata={
        "help": "how many leading CNN blocks downsample with a strided conv before their gated conv instead "
                "of pooling after it (each about 3-4x cheaper; same output size and parameters)"})
    se: bool = field(default=True, metadata={"help": "Squeeze-and-Excitation in every CNN block"})
    se_reduction: int = field(default=8, metadata={"help": "SE channel reduction ratio"})
    cnn_dropout: float = field(default=0.2, metadata={"help": "Dropout2d in the last `cnn_dropout_blocks` CNN blocks"})
    cnn_dropout_blocks: int = field(default=2, metadata={"help": "how many final CNN blocks use dropout"})
    d_model: int = field(default=192, metadata={"help": "width of the attention blocks"})
    heads: int = field(default=4, metadata={"help": "attention heads"})
    blocks: int = field(default=1, metadata={"help": "Combined Attention blocks"})
    ffn_mult: int = field(default=2, metadata={"help": "feed-forward expansion"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the attention blocks"})
    attention: str = field(default="combined", metadata={"help": "combined | mhsa | proxima"})
    fusion: str = field(default="gate", metadata={"help": "fusion of MHSA and Proxima: gate | scalar | concat"})
    sigma_init: tuple[float, float] = field(default=(2.0, 8.0), metadata={
        "help": "initial Proxima sigmas (frames), spread across heads"})
    window: int | None = field(default=None, metadata={"help": "optional hard Proxima window in frames"})

    @property
    def width_stride(self) -> int:
        stride = 1
        for _, w in self.pools:
            stride *= w
        return stride

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)} | {"light_first_block"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model options: {', '.join(sorted(unknown))}")
        data = dict(data)
        if "light_first_block" in data:  # checkpoints written before `light_blocks`
            data.setdefault("light_blocks", int(bool(data.pop("light_first_block"))))
        for key in ("channels", "sigma_init"):
            if key in data:
                data[key] = tuple(data[key])
        if "pools" in data:
            data["pools"] = tuple(tuple(p) for p in data["pools"])
        return cls(**data)


PRESETS: dict[str, ModelConfig] = {
    "teacher": ModelConfig(),
    # `light_blocks=2` makes the Student's network ~1.3x faster but cost accuracy on the demo (docs/decisions.md).
    "student": ModelConfig(channels=(16, 32, 48, 64, 64, 80), d_model=128, heads=2, blocks=1),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset (`teacher`, `student`) with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
