"""CTC decoding: greedy best path with per-character and per-line confidences."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .charset import BLANK, Charset


@dataclass
class Decoded:
    """A decoded line: its text, line confidence, and per-character confidences and frame spans."""

    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    char_frames: list[tuple[int, int]] = field(default_factory=list)  # [start, end) output frames


def greedy_decode(logits: Tensor, lengths: Tensor, charset: Charset) -> list[Decoded]:
    """Best-path decoding of `[B, T, C]` logits.

    A character's confidence is the highest posterior among the frames that emitted it; the line
    confidence is the mean over characters (for an empty line, the mean blank posterior).
    """
    probs = logits.detach().float().softmax(-1)
    best_p, best = probs.max(-1)
    best, best_p, lengths = best.cpu().tolist(), best_p.cpu().tolist(), lengths.cpu().tolist()
    out = []
    for frames, conf, n in zip(best, best_p, lengths):
        labels: list[int] = []
        confs: list[float] = []
        spans: list[tuple[int, int]] = []
        prev = BLANK
        for t in range(n):
            f = frames[t]
            if f != BLANK and f != prev:
                labels.append(f)
                confs.append(conf[t])
                spans.append((t, t + 1))
            elif f != BLANK:  # repeat of the same character: extend it
                confs[-1] = max(confs[-1], conf[t])
                spans[-1] = (spans[-1][0], t + 1)
            prev = f
        if confs:
            line_conf = sum(confs) / len(confs)
        else:
            line_conf = sum(conf[:n]) / max(n, 1)
        out.append(Decoded(charset.decode(labels), line_conf, confs, spans))
    return out
