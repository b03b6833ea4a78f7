"""CER/WER with and without the context-aware T5 corrector (spec 2.7, ablation "with and without T5").

The recogniser reads the held-out `--val` lines; its outputs (with their references) are the real
training pairs, and `--corpus` text (TSV manifests or .txt) is corrupted with its confusion
statistics for synthetic pairs. A byte-level T5 is trained from scratch (or from `--init`), then the
recogniser reads `--test` and the corrector corrects it: CER/WER before and after, per dataset,
with the gate's decisions and the ungated model's CER. Writes benchmarks/results/correction.{json,md}.

    python benchmarks/correction.py CKPT --val VAL... --test TEST... [--corpus TEXT...]
        [--steps 20000] [--batch-size 64] [--d-model 256] [--layers 4] [--device auto] [--work runs/correction]

Needs `pip install 'htrjand[t5]'`. Meant for a GPU; on CPU use a small model and few steps.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path


def read(specs: list[str], limit: int):
    from htrjand.datasets import Problems, read_datasets

    problems = Problems()
    samples = read_datasets(specs, problems)
    if problems:
        print(problems.summary(), file=sys.stderr)
    return samples[:limit] if limit else samples


def ungated_cer(report: dict) -> dict:
    """Corpus CER/WER if every model output were kept (rejected candidates included)."""
    from htrjand.metrics import ErrorCounter

    counter = ErrorCounter()
    for line in report["lines"]:
        c = line["correction"]
        counter.add(line["reference"], c.get("candidate", line["corrected"]) if c["status"] == "rejected"
                    else line["corrected"], line["dataset"])
    return {"overall": counter.total.as_dict(),
            "datasets": {n: t.as_dict() for n, t in sorted(counter.per_dataset.items())}}


def to_markdown(result: dict) -> str:
    section, ungated = result["correction"], result["ungated"]
    rows = ["| dataset | lines | CER % | CER % T5 | CER % T5 ungated | WER % | WER % T5 |", "|---|---|---|---|---|---|---|"]
    for name in [*section["before"]["datasets"], "all"]:
        pick = (lambda part: part["overall"]) if name == "all" else (lambda part: part["datasets"][name])  # noqa: E731
        b, a, u = pick(section["before"]), pick(section["after"]), pick(ungated)
        rows.append(f"| {name} | {b['lines']} | {100 * b['cer']:.2f} | {100 * a['cer']:.2f} | {100 * u['cer']:.2f} "
                    f"| {100 * b['wer']:.2f} | {100 * a['wer']:.2f} |")
    t = result["training"]
    v = t.get("validation") or {}
    return "\n".join([
        "# T5 correction: CER/WER with and without it", "",
        f"{result['date']}, device {result['device']}, torch {result['torch']}, transformers {result['transformers']}.",
        f"Recogniser `{result['checkpoint']}` ({result['decoder']} decoding). Corrector: {t['parameters']:,} parameters, "
        f"{t['steps']} steps in {result['train_seconds']:.0f} s on {t['real_pairs']} real pairs (recogniser output on "
        f"the validation data) and {t['corpus_lines']} corpus lines with synthetic noise (noise rate "
        f"{t['noise_error_rate']:.3f} edits per character); charset from {t['charset_source']}.", "",
        *rows, "",
        f"Gate: at most max({section['gate']['absolute']}, {section['gate']['relative']} x length) edits per line; "
        f"{section['accepted']} corrections accepted, {section['rejected']} rejected, {section['unchanged']} lines "
        f"unchanged, {section['skipped']} skipped (empty or too long). \"Ungated\" keeps every model output.", "",
        f"Corrector validation ({t['val_source']}): CER {100 * v.get('cer_before', 0):.2f}% -> "
        f"{100 * v.get('cer_after', 0):.2f}% gated, {100 * v.get('cer_raw_model', 0):.2f}% ungated "
        f"({v.get('lines', 0)} lines)." if v else "No corrector validation lines.", "",
        f"Recognition {result['recognition_lines_per_second']:.1f} lines/s, correction "
        f"{result['correction_lines_per_second']:.1f} lines/s.", "",
        f"Command: `{result['command']}`", ""])


def main() -> None:
    from htrjand.training.corrector import TrainSettings

    d = TrainSettings(output="")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="recogniser checkpoint")
    parser.add_argument("--val", nargs="+", required=True, help="held-out datasets: the real training pairs")
    parser.add_argument("--test", nargs="+", required=True, help="test datasets")
    parser.add_argument("--corpus", nargs="*", default=[], help="text corpora for synthetic pairs (.txt or TSV)")
    parser.add_argument("--init", help="start from a local T5/ByT5/mT5 folder")
    parser.add_argument("--work", type=Path, default=Path("runs/correction"), help="reports and corrector folder")
    parser.add_argument("--lines", type=int, default=0, help="use only the first N lines of each split (0: all)")
    parser.add_argument("--recognition-batch", type=int, default=16)
    for name in ("steps", "batch_size", "lr", "d_model", "layers", "heads", "d_ff", "context_chars",
                 "synthetic_ratio", "gate_abs", "gate_rel", "eval_every", "seed"):
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=type(getattr(d, name)),
                            default=getattr(d, name))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--beams", type=int, default=1)
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder for correction.{json,md}")
    args = parser.parse_args()

    import torch
    import transformers

    from htrjand.correction import Corrector, correct_report, format_correction
    from htrjand.training.corrector import train_corrector
    from htrjand.evaluation import evaluate
    from htrjand.recognition import load

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    recognizer = load(args.checkpoint, device=device)
    started = time.perf_counter()
    val_report = evaluate(recognizer, read(args.val, args.lines), batch_size=args.recognition_batch)
    (args.work / "val_report.json").write_text(json.dumps(val_report, ensure_ascii=False), encoding="utf-8")
    print(f"validation read: CER {100 * val_report['overall']['cer']:.2f}% on {val_report['overall']['lines']} lines "
          f"({time.perf_counter() - started:.0f} s)", flush=True)

    corrector_dir = args.work / "corrector"
    shutil.rmtree(corrector_dir, ignore_errors=True)
    settings = TrainSettings(output=str(corrector_dir), reports=[str(args.work / "val_report.json")],
                             corpora=args.corpus, init=args.init, recognizer=args.checkpoint, device=device,
                             **{k: getattr(args, k) for k in ("steps", "batch_size", "lr", "d_model", "layers",
                                                              "heads", "d_ff", "context_chars", "synthetic_ratio",
                                                              "gate_abs", "gate_rel", "eval_every", "seed")})
    started = time.perf_counter()
    training = train_corrector(settings)
    train_seconds = time.perf_counter() - started

    test_samples = read(args.test, args.lines)
    test_report = evaluate(recognizer, test_samples, batch_size=args.recognition_batch)
    corrector = Corrector.load(corrector_dir, device=device)
    started = time.perf_counter()
    corrected = correct_report(corrector, test_report, charset=recognizer.charset.chars, where=args.checkpoint,
                               beams=args.beams)
    correction_seconds = time.perf_counter() - started
    (args.work / "test_corrected.json").write_text(json.dumps(corrected, ensure_ascii=False), encoding="utf-8")
    print(format_correction(corrected))

    result = {
        "date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(0) if device.startswith("cuda")
        else "cpu", "torch": torch.__version__, "transformers": transformers.__version__,
        "checkpoint": args.checkpoint, "decoder": test_report.get("decoder", "greedy"),
        "val": args.val, "test": args.test, "corpus": args.corpus, "settings": vars(args) | {"work": str(args.work),
                                                                                           "results": str(args.results)},
        "training": training, "train_seconds": train_seconds,
        "correction": corrected["correction"], "ungated": ungated_cer(corrected),
        "recognition_lines_per_second": test_report["lines_per_second"] or 0.0,
        "correction_lines_per_second": len(test_samples) / correction_seconds if correction_seconds else 0.0,
        "command": "python benchmarks/correction.py " + " ".join(sys.argv[1:]),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "correction.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    (args.results / "correction.md").write_text(to_markdown(result), encoding="utf-8")
    print(to_markdown(result))


if __name__ == "__main__":
    main()
