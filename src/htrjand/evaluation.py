"""Evaluation: recognise labelled lines and report corpus CER/WER per dataset (spec 2.8); compare
decoders on the same model outputs; tune the LM weights of beam search."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .datasets import Sample
from .decoding import Decoder, DecodingError
from .metrics import ErrorCounter, ErrorTotals
from .runtime import LineOutput, LineReader, Result, source_name

if TYPE_CHECKING:
    from .correction import Corrector


def evaluate(recognizer: LineReader, samples: Sequence[Sample], batch_size: int = 16,
             decoder: Decoder | None = None) -> dict:
    """Report with overall and per-dataset CER/WER, lines/s, and the worst lines."""
    started = time.perf_counter()
    results = recognizer.recognize(list(samples), batch_size=batch_size, decoder=decoder)
    return _report(recognizer, samples, results, time.perf_counter() - started, decoder or recognizer.decoder)


def evaluate_decoders(recognizer: LineReader, samples: Sequence[Sample], decoders: Sequence[Decoder],
                      batch_size: int = 16) -> tuple[list[dict], float]:
    """One `evaluate` report per decoder, the model run once; and the model's seconds. Each report's
    `decoding_seconds` is its decoder's share; its lines/s counts the model and that decoder."""
    started = time.perf_counter()
    outputs = recognizer.forward(list(samples), batch_size=batch_size)
    forward = time.perf_counter() - started
    reports = []
    for decoder in decoders:
        started = time.perf_counter()
        results = [recognizer.result(o, source_name(s), decoder) for s, o in zip(samples, outputs)]
        seconds = time.perf_counter() - started
        reports.append(_report(recognizer, samples, results, forward + seconds, decoder) | {"decoding_seconds": seconds})
    return reports, forward


def _report(recognizer: LineReader, samples: Sequence[Sample], results: Sequence[Result], seconds: float,
            decoder: Decoder) -> dict:
    counter = ErrorCounter()
    lines, unreadable = [], 0
    for s, r in zip(samples, results):
        if r.error:
            unreadable += 1  # an unreadable image counts as an empty hypothesis
        reference = recognizer.mapping.apply(s.text, s.dataset)
        counter.add(reference, r.text, s.dataset)
        lines.append({"image": r.source, "dataset": s.dataset, "group": s.group, "reference": reference,
                      "hypothesis": r.text, "confidence": round(r.confidence, 4), "scale": r.scale,
                      "error": r.error})
    kept = Counter(r.scale for r in results if not r.error)
    return {
        **counter.as_dict(),
        "unreadable_images": unreadable,
        "lines_per_second": len(samples) / seconds if seconds > 0 else None,
        "decoder": decoder.name,
        "widths_kept": {f"{f:g}": kept[f] for f in sorted(kept)} if len(recognizer.scales) > 1 else None,
        "model": {"path": recognizer.meta.get("path", ""), "preset": recognizer.meta.get("preset", ""),
                  "parameters": recognizer.parameters},
        "lines": lines,
    }


