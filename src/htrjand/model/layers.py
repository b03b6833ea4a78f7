"""Convolutional layers of the HTR-JAND backbone (spec 2.2), all aware of a width mask.

A width mask is a float tensor `[B, 1, 1, W]` with 1 on real columns and 0 on right padding.
Every layer that mixes columns (convolutions, SE pooling) sees padding as zeros, so the real
part of a line gives the same output whether or not the batch pads it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def width_mask(widths: Tensor, width: int) -> Tensor:
    """`[B, 1, 1, width]` float mask from per-sample real widths."""
    cols = torch.arange(width, device=widths.device)
    return (cols[None, :] < widths[:, None]).to(torch.float32)[:, None, None, :]


class FullGatedConv2d(nn.Module):
    """One k x k convolution C -> 2C; output `a * sigmoid(b)` of its two halves (GLU over channels)."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return a * torch.sigmoid(b)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation whose global average pool counts real columns only."""

    def __init__(self, channels: int, reduction: int = 8, min_hidden: int = 4):
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # x is already zero on padding; divide by the number of real positions.
        area = mask.sum(dim=(2, 3)) * x.shape[2]
        pooled = x.sum(dim=(2, 3)) / area.clamp_min(1.0)
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))
        return x * scale[:, :, None, None]


def _summed(t: Tensor, sync: bool) -> Tensor:
    """`t` summed over the DDP ranks (gradients flow back to every rank) when `sync`, else `t`."""
    if not sync or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics count real columns only, so that the amount of padding
    in a batch does not shift the statistics that inference later uses.

    With `sync` (set by training under DDP) the statistics are those of the global batch, summed
    over the ranks, as one process would compute them (torch's SyncBatchNorm has no mask)."""

    sync = False

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if not self.training or mask is None:
            return super().forward(x)
        xf, m = x.float(), mask.float()
        sums = _summed(torch.cat([(m.sum() * x.shape[2])[None], (xf * m).sum(dim=(0, 2, 3))]), self.sync)
        count = sums[0].clamp_min(2.0)  # mask is [B, 1, 1, W]: sum over B and W
        mean = sums[1:] / count
        centred = (xf - mean[None, :, None, None]) * m
        var = _summed((centred ** 2).sum(dim=(0, 2, 3)), self.sync) / count
        with torch.no_grad():
            self.num_batches_tracked += 1
            weight = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), weight)
            self.running_var.lerp_((var * count / (count - 1)).to(self.running_var.dtype), weight)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        return (y * self.weight[None, :, None, None] + self.bias[None, :, None, None]).to(x.dtype)


class GatedConvBlock(nn.Module):
    """Conv3x3 -> PReLU -> BatchNorm -> FullGatedConv2d -> SE -> [Dropout] -> pool.

    With `stem=True` the first convolution has stride `pool` instead of a pooling layer after the
    block, so the costly gated convolution runs at the reduced resolution (a light first block).
    """

    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int], dropout: float = 0.0,
                 se_reduction: int = 8, use_se: bool = True, stem: bool = False):
        super().__init__()
        self.stem = stem
        self.stride = pool if stem else (1, 1)
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=self.stride, padding=1)
        self.act = nn.PReLU(c_out)
        self.norm = MaskedBatchNorm2d(c_out)
        self.gated = FullGatedConv2d(c_out)
        self.se = SqueezeExcite(c_out, se_reduction) if use_se else None
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.pool = nn.MaxPool2d(pool) if (not stem and pool != (1, 1)) else nn.Identity()
        self.reduction = pool  # total (height, width) reduction of this block

    def forward(self, x: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(x)
        widths = torch.div(widths, self.stride[1], rounding_mode="floor")
        mask = width_mask(widths, x.shape[-1])
        x = self.norm(self.act(x), mask) * mask
        x = self.gated(x) * mask
        if self.se is not None:
            x = self.se(x, mask)
        x = self.pool(self.dropout(x))
        if not self.stem:
            widths = torch.div(widths, self.reduction[1], rounding_mode="floor")
        return x, widths
