"""Fine-tuning: start a run from a trained checkpoint's weights, with its charset kept, extended by
the new training text's characters, or replaced, optionally with the CNN frozen, and optionally with
architecture options changed: options that keep every weight's shape (e.g. more light blocks),
narrower CNN channels (the most used channels are kept: training/prune.py; both give a faster model) or
a wider feed-forward (`ffn_mult`; the new units start silent, so the network first computes what it
did and training then uses the added capacity)."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..charset import Charset
from ..checkpoint import read_checkpoint
from ..config import ConfigError
from ..model import HTRNet, ModelConfig
from ..runtime import DEFAULT_MODEL
from .prune import channel_scores, narrow_state, narrowing, recalibrate_norms

log = logging.getLogger("htrjand")
MODES = ("extend", "replace", "keep")


@dataclass
class Init:
    """Weights to start from and the charset the new run trains."""

    path: Path
    model: ModelConfig
    preset: str
    old: Charset
    charset: Charset
    state_dict: dict[str, torch.Tensor]
    target: ModelConfig | None = field(default=None)  # the architecture trained (set by `architecture`)

    @classmethod
    def load(cls, init: str, mode: str, data_charset: Charset) -> "Init":
        if mode not in MODES:
            raise ConfigError(f"charset_mode {mode!r}: choose {', '.join(MODES)}")
        path = DEFAULT_MODEL if init == "bundled" else Path(init)
        ckpt = read_checkpoint(path)
        stored = ckpt["hyper_parameters"]
        old = Charset(stored["charset"])
        if mode == "keep":
            charset = old
        elif mode == "extend":
            charset = Charset(old.chars + [c for c in data_charset.chars if c not in set(old.chars)])
        else:
            charset = data_charset
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        init = cls(path, ModelConfig.from_dict(stored["model"]), stored.get("preset", ""), old, charset, state)
        added, dropped = init.added, init.dropped
        log.info("fine-tuning from %s: charset %s, %d characters (%d new: %s; %d dropped)", path, mode,
                 len(charset), len(added), "".join(added)[:60], len(dropped))
        return init

    @property
    def added(self) -> list[str]:
        """Characters of the new charset the initial model did not have."""
        known = set(self.old.chars)
        return [c for c in self.charset.chars if c not in known]

    @property
    def dropped(self) -> list[str]:
        """Characters of the initial model the new charset no longer has."""
        kept = set(self.charset.chars)
        return [c for c in self.old.chars if c not in kept]

    def architecture(self, options: dict) -> ModelConfig:
        """The checkpoint's architecture with `options` (model options the user gave) applied. Options
        may change what keeps every weight's shape, and narrow the CNN channels (pruning); anything
        else that changes a weight's shape is a `ConfigError` (the weights would not fit)."""
        changed = {k: v for k, v in options.items() if getattr(self.model, k) != v}
        model = self.target = replace(self.model, **changed)
        if not changed:
            return model
        pruned, widened = self.prunes, self.widens
        check = replace(model, channels=self.model.channels if pruned else model.channels,
                        ffn_mult=self.model.ffn_mult if widened else model.ffn_mult)
        try:
            with torch.device("meta"):
                shapes = {k: v.shape for k, v in HTRNet(check, 2).state_dict().items() if not k.startswith("head.")}
                HTRNet(model, 2)
        except ValueError as err:
            raise ConfigError(f"--init {self.path}: model options {', '.join(changed)}: {err}") from None
        ours = {k: v.shape for k, v in self.state_dict.items() if not k.startswith("head.")}
        misfits = sorted(k for k in shapes.keys() | ours.keys() if shapes.get(k) != ours.get(k))
        if misfits:
            raise ConfigError(
                f"--init {self.path}: model options {', '.join(f'{k}={v}' for k, v in changed.items())} do not "
                f"fit its weights ({misfits[0]}: {tuple(ours.get(misfits[0], ()))} in the checkpoint, "
                f"{tuple(shapes.get(misfits[0], ()))} needed); with --init only options that keep every weight's "
                "shape (e.g. light_blocks, dropout, window), narrower channels (as many blocks, none wider) "
                "and a larger ffn_mult can change: drop the others or train from scratch")
        log.info("fine-tuning with a changed architecture: %s%s%s",
                 ", ".join(f"{k} {getattr(self.model, k)} -> {v}" for k, v in changed.items()),
                 " (channels narrowed: each block keeps its most used channels)" if pruned else "",
                 " (feed-forward widened: the new units start with zero output weights)" if widened else "")
        return model

    @property
    def prunes(self) -> bool:
        return self.target is not None and narrowing(self.model, self.target)

    @property
    def widens(self) -> bool:
        return self.target is not None and widening(self.model, self.target)

    def apply(self, net: torch.nn.Module, probe: Iterable | None = None) -> None:
        """Load the weights into `net` (built for `self.charset`): output rows of characters the old
        model had are copied; new characters start from the mean of the old character rows, so they
        begin as plausible but undecided outputs rather than random ones. Narrowed channels are
        chosen by their use on `probe`'s `(images, widths)` batches (needed then)."""
        state = dict(self.state_dict)
        if self.prunes:
            if probe is None:
                raise ValueError("narrowing channels needs probe lines")
            batches = list(probe)
            old = HTRNet(self.model, len(self.old) + 1)
            old.load_state_dict(state)
            state = narrow_state(state, self.model, self.target, channel_scores(old, batches))
        weight, bias = state.pop("head.weight"), state.pop("head.bias")
        index = {c: i + 1 for i, c in enumerate(self.old.chars)}  # row 0 is the CTC blank
        rows = [0] + [index.get(c, -1) for c in self.charset.chars]
        mean_w, mean_b = weight[1:].mean(0), bias[1:].mean()
        state["head.weight"] = torch.stack([weight[r] if r >= 0 else mean_w for r in rows])
        state["head.bias"] = torch.stack([bias[r] if r >= 0 else mean_b for r in rows])
        if self.widens:
            state = widen_feed_forward(state, net.state_dict())
        net.load_state_dict(state)
        if self.prunes:
            recalibrate_norms(net, batches)

    def record(self) -> dict:
        return {"from": str(self.path), "old_charset_size": len(self.old), "added": self.added,
                "dropped": self.dropped,
                **({"narrowed_channels": [list(self.model.channels), list(self.target.channels)]}
                   if self.prunes else {}),
                **({"widened_ffn": [self.model.ffn_mult, self.target.ffn_mult]}
                   if self.widens else {})}


def widening(old: ModelConfig, new: ModelConfig) -> bool:
    """Whether `new` has a wider feed-forward than `old` (a larger `ffn_mult`)."""
    return new.ffn_mult > old.ffn_mult


def widen_feed_forward(state: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with each attention block's feed-forward grown to the hidden width of `fresh` (a newly
    initialised network's state): the trained units keep their weights, the new ones take `fresh`'s
    input weights and biases and zero output weights, so the block's output is unchanged until
    training gives them a say."""
    grown = dict(state)
    for key, old in state.items():
        new = fresh[key]
        if old.shape == new.shape or ".ffn." not in key:
            continue
        out = torch.zeros_like(new) if key.endswith(".ffn.3.weight") else new.clone()
        out[tuple(slice(0, n) for n in old.shape)] = old
        grown[key] = out
    return grown
