"""Calibration on validation lines (spec 2.7): the blank penalty of decoding, then one temperature T.

Blank penalty: the value of a grid (subtracted from the blank's logit before greedy decoding) with
the lowest corpus CER on the lines; 0 stays unless another is strictly better. It changes the text
of decoders without a language model (docs/decoding.md).

Target: each character of the greedy output is aligned to the reference with a Levenshtein
alignment (rapidfuzz editops); it is correct when the alignment keeps it unchanged (not
substituted, not inserted). Its confidence is the highest posterior of its label over the frames
that emitted it, computed with `softmax(logits / T)`. T minimises the binary negative
log-likelihood of correctness given confidence; it never changes the decoded text.
Reported: expected calibration error (ECE, equal-width bins) before (T = 1) and after, and a
reliability diagram drawn with Pillow.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

from .charset import normalize_text
from .decoding import Decoder, DecodingError, greedy_path, log_softmax, penalize_blank

T_MIN, T_MAX = 0.05, 20.0
BLANK_PENALTIES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # the default grid of `htrjand calibrate`
EPS = 1e-7


class CalibrationError(DecodingError):
    """Calibration data that cannot fit a temperature (e.g. no recognised characters)."""


def char_correctness(hypothesis: str, reference: str) -> list[bool]:
    """For each character of `hypothesis`: does a minimal edit alignment keep it unchanged?"""
    correct = [True] * len(hypothesis)
    for op in Levenshtein.editops(hypothesis, reference):
        if op.tag in ("replace", "delete"):  # the hypothesis character is wrong or extra
            correct[op.src_pos] = False
    return correct


@dataclass
class CalibrationSet:
    """The frames of every greedy character: `rows[k]` are logits of a frame of character
    `owner[k]` with label `labels[k]`; `correct[i]` says whether character i is right."""

    rows: np.ndarray  # [F, C] float32
    labels: np.ndarray  # [F]
    owner: np.ndarray  # [F] character index, non-decreasing
    correct: np.ndarray  # [N] bool

    def __len__(self) -> int:
        return len(self.correct)

    @classmethod
    def collect(cls, logits: Sequence[np.ndarray], references: Sequence[str],
                decode: Callable[[list[int]], str], blank_penalty: float = 0.0) -> "CalibrationSet":
        """From per-line `[T, C]` logits, reference texts and `decode` (labels -> text, `Charset.decode`);
        the characters are those greedy decoding with `blank_penalty` reads."""
        rows, labels, owner, correct = [], [], [], []
        n = 0
        for z, ref in zip(logits, references):
            lab, spans = greedy_path(log_softmax(penalize_blank(np.asarray(z, dtype=np.float64), blank_penalty)))
            if not lab:
                continue
            text = decode(lab)
            correct += char_correctness(text, normalize_text(ref))
            for label, (t0, t1) in zip(lab, spans):
                rows.append(np.asarray(z[t0:t1], dtype=np.float32))
                labels += [label] * (t1 - t0)
                owner += [n] * (t1 - t0)
                n += 1
        if not n:
            raise CalibrationError("no recognised characters to calibrate on (empty outputs or no lines)")
        return cls(np.concatenate(rows), np.asarray(labels), np.asarray(owner), np.asarray(correct, dtype=bool))

    def confidences(self, temperature: float = 1.0) -> np.ndarray:
        """Per character: the highest tempered posterior of its label over its frames."""
        z = self.rows.astype(np.float64) / temperature
        z -= z.max(1, keepdims=True)
        p = np.exp(z[np.arange(len(z)), self.labels]) / np.exp(z).sum(1)
        starts = np.flatnonzero(np.r_[True, self.owner[1:] != self.owner[:-1]])
        return np.maximum.reduceat(p, starts)


def nll(confidence: np.ndarray, correct: np.ndarray) -> float:
    p = np.clip(confidence, EPS, 1 - EPS)
    return float(-np.mean(np.where(correct, np.log(p), np.log1p(-p))))


def fit_temperature(data: CalibrationSet) -> float:
    """T in [0.05, 20] minimising the NLL: a log-spaced grid, then golden-section search around its best."""
    objective = lambda log_t: nll(data.confidences(math.exp(log_t)), data.correct)  # noqa: E731
    grid = np.linspace(math.log(T_MIN), math.log(T_MAX), 41)
    values = [objective(g) for g in grid]
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = objective(a), objective(b)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = objective(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = objective(b)
    best = (lo + hi) / 2
    return math.exp(best if objective(best) <= values[i] else grid[i])


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> dict:
    """Equal-width bins: count, mean confidence and accuracy of each; ECE = sum n_b/N |acc_b - conf_b|."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf = np.bincount(index, confidence, minlength=bins) / np.maximum(counts, 1)
    acc = np.bincount(index, correct.astype(float), minlength=bins) / np.maximum(counts, 1)
    ece = float(np.sum(counts / max(len(confidence), 1) * np.abs(acc - conf)))
    return {"ece": ece, "bins": bins, "counts": counts.tolist(), "confidence": conf.round(4).tolist(),
            "accuracy": acc.round(4).tolist(), "mean_confidence": float(confidence.mean()),
            "accuracy_overall": float(correct.mean())}


