"""Evaluation: recognise labelled lines and report corpus CER/WER per dataset (spec 2.8)."""
from __future__ import annotations

import time
from collections.abc import Sequence

from .datasets import Sample
from .metrics import ErrorCounter
from .recognition import Recognizer


def evaluate(recognizer: Recognizer, samples: Sequence[Sample], batch_size: int = 16) -> dict:
    """Report with overall and per-dataset CER/WER, lines/s, and the worst lines."""
    started = time.perf_counter()
    results = recognizer.recognize(list(samples), batch_size=batch_size)
    seconds = time.perf_counter() - started
    counter = ErrorCounter()
    lines, unreadable = [], 0
    for s, r in zip(samples, results):
        if r.error:
            unreadable += 1  # an unreadable image counts as an empty hypothesis
        counter.add(s.text, r.text, s.dataset)
        lines.append({"image": r.source, "dataset": s.dataset, "reference": s.text,
                      "hypothesis": r.text, "confidence": round(r.confidence, 4), "error": r.error})
    return {
        "overall": counter.total.as_dict(),
        "datasets": {name: t.as_dict() for name, t in sorted(counter.per_dataset.items())},
        "unreadable_images": unreadable,
        "lines_per_second": len(samples) / seconds if seconds > 0 else None,
        "model": {"path": recognizer.meta.get("path", ""), "preset": recognizer.meta.get("preset", ""),
                  "parameters": recognizer.parameters},
        "lines": lines,
    }


def format_report(report: dict) -> str:
    """The report as a terminal table."""
    rows = [("dataset", "lines", "chars", "CER %", "WER %")]
    for name, t in report["datasets"].items():
        rows.append((name, str(t["lines"]), str(t["chars"]), f"{100 * t['cer']:.2f}", f"{100 * t['wer']:.2f}"))
    t = report["overall"]
    rows.append(("all", str(t["lines"]), str(t["chars"]), f"{100 * t['cer']:.2f}", f"{100 * t['wer']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines = [fmt(rows[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]]
    if report.get("unreadable_images"):
        lines.append(f"{report['unreadable_images']} images could not be read (counted as empty output)")
    if report.get("lines_per_second"):
        lines.append(f"{report['lines_per_second']:.1f} lines/s")
    return "\n".join(lines)
