"""Decoders side by side: CER/WER and decoding lines/s of greedy, beam, beam + LM (and + lexicon), and
the expected calibration error before and after temperature scaling.

The model runs once over the test lines; every decoder then decodes the same frame logits, so the
decoding speeds compare the decoders alone (the model's own time is reported separately). The
temperature is fitted on `--val` and ECE is measured on the test lines (held out from the fit).
An LM is given with `--lm`, or built here with `--lm-text` (a character LM, `--lm-order`).
Writes benchmarks/results/decoding.{json,md}.

    python benchmarks/decoding.py CKPT --data TEST... --val VAL... [--lm LM.arpa | --lm-text TEXT...] [--tune]
        [--lexicon WORDS.txt | --lexicon-text TEXT...] [--oov-penalty P] [--beam-width 16] [--flashlight]
        [--threads 2] [--lines 0]
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model, write_results  # benchmarks/machine.py


def _command(argv: list[str]) -> str:
    """The command line, without the (long) text of --note."""
    shown = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--note":
            arg = "..."
        shown.append(arg)
    return "python benchmarks/decoding.py " + shlex.join(shown)


def read(specs: list[str], limit: int):
    from htrjand.datasets import Problems, read_datasets

    samples = read_datasets(specs, Problems())
    return samples[:limit] if limit else samples


def to_markdown(report: dict) -> str:
    greedy = report["decoders"][0]["decoding_lines_per_second"]
    rows = ["| decoder | CER % | WER % | decoding lines/s | x greedy time | lines/s with the model |",
            "|---|---|---|---|---|---|"]
    for r in report["decoders"]:
        ratio = greedy / r["decoding_lines_per_second"] if r["decoding_lines_per_second"] else float("nan")
        rows.append(f"| {r['decoder']} | {100 * r['cer']:.2f} | {100 * r['wer']:.2f} | "
                    f"{r['decoding_lines_per_second']:.1f} | {ratio:.1f} | {r['lines_per_second']:.1f} |")
    cal = report["calibration"]
    lm = report.get("lm") or {}
    weights = f", alpha {lm['alpha']:g}, beta {lm['beta']:g}" if "alpha" in lm else ""
    if report.get("tuning"):
        weights += " (tuned on the validation lines over a 3 x 3 grid)"
    if lm.get("lexicon_words"):
        weights += f"; lexicon: the {lm['lexicon_words']} words of {', '.join(lm['lexicon_sources'])}"
    if not lm:
        lm_line = "LM: none"
    elif lm.get("built_here"):
        lm_line = (f"LM: {lm['unit']} {lm['order']}-gram ({lm['smoothing']}) built here from "
                   f"{', '.join(lm['sources'])}{weights}.")
    else:
        lm_line = f"LM: {lm['path']} ({lm.get('unit', '?')} {lm.get('order', '?')}-gram{weights})."
    return "\n".join([
        "# Decoding: greedy vs beam vs beam + LM", "",
        f"{report['date']}, {report['cpu']}, {report['threads']} threads, torch {report['torch']}; checkpoint "
        f"`{report['checkpoint']}` ({report['parameters']:,} parameters); {report['lines']} test lines from "
        f"{', '.join(report['data'])}.", "",
        *([report["note"], ""] if report.get("note") else []),
        *rows, "",
        f"The model itself took {report['model_seconds']:.1f} s for the {report['lines']} lines "
        f"({report['lines'] / report['model_seconds']:.1f} lines/s); decoding speeds exclude it. Each decoder ran "
        "once over the lines; on a busy shared machine repeated runs can differ by half or more, so read the "
        "speeds as rough ratios.", "",
        lm_line, "",
        f"Calibration: temperature {cal['temperature']:.3f} fitted on {cal['fit_characters']} characters of "
        f"{', '.join(report['val'])}; on the test lines ECE {100 * cal['ece_before']:.2f}% -> "
        f"{100 * cal['ece_after']:.2f}%, NLL {cal['nll_before']:.4f} -> {cal['nll_after']:.4f} "
        f"({cal['test_characters']} characters).", "",
        f"Command: `{report['command']}`", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", nargs="+", required=True, help="test datasets")
    parser.add_argument("--val", nargs="+", required=True, help="validation datasets (temperature fit)")
    parser.add_argument("--lm", help="ARPA LM (its LM.json weights are used when present)")
    parser.add_argument("--lm-text", nargs="+", help="build a character LM from these texts/datasets instead")
    parser.add_argument("--lm-order", type=int, default=6)
    parser.add_argument("--alpha", type=float)
    parser.add_argument("--beta", type=float)
    parser.add_argument("--lexicon", help="word list")
    parser.add_argument("--lexicon-text", nargs="+", help="make the word list from the words of these texts/datasets")
    parser.add_argument("--oov-penalty", type=float, help="cost of an out-of-lexicon word (default: the decoder's)")
    parser.add_argument("--tune", action="store_true", help="tune alpha/beta on --val first (small grid)")
    parser.add_argument("--flashlight", action="store_true",
                        help="add the C++ engine's beam + LM at this beam width and half of it (flashlight-text)")
    parser.add_argument("--beam-width", type=int, default=16)
    parser.add_argument("--lines", type=int, default=0, help="use only the first N test lines (0 = all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--note", default="", help="a sentence on the model and data, printed in the report")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    import torch

    from htrjand import load
    from htrjand.calibration import CalibrationSet, calibrate_recognizer, nll, reliability
    from htrjand.datasets import Problems
    from htrjand.evaluation import compare, tune_weights
    from htrjand.lm import build_lm, corpus_lines, lexicon_words, read_sidecar, write_sidecar

    torch.set_num_threads(args.threads)
    recognizer = load(args.checkpoint)
    test, val = read(args.data, args.lines), read(args.val, 0)
    lm_path, lm_info = args.lm, {}
    tmp = tempfile.TemporaryDirectory()
    if args.lm_text:
        lm, stats = build_lm(corpus_lines(args.lm_text, Problems()), args.lm_order, "char")
        lm_path = str(Path(tmp.name) / "benchmark.arpa")
        lm.write_arpa(lm_path)
        write_sidecar(lm_path, stats)
        lm_info = {**stats, "sources": args.lm_text, "built_here": True}
    if lm_path:
        lm_info = {**read_sidecar(lm_path), **lm_info, "path": args.lm or "(built here)"}
    lexicon = args.lexicon
    if args.lexicon_text:
        words, _ = lexicon_words(corpus_lines(args.lexicon_text, Problems()))
        lexicon = str(Path(tmp.name) / "lexicon.txt")
        Path(lexicon).write_text("\n".join(words) + "\n", encoding="utf-8")
        lm_info.update(lexicon_words=len(words), lexicon_sources=args.lexicon_text)
    options = {"beam_width": args.beam_width, "alpha": args.alpha, "beta": args.beta}
    tuning = None
    if lm_path and args.tune:
        decoder = recognizer.make_decoder("beam", lm=lm_path, beam_width=args.beam_width)
        tuning = tune_weights(recognizer, val, decoder, (0.25, 0.5, 1.0), (0.0, 1.0, 2.0), batch_size=args.batch)
        options.update(alpha=tuning["best"]["alpha"], beta=tuning["best"]["beta"])
        print(f"tuned on {len(val)} val lines: alpha {options['alpha']:g}, beta {options['beta']:g}", flush=True)
    decoders = [recognizer.make_decoder("greedy"), recognizer.make_decoder("beam", **options)]
    if lm_path:
        decoders.append(recognizer.make_decoder("beam", lm=lm_path, **options))
        lm_info.update(zip(("alpha", "beta"), decoders[-1].weights))
        wider = recognizer.make_decoder("beam", lm=lm_path, **options)
        wider.token_min_logp = -8.0  # the pruning threshold's effect on CER and speed
        wider.name = wider.describe()
        decoders.append(wider)
        if args.flashlight:
            for width in (args.beam_width, args.beam_width // 2):
                decoders.append(recognizer.make_decoder("beam", lm=lm_path, engine="flashlight",
                                                        **{**options, "beam_width": width}))
    if lexicon:
        lexicon_options = {"lexicon": lexicon,
                           **({"oov_penalty": args.oov_penalty} if args.oov_penalty is not None else {})}
        decoders.append(recognizer.make_decoder("beam", **lexicon_options, **options))
        if lm_path:
            decoders.append(recognizer.make_decoder("beam", lm=lm_path, **lexicon_options, **options))
    started = time.perf_counter()
    result = compare(recognizer, test, decoders, batch_size=args.batch)
    for row in result["decoders"]:
        print(f"{row['decoder']:60s} CER {100 * row['cer']:6.2f}%  {row['decoding_lines_per_second']:8.1f} lines/s",
              flush=True)

    fit = calibrate_recognizer(recognizer, val, args.batch)
    outputs = recognizer.forward(test, batch_size=args.batch)
    pairs = [(o.logits, s.text) for o, s in zip(outputs, test) if o.error is None]
    held_out = CalibrationSet.collect([p[0] for p in pairs], [p[1] for p in pairs], recognizer.charset.decode)
    before, after = held_out.confidences(1.0), held_out.confidences(fit["temperature"])
    calibration = {"temperature": fit["temperature"], "fit_characters": fit["characters"],
                   "test_characters": len(held_out), "ece_fit_before": fit["ece_before"],
                   "ece_fit_after": fit["ece_after"],
                   "ece_before": reliability(before, held_out.correct)["ece"],
                   "ece_after": reliability(after, held_out.correct)["ece"],
                   "nll_before": nll(before, held_out.correct), "nll_after": nll(after, held_out.correct)}
    report = {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "threads": args.threads,
              "torch": torch.__version__, "checkpoint": args.checkpoint, "parameters": recognizer.parameters,
              "data": args.data, "val": args.val, "lm": lm_info, "tuning": tuning, "calibration": calibration,
              "seconds": time.perf_counter() - started, **result,
              "note": args.note, "command": _command(sys.argv[1:])}
    write_results(args.out, "decoding", report, to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