def calibrate(data: CalibrationSet, bins: int = 15) -> dict:
    """Fit T and report NLL and reliability before (T = 1) and after."""
    temperature = fit_temperature(data)
    before, after = data.confidences(1.0), data.confidences(temperature)
    return {"temperature": temperature, "characters": len(data),
            "target": "per-character correctness of greedy output (rapidfuzz editops alignment to the reference)",
            "nll_before": nll(before, data.correct), "nll_after": nll(after, data.correct),
            "ece_before": reliability(before, data.correct, bins)["ece"],
            "ece_after": reliability(after, data.correct, bins)["ece"],
            "before": reliability(before, data.correct, bins), "after": reliability(after, data.correct, bins)}


def fit_blank_penalty(recognizer, samples: Sequence, outputs: Sequence,
                      penalties: Sequence[float] = BLANK_PENALTIES) -> dict:
    """Greedy corpus CER on the lines for each penalty; the best (lowest CER, then the smaller penalty),
    0 when no penalty beats none (`recognizer.mapping` standardises the references, as `evaluate` does)."""
    from .evaluation import decode_all

    grid = []
    for penalty in sorted(set(float(p) for p in penalties) | {0.0}):
        counter, _ = decode_all(recognizer, samples, outputs, Decoder(recognizer.charset, blank_penalty=penalty))
        grid.append({"blank_penalty": penalty, "cer": counter.total.cer, "wer": counter.total.wer})
    best = min(grid, key=lambda g: (g["cer"], g["blank_penalty"]))
    return {"blank_penalty": best["blank_penalty"], "cer": best["cer"],
            "cer_without": next(g["cer"] for g in grid if g["blank_penalty"] == 0.0), "grid": grid}


def calibrate_recognizer(recognizer, samples: Sequence, batch_size: int = 16, bins: int = 15,
                         penalties: Sequence[float] = BLANK_PENALTIES) -> dict:
    """Run a `LineReader` on labelled samples, fit its blank penalty over `penalties` (only 0: none),
    then its temperature on the text greedy decoding reads with it (the stored values are ignored)."""
    samples = list(samples)
    outputs = recognizer.forward(samples, batch_size=batch_size)
    kept = [(o, s) for o, s in zip(outputs, samples) if o.error is None]
    blank = fit_blank_penalty(recognizer, [s for _, s in kept], [o for o, _ in kept], penalties)
    references = [recognizer.mapping.apply(s.text, s.dataset) for _, s in kept]  # standardised as `evaluate` does
    data = CalibrationSet.collect([o.logits for o, _ in kept], references, recognizer.charset.decode,
                                  blank["blank_penalty"])
    return {**calibrate(data, bins), "lines": len(kept), "blank_penalty": blank["blank_penalty"],
            "blank_penalty_fit": blank, "tta": recognizer.tta, "scales": list(recognizer.scales)}


def reliability_diagram(report: dict, path: str | Path) -> Path:
    """Two panels (before / after): accuracy per confidence bin against the diagonal, with the
    share of characters per bin as a strip along the bottom. Written as PNG with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    size, margin, gap = 360, 48, 30
    image = Image.new("RGB", (2 * (size + margin) + gap + margin, size + 2 * margin + 40), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    panels = (("before (T = 1)", report["before"]), (f"after (T = {report['temperature']:.2f})", report["after"]))
    for k, (title, rel) in enumerate(panels):
        x0, y0 = margin + k * (size + margin + gap), margin
        x1, y1 = x0 + size, y0 + size
        draw.rectangle((x0, y0, x1, y1), outline="black")
        for v in (0.25, 0.5, 0.75):
            draw.line((x0 + v * size, y0, x0 + v * size, y1), fill=(225, 225, 225))
            draw.line((x0, y1 - v * size, x1, y1 - v * size), fill=(225, 225, 225))
        n, total = rel["bins"], max(sum(rel["counts"]), 1)
        for b in range(n):
            if not rel["counts"][b]:
                continue
            left, right = x0 + b * size / n + 1, x0 + (b + 1) * size / n - 1
            acc, conf = rel["accuracy"][b], rel["confidence"][b]
            draw.rectangle((left, y1 - acc * size, right, y1), fill=(70, 110, 200))
            draw.rectangle((left, y1 - conf * size, right, y1), outline=(220, 60, 60))  # gap to the mean confidence
            share = rel["counts"][b] / total
            draw.rectangle((left, y1 + 4, right, y1 + 4 + 12 * share ** 0.5), fill=(120, 120, 120))
        draw.line((x0, y1, x1, y0), fill=(60, 60, 60), width=1)
        draw.text((x0, y0 - 34), f"{title}", fill="black", font=font)
        draw.text((x0, y0 - 18), f"ECE {100 * rel['ece']:.2f}%  accuracy {100 * rel['accuracy_overall']:.1f}%  "
                  f"mean confidence {100 * rel['mean_confidence']:.1f}%", fill="black", font=font)
        for v in (0.0, 0.5, 1.0):
            draw.text((x0 - 26, y1 - v * size - 7), f"{v:g}", fill="black", font=font)
            draw.text((x0 + v * size - 8, y1 + 20), f"{v:g}", fill="black", font=font)
        draw.text((x0 + size / 2 - 70, y1 + 36), "confidence (x) / accuracy (y)", fill="black", font=font)
    draw.text((margin, size + 2 * margin + 22), "blue: accuracy per bin; red outline: mean confidence; grey strip: "
              "share of characters", fill=(80, 80, 80), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
