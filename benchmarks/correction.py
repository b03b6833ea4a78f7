"""CER/WER with and without the context-aware T5 corrector (spec 2.7, ablation "with and without T5"),
after greedy, beam and (with `--lm`) beam + LM decoding.

The recogniser reads the held-out `--val` lines once; each decoder's outputs (with their references)
are real training pairs, and `--corpus` text (TSV manifests or .txt) is corrupted with their confusion
statistics for synthetic pairs. A byte-level T5 is trained from scratch (or from `--init`), then the
recogniser reads `--test` once and every decoder's output is corrected: CER/WER before and after per
dataset, the gate's decisions, the ungated model's CER and the speeds.
Writes benchmarks/results/correction.{json,md}.

    python benchmarks/correction.py CKPT --val VAL... --test TEST... [--corpus TEXT...] [--lm LM.arpa]
        [--steps 20000] [--batch-size 64] [--d-model 256] [--layers 4] [--device auto] [--work runs/correction]

Needs `pip install 'htrjand[t5]'`. Meant for a GPU; on CPU use a small model and few steps.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from machine import write_results  # benchmarks/machine.py


def read(specs: list[str], limit: int):
    from htrjand.datasets import Problems, read_datasets

    problems = Problems()
    samples = read_datasets(specs, problems)
    if problems:
        print(problems.summary(), file=sys.stderr)
    return samples[:limit] if limit else samples


def to_markdown(result: dict) -> str:
    datasets = list(result["decoders"][0]["datasets"])
    head = "| decoder | " + " | ".join(f"{d} CER % | {d} +T5" for d in datasets) + \
        " | all CER % | all +T5 | +T5 ungated | WER % | WER % +T5 | accepted / rejected | T5 lines/s |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["decoders"]:
        c = r["corrected"]
        cells = [f"{100 * r['datasets'][d]['cer']:.2f} | {100 * c['datasets'][d]['cer']:.2f}" for d in datasets]
        rows.append(f"| {r['decoder']} | " + " | ".join(cells) + f" | {100 * r['cer']:.2f} | {100 * c['cer']:.2f} | {100 * c['ungated_cer']:.2f} "
                    f"| {100 * r['wer']:.2f} | {100 * c['wer']:.2f} | {c['accepted']} / {c['rejected']} "
                    f"| {c['lines_per_second']:.1f} |")
    t, gate = result["training"], result["decoders"][0]["corrected"]["gate"]
    v = t.get("validation") or {}
    return "\n".join([
        "# T5 correction: CER/WER with and without it, after each decoder", "",
        f"{result['date']}, device {result['device']}, torch {result['torch']}, transformers {result['transformers']}.",
        f"Recogniser `{result['checkpoint']}` ({result['test_lines']} test lines; the model ran "
        f"{result['test_model_seconds']:.0f} s). Corrector: {t['parameters']:,} parameters, {t['steps']} steps in "
        f"{result['train_seconds']:.0f} s on {t['real_pairs']} real pairs (the recogniser's outputs on the validation "
        f"data, every decoder) and {t['corpus_lines']} corpus lines with synthetic noise (noise rate "
        f"{t['noise_error_rate']:.3f} edits per character); charset from {t['charset_source']}."
        + (f" LM: `{result['lm']}` (alpha {result['alpha']:g}, beta {result['beta']:g})." if result.get("lm") else ""), "",
        *rows, "",
        f"Gate: at most max({gate['absolute']}, {gate['relative']} x length) edits per line; \"ungated\" keeps every "
        "model output.", "",
        f"Corrector validation ({t['val_source']}): CER {100 * v.get('cer_before', 0):.2f}% -> "
        f"{100 * v.get('cer_after', 0):.2f}% gated, {100 * v.get('cer_raw_model', 0):.2f}% ungated "
        f"({v.get('lines', 0)} lines)." if v else "No corrector validation lines.", "",
        f"Command: `{result['command']}`", ""])


def main() -> None:
    from htrjand.training.corrector import TrainSettings

    d = TrainSettings(output="")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="recogniser checkpoint")
    parser.add_argument("--val", nargs="+", required=True, help="held-out datasets: the real training pairs")
    parser.add_argument("--test", nargs="+", required=True, help="test datasets")
    parser.add_argument("--corpus", nargs="*", default=[], help="text corpora for synthetic pairs (.txt or TSV)")
    parser.add_argument("--lm", help="ARPA LM for the beam + LM row (weights from its LM.json or --alpha/--beta)")
    parser.add_argument("--alpha", type=float)
    parser.add_argument("--beta", type=float)
    parser.add_argument("--beam-width", type=int, default=16)
    parser.add_argument("--init", help="start from a local T5/ByT5/mT5 folder")
    parser.add_argument("--work", type=Path, default=Path("runs/correction"), help="reports and corrector folder")
    parser.add_argument("--lines", type=int, default=0, help="use only the first N lines of each split (0: all)")
    parser.add_argument("--recognition-batch", type=int, default=16)
    tuned = ("steps", "batch_size", "lr", "warmup", "d_model", "layers", "heads", "d_ff", "context_chars",
             "synthetic_ratio", "gate_abs", "gate_rel", "eval_every", "log_every", "seed", "precision")
    for name in tuned:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=type(getattr(d, name)),
                            default=getattr(d, name))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resume", action="store_true", help="continue the corrector's training in --work")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder for correction.{json,md}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # the corrector's training progress

    import torch
    import transformers

    from htrjand.correction import Corrector
    from htrjand.evaluation import compare, evaluate_decoders, format_comparison
    from htrjand.recognition import load
    from htrjand.training.corrector import train_corrector

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    recognizer = load(args.checkpoint, device=device)
    decoders = [recognizer.make_decoder("greedy"), recognizer.make_decoder("beam", beam_width=args.beam_width)]
    if args.lm:
        decoders.append(recognizer.make_decoder("beam", beam_width=args.beam_width, lm=args.lm, alpha=args.alpha,
                                                beta=args.beta))
    started = time.perf_counter()
    val_reports, _ = evaluate_decoders(recognizer, read(args.val, args.lines), decoders, args.recognition_batch)
    paths = []
    for i, report in enumerate(val_reports):
        paths.append(args.work / f"val_report_{i}.json")
        paths[-1].write_text(json.dumps(report, ensure_ascii=False), encoding="utf-8")
        print(f"validation, {report['decoder']}: CER {100 * report['overall']['cer']:.2f}%", flush=True)
    print(f"validation read in {time.perf_counter() - started:.0f} s", flush=True)

    corrector_dir = args.work / "corrector"
    if not args.resume:
        shutil.rmtree(corrector_dir, ignore_errors=True)
    settings = TrainSettings(output=str(corrector_dir), reports=[str(p) for p in paths], resume=args.resume,
                             corpora=args.corpus, init=args.init, recognizer=args.checkpoint, device=device,
                             **{k: getattr(args, k) for k in tuned})
    started = time.perf_counter()
    training = train_corrector(settings)
    train_seconds = time.perf_counter() - started

    test_samples = read(args.test, args.lines)
    corrector = Corrector.load(corrector_dir, device=device)
    table = compare(recognizer, test_samples, decoders, args.recognition_batch, corrector=corrector,
                    where=args.checkpoint)
    print(format_comparison(table))
    weights = decoders[-1].weights if args.lm else None
    result = {
        "date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(0) if device.startswith("cuda")
        else "cpu", "torch": torch.__version__, "transformers": transformers.__version__,
        "checkpoint": args.checkpoint, "val": args.val, "test": args.test, "corpus": args.corpus,
        "lm": args.lm, "alpha": weights[0] if weights else None, "beta": weights[1] if weights else None,
        "settings": vars(args) | {"work": str(args.work), "results": str(args.results)},
        "training": training, "train_seconds": train_seconds,
        "test_lines": table["lines"], "test_model_seconds": table["model_seconds"], "decoders": table["decoders"],
        "command": "python benchmarks/correction.py " + " ".join(sys.argv[1:]),
    }
    write_results(args.results, "correction", result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
