"""Sequence layers (spec 2.3): MHSA, Proxima Attention and the gated Combined Attention block.

Sequences are `[B, T, D]` with a boolean padding mask `[B, T]` (True = real frame).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_encoding(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Standard sine/cosine positional encoding `[length, dim]`."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    enc = torch.zeros(length, dim, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return enc


def key_padding_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive `[B, 1, 1, T]` bias: 0 for real keys, a large negative value for padding."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, torch.finfo(dtype).min / 2)[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention; subclasses add a bias to the logits."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def logit_bias(self, length: int, x: Tensor) -> Tensor | None:
        return None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        bias = key_padding_bias(mask, q.dtype)
        extra = self.logit_bias(t, x)
        if extra is not None:
            bias = bias + extra.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class ProximaAttention(MultiHeadAttention):
    """Locality-biased attention: logits minus `|i-j|^2 / (2 sigma_h^2)`, one learnable sigma per head.

    Sigmas start spread over `sigma_init` frames (about one to two characters at width stride 8)
    and stay positive through softplus. `window` adds a hard band `|i-j| <= window`.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0,
                 sigma_init: tuple[float, float] = (2.0, 8.0), window: int | None = None):
        super().__init__(dim, heads, dropout)
        sigmas = torch.linspace(sigma_init[0], sigma_init[1], heads) if heads > 1 else torch.tensor([sigma_init[0]])
        # inverse softplus so that softplus(raw) == sigma at start
        self.raw_sigma = nn.Parameter(torch.log(torch.expm1(sigmas)))
        self.window = window

    @property
    def sigma(self) -> Tensor:
        return F.softplus(self.raw_sigma) + 1e-3

    def logit_bias(self, length: int, x: Tensor) -> Tensor:
        pos = torch.arange(length, device=x.device, dtype=torch.float32)
        dist2 = (pos[:, None] - pos[None, :]) ** 2
        bias = -dist2[None] / (2 * self.sigma[:, None, None] ** 2)
        if self.window is not None:
            bias = bias.masked_fill(dist2[None] > self.window ** 2, torch.finfo(torch.float32).min / 2)
        return bias[None]  # [1, H, T, T]


class CombinedAttention(nn.Module):
    """MHSA and Proxima fused by `fusion`: 'gate' (elementwise sigmoid gate), 'scalar' or 'concat'.

    `kind` may also be 'mhsa' or 'proxima' alone (ablations).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, kind: str = "combined",
                 fusion: str = "gate", sigma_init: tuple[float, float] = (2.0, 8.0), window: int | None = None):
        super().__init__()
        if kind not in ("combined", "mhsa", "proxima"):
            raise ValueError(f"unknown attention kind {kind!r}")
        if fusion not in ("gate", "scalar", "concat"):
            raise ValueError(f"unknown fusion {fusion!r}")
        self.kind, self.fusion = kind, fusion
        self.mhsa = MultiHeadAttention(dim, heads, dropout) if kind in ("combined", "mhsa") else None
        self.proxima = ProximaAttention(dim, heads, dropout, sigma_init, window) if kind in ("combined", "proxima") else None
        if kind == "combined":
            if fusion == "gate":
                self.gate = nn.Linear(2 * dim, dim)
            elif fusion == "scalar":
                self.mix = nn.Parameter(torch.zeros(1))
            else:
                self.proj = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.proxima is None:
            return self.mhsa(x, mask)
        if self.mhsa is None:
            return self.proxima(x, mask)
        m, p = self.mhsa(x, mask), self.proxima(x, mask)
        if self.fusion == "gate":
            g = torch.sigmoid(self.gate(torch.cat([m, p], dim=-1)))
            return g * m + (1 - g) * p
        if self.fusion == "scalar":
            g = torch.sigmoid(self.mix)
            return g * m + (1 - g) * p
        return self.proj(torch.cat([m, p], dim=-1))


class CombinedAttentionBlock(nn.Module):
    """Pre-LayerNorm block: residual fused attention, then residual 2x GELU feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1, ffn_mult: int = 2, **attention_kwargs):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CombinedAttention(dim, heads, dropout, **attention_kwargs)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.ffn(self.norm2(x)))
