"""HTRNet: gated CNN with SE -> Combined Attention blocks -> CTC head (spec 2.2-2.4).

Read top to bottom; its configuration and presets are in model/config.py.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import CombinedAttentionBlock, sinusoidal_encoding
from .config import PRESETS, ModelConfig, preset  # noqa: F401 (re-exported)
from .layers import GatedConvBlock


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
                                         stem=i < config.light_blocks and tuple(pool) != (1, 1)))
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

    def cnn_features(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        """CNN feature columns `[B, T, C * H']` and frame lengths."""
        x = images
        for block in self.cnn:
            x, widths = block(x, widths)
        b, c, h, t = x.shape
        return x.permute(0, 3, 1, 2).reshape(b, t, c * h), widths

    def attend(self, columns: Tensor, lengths: Tensor) -> Tensor:
        """Projection, positions and the Combined Attention blocks over CNN columns: `[B, T, d_model]`."""
        x = self.project(columns)
        t = x.shape[1]
        x = x + sinusoidal_encoding(t, x.shape[-1], x.device).to(x.dtype)
        mask = torch.arange(t, device=x.device)[None, :] < lengths[:, None]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def features(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        """CNN + attention features `[B, T, d_model]` and frame lengths."""
        columns, lengths = self.cnn_features(images, widths)
        return self.attend(columns, lengths), lengths

    def forward(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = self.features(images, widths)
        return self.head(x), lengths


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
