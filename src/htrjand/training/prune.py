"""Narrowing a trained network (structured pruning): a checkpoint's CNN blocks keep their most used
channels, so that `--init CKPT --channels ...` starts a smaller, faster model from trained weights
instead of from scratch; a few epochs of training (or distillation) then recover the accuracy.

Each CNN block has two channel sets of its width: the inner one (first convolution, PReLU,
BatchNorm, input of the gated convolution) and the outer one (gated output, SE, what the next block
or the projection reads). A channel's score is how strongly it is active on real lines (mean |x|)
times the norm of the weights that read it; the highest-scoring channels of each set are kept.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from ..model import HTRNet, ModelConfig


def narrowing(old: ModelConfig, new: ModelConfig) -> bool:
    """Whether `new` differs from `old` in narrower CNN channels (and otherwise only in options that
    keep weight shapes, which the caller checks with `channels` restored)."""
    return (len(new.channels) == len(old.channels) and new.channels != old.channels
            and all(0 < n <= o for n, o in zip(new.channels, old.channels)))


def probe_batches(dataset, lines: int = 512, batch_size: int = 32, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """Padded `(images, widths)` batches of up to `lines` random lines of a `LineDataset` (sorted by
    width, so batches carry little padding)."""
    from .data import Collate

    order = sorted(random.Random(seed).sample(range(len(dataset)), min(lines, len(dataset))),
                   key=lambda i: dataset.widths[i])
    collate = Collate(dataset.stride)
    for start in range(0, len(order), batch_size):
        batch = collate([dataset[i] for i in order[start:start + batch_size]])
        if "images" in batch:
            yield batch["images"], batch["widths"]


@contextmanager
def _evaluating(net: HTRNet) -> Iterator[None]:
    """`net` in eval mode for the block, its previous mode restored afterwards."""
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def _run_cnn(net: HTRNet, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
    """Run the CNN over `batches` (an empty probe is an error)."""
    seen = 0
    for images, widths in batches:
        net.cnn_features(images, widths)
        seen += len(images)
    if not seen:
        raise ValueError("no lines to measure channel use on")


@torch.no_grad()
def channel_scores(net: HTRNet, batches: Iterable[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    """`(inner, outer)` channel scores of every CNN block of a trained `net` over `batches`."""
    n = len(net.cnn)
    inner = [torch.zeros(b.norm.num_features) for b in net.cnn]
    outer = [torch.zeros(b.norm.num_features) for b in net.cnn]

    def add(total: Tensor, x: Tensor) -> None:  # a hook that returns None leaves the forward pass alone
        total.add_(x.abs().sum(dim=(0, 2, 3)))

    hooks = []
    for i, block in enumerate(net.cnn):
        hooks.append(block.gated.register_forward_pre_hook(lambda _m, args, i=i: add(inner[i], args[0])))
        hooks.append(block.register_forward_hook(lambda _m, _args, out, i=i: add(outer[i], out[0])))
    try:
        with _evaluating(net):
            _run_cnn(net, batches)
    finally:
        for h in hooks:
            h.remove()
    scores = []
    for i, block in enumerate(net.cnn):
        reads_inner = torch.linalg.vector_norm(block.gated.conv.weight, dim=(0, 2, 3))
        if i + 1 < n:
            reads_outer = torch.linalg.vector_norm(net.cnn[i + 1].conv.weight, dim=(0, 2, 3))
        else:  # the projection reads channel c at columns c * H' ... c * H' + H' - 1
            w = net.project.weight
            reads_outer = torch.linalg.vector_norm(w.reshape(w.shape[0], -1, net.feature_height), dim=(0, 2))
        scores.append((inner[i] * reads_inner, outer[i] * reads_outer))
    return scores


def _top(score: Tensor, k: int) -> Tensor:
    return score.topk(k).indices.sort().values


def narrow_state(state: dict[str, Tensor], old: ModelConfig, new: ModelConfig,
                 scores: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """`state` (an `HTRNet` state dict of architecture `old`) cut to `new`'s CNN channels, keeping
    each set's highest-scoring channels; every other weight is unchanged."""
    state = dict(state)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in HTRNet(new, 2).state_dict().items()}
    previous = None  # outer channels kept by the block before (the input of this block)
    for i, (width, (inner_score, outer_score)) in enumerate(zip(new.channels, scores)):
        keep_in, keep_out = _top(inner_score, width), _top(outer_score, width)
        p, c = f"cnn.{i}.", old.channels[i]
        w = state[p + "conv.weight"][keep_in]
        state[p + "conv.weight"] = w[:, previous] if previous is not None else w
        state[p + "conv.bias"] = state[p + "conv.bias"][keep_in]
        state[p + "act.weight"] = state[p + "act.weight"][keep_in]
        for name in ("weight", "bias", "running_mean", "running_var"):
            state[p + "norm." + name] = state[p + "norm." + name][keep_in]
        rows = torch.cat([keep_out, keep_out + c])  # the linear and the gate half of each output channel
        state[p + "gated.conv.weight"] = state[p + "gated.conv.weight"][rows][:, keep_in]
        state[p + "gated.conv.bias"] = state[p + "gated.conv.bias"][rows]
        if p + "se.fc1.weight" in state:
            fc1, fc2 = state[p + "se.fc1.weight"][:, keep_out], state[p + "se.fc2.weight"][keep_out]
            use = torch.linalg.vector_norm(fc1, dim=1) * torch.linalg.vector_norm(fc2, dim=0)
            hidden = _top(use, shapes[p + "se.fc1.weight"][0])
            state[p + "se.fc1.weight"], state[p + "se.fc1.bias"] = fc1[hidden], state[p + "se.fc1.bias"][hidden]
            state[p + "se.fc2.weight"] = fc2[:, hidden]
            state[p + "se.fc2.bias"] = state[p + "se.fc2.bias"][keep_out]
        previous = keep_out
    height = shapes["project.weight"][1] // new.channels[-1]
    columns = (previous[:, None] * height + torch.arange(height)[None, :]).reshape(-1)
    state["project.weight"] = state["project.weight"][:, columns]
    misfits = [k for k, s in shapes.items() if not k.startswith("head.") and state[k].shape != s]
    if misfits:  # a bug here, not a user error
        raise AssertionError(f"narrowed weights do not fit: {misfits}")
    return state


@torch.no_grad()
def recalibrate_norms(net: HTRNet, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
    """Re-estimate the CNN's BatchNorm statistics on `batches` (a narrowed block's inputs have moved)."""
    norms = [b.norm for b in net.cnn]
    momenta = [n.momentum for n in norms]
    with _evaluating(net):
        for n in norms:
            n.reset_running_stats()
            n.momentum = None  # a cumulative average over the batches
            n.train()
        try:
            _run_cnn(net, batches)
        finally:
            for n, m in zip(norms, momenta):
                n.momentum = m