def format_report(report: dict) -> str:
    """The report as a terminal table: CER/WER and the character errors by kind per dataset, then
    the most frequent confusions over all datasets."""
    rows = [("dataset", "lines", "chars", "CER %", "WER %", "sub", "del", "ins")]
    for name, t in [*report["datasets"].items(), ("all", report["overall"])]:
        rows.append((name, str(t["lines"]), str(t["chars"]), f"{100 * t['cer']:.2f}", f"{100 * t['wer']:.2f}",
                     str(t["substitutions"]), str(t["deletions"]), str(t["insertions"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines = [fmt(rows[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]]
    if report["overall"].get("confusions"):
        lines.append("most frequent errors (reference -> output, count; '' = missing): " + ", ".join(
            f"{r!r}->{h!r} {n}" for r, h, n in report["overall"]["confusions"][:10]))
    if report.get("widths_kept"):
        total = sum(report["widths_kept"].values())
        lines.append("widths kept (multi-scale reading): " + ", ".join(
            f"{f}x {100 * n / total:.0f}%" for f, n in report["widths_kept"].items()))
    if report.get("unreadable_images"):
        lines.append(f"{report['unreadable_images']} images could not be read (counted as empty output)")
    if report.get("lines_per_second"):
        lines.append(f"{report['lines_per_second']:.1f} lines/s" + (f" ({report['decoder']})" if report.get("decoder") else ""))
    return "\n".join(lines)


def decode_all(recognizer: LineReader, samples: Sequence[Sample], outputs: list[LineOutput],
               decoder: Decoder) -> tuple[ErrorCounter, float]:
    """Errors of `decoder` on the model's `outputs` for labelled `samples` (references standardised with the
    model's character mapping) and the seconds decoding took: the model is not run again."""
    counter = ErrorCounter()
    started = time.perf_counter()
    for s, o in zip(samples, outputs):
        counter.add(recognizer.mapping.apply(s.text, s.dataset), recognizer.result(o, decoder=decoder).text,
                    s.dataset)
    return counter, time.perf_counter() - started


def compare(recognizer: LineReader, samples: Sequence[Sample], decoders: Sequence[Decoder],
            batch_size: int = 16, corrector: "Corrector | None" = None, where: str = "") -> dict:
    """CER/WER and decoding speed of several decoders on the same model outputs (the model runs once);
    with a T5 `corrector`, each decoder's output corrected too (`corrected` CER/WER beside each row)."""
    reports, forward = evaluate_decoders(recognizer, samples, decoders, batch_size)
    rows = []
    for report in reports:
        seconds = report["decoding_seconds"]
        row = {"decoder": report["decoder"], **report["overall"], "datasets": report["datasets"],
               "decoding_seconds": seconds,
               "decoding_lines_per_second": len(samples) / seconds if seconds > 0 else None,
               "lines_per_second": report["lines_per_second"]}
        if corrector is not None:
            row["corrected"] = _corrected(corrector, recognizer, report, where)
        rows.append(row)
    return {"lines": len(samples), "model_seconds": forward,
            "unreadable_images": reports[0]["unreadable_images"] if reports else 0,
            "model": {"path": recognizer.meta.get("path", ""), "preset": recognizer.meta.get("preset", ""),
                      "parameters": recognizer.parameters}, "decoders": rows}


def _corrected(corrector: "Corrector", recognizer: LineReader, report: dict, where: str) -> dict:
    """CER/WER of one decoder's report after the corrector, with the gate's decisions and its speed."""
    from .correction import correct_report

    started = time.perf_counter()
    corrected = correct_report(corrector, report, charset=recognizer.charset.chars, where=where)
    seconds = time.perf_counter() - started
    ungated = ErrorCounter()  # as if the gate kept every model output
    for line in corrected["lines"]:
        outcome = line["correction"]
        ungated.add(line["reference"], outcome.get("candidate", line["corrected"]) if outcome["status"] == "rejected"
                    else line["corrected"], line["dataset"])
    section = corrected["correction"]
    return {**section["after"]["overall"], "datasets": section["after"]["datasets"],
            **{k: section[k] for k in ("accepted", "rejected", "unchanged", "skipped")},
            "ungated_cer": ungated.total.as_dict()["cer"], "gate": section["gate"],
            "lines_per_second": len(report["lines"]) / seconds if seconds > 0 else None}


def format_comparison(report: dict) -> str:
    corrected = any("corrected" in r for r in report["decoders"])
    rows = [("decoder", "CER %", "WER %", "decoding lines/s", "total lines/s")
            + (("CER % +T5", "WER % +T5", "T5 lines/s") if corrected else ())]
    for r in report["decoders"]:
        row = (r["decoder"], f"{100 * r['cer']:.2f}", f"{100 * r['wer']:.2f}",
               f"{r['decoding_lines_per_second']:.1f}" if r["decoding_lines_per_second"] else "-",
               f"{r['lines_per_second']:.1f}" if r["lines_per_second"] else "-")
        if corrected:
            c = r["corrected"]
            row += (f"{100 * c['cer']:.2f}", f"{100 * c['wer']:.2f}",
                    f"{c['lines_per_second']:.1f}" if c["lines_per_second"] else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines = [fmt(rows[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]]
    lines.append(f"{report['lines']} lines; the model itself took {report['model_seconds']:.1f} s")
    return "\n".join(lines)


DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
DEFAULT_BETAS = (-1.0, 0.0, 1.0, 2.0, 3.0)


def tune_weights(recognizer: LineReader, samples: Sequence[Sample], decoder: Decoder,
                 alphas: Sequence[float] = DEFAULT_ALPHAS, betas: Sequence[float] = DEFAULT_BETAS,
                 batch_size: int = 16, progress=None) -> dict:
    """Grid search of the LM weight alpha and the insertion bonus beta of a beam `decoder` with an
    LM: CER for every setting (ties broken by WER), the best setting, and greedy CER for reference."""
    if decoder.weights is None:
        raise DecodingError("tuning needs a beam decoder with a language model (--lm)")
    outputs = recognizer.forward(list(samples), batch_size=batch_size)
    greedy, _ = decode_all(recognizer, samples, outputs, recognizer.decoder)
    grid: list[dict] = []
    for alpha in alphas:
        for beta in betas:
            decoder.set_weights(alpha, beta)
            counter, seconds = decode_all(recognizer, samples, outputs, decoder)
            t: ErrorTotals = counter.total
            grid.append({"alpha": float(alpha), "beta": float(beta), "cer": t.cer, "wer": t.wer,
                         "seconds": seconds})
            if progress:
                progress(grid[-1])
    best = min(grid, key=lambda g: (g["cer"], g["wer"]))
    decoder.set_weights(best["alpha"], best["beta"])
    return {"lines": len(samples), "greedy": {"cer": greedy.total.cer, "wer": greedy.total.wer},
            "grid": grid, "best": best, "decoder": decoder.name}
