"""HTRNet: gated CNN with SE -> Combined Attention blocks -> CTC head (spec 2.2-2.4).

Read top to bottom: the config, the presets, then the network.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch
from torch import Tensor, nn

from .attention import CombinedAttentionBlock, sinusoidal_encoding
from .layers import GatedConvBlock


@dataclass
class ModelConfig:
    """Architecture of an HTRNet; every field is a CLI option of `htrjand train`."""

    height: int = field(default=64, metadata={"help": "input line height in pixels"})
    channels: tuple[int, ...] = field(default=(32, 48, 64, 80, 96, 112),
                                      metadata={"help": "output channels of the CNN blocks"})
    pools: tuple[tuple[int, int], ...] = field(
        default=((2, 2), (2, 2), (2, 2), (2, 1), (2, 1), (1, 1)),
        metadata={"help": "(height, width) pooling after each CNN block"})
    light_first_block: bool = field(default=True, metadata={
        "help": "first block downsamples with a strided conv before its gated conv (about 3x cheaper)"})
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
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model options: {', '.join(sorted(unknown))}")
        data = dict(data)
        for key in ("channels", "sigma_init"):
            if key in data:
                data[key] = tuple(data[key])
        if "pools" in data:
            data["pools"] = tuple(tuple(p) for p in data["pools"])
        return cls(**data)


PRESETS: dict[str, ModelConfig] = {
    "teacher": ModelConfig(),
    "student": ModelConfig(channels=(16, 32, 48, 64, 64, 80), d_model=128, heads=2, blocks=1),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset (`teacher`, `student`) with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class HTRNet(nn.Module):
    """Line image `[B, 1, H, W]` + widths `[B]` -> CTC logits `[B, T, classes]` + frame lengths `[B]`."""

    def __init__(self, config: ModelConfig, num_classes: int):
        super().__init__()
        if len(config.pools) != len(config.channels):
            raise ValueError("model config needs one pooling entry per CNN block")
        self.config, self.num_classes = config, num_classes
        height, c_in, blocks = config.height, 1, []
        n = len(config.channels)
        for i, (c_out, pool) in enumerate(zip(config.channels, config.pools)):
            drop = config.cnn_dropout if i >= n - config.cnn_dropout_blocks else 0.0
            blocks.append(GatedConvBlock(c_in, c_out, tuple(pool), drop, config.se_reduction, config.se,
                                         stem=(i == 0 and config.light_first_block)))
            c_in, height = c_out, height // pool[0]
        if height < 1:
            raise ValueError(f"pooling reduces height {config.height} to zero")
        self.cnn = nn.ModuleList(blocks)
        self.feature_height = height
        self.project = nn.Linear(c_in * height, config.d_model)
        self.blocks = nn.ModuleList(
            CombinedAttentionBlock(config.d_model, config.heads, config.dropout, config.ffn_mult,
                                   kind=config.attention, fusion=config.fusion,
                                   sigma_init=tuple(config.sigma_init), window=config.window)
            for _ in range(config.blocks))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, num_classes)

    def frame_lengths(self, widths: Tensor) -> Tensor:
        """Number of output frames for images of the given pixel widths."""
        return torch.div(widths, self.config.width_stride, rounding_mode="floor")

    def features(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        """CNN + attention features `[B, T, d_model]` and frame lengths."""
        x = images
        for block in self.cnn:
            x, widths = block(x, widths)
        b, c, h, t = x.shape
        x = self.project(x.permute(0, 3, 1, 2).reshape(b, t, c * h))
        x = x + sinusoidal_encoding(t, x.shape[-1], x.device).to(x.dtype)
        mask = torch.arange(t, device=x.device)[None, :] < widths[:, None]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x), widths

    def forward(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = self.features(images, widths)
        return self.head(x), lengths


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
