"""Checkpoints side by side on the same test lines: CER/WER per dataset, parameters and CPU lines/s.

For deciding whether a candidate beats the bundled model, and by how much it is faster: every model
reads the same lines in one process (`Recognizer.recognize`: image decoding, preprocessing, network,
greedy decoding), the best of `--repeats` passes with the models taking turns, so the speed ratio holds
on a busy machine even where absolute lines/s do not. Writes OUT/NAME.{json,md}.

    python benchmarks/compare.py bundled=src/htrjand/models/student.ckpt candidate=runs/x/best.ckpt \\
        --test ../shared/data/copiste/test.tsv ../shared/data/hooker/test.tsv [--name compare]
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from machine import cpu_model, speed, write_results  # benchmarks/machine.py


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="NAME=CKPT", help="checkpoints to compare, each with a label")
    p.add_argument("--test", nargs="+", required=True, help="test dataset specs")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per model")
    p.add_argument("--name", default="compare", help="result file name")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    for item in args.models:
        if "=" not in item:
            p.error(f"{item!r}: give each model as NAME=CKPT")
    names = [m.split("=", 1)[0] for m in args.models]
    if len(set(names)) < len(names):
        p.error(f"each model needs its own NAME (got {', '.join(names)})")
    return args


def to_markdown(report: dict) -> str:
    names = list(report["models"])
    datasets = list(next(iter(report["models"].values()))["datasets"])
    first = names[0]
    lines = [f"# {', '.join(names)} side by side\n",
             f"{report['date']}, {report['machine']}, {report['threads']} threads, torch {report['torch']}; "
             f"{report['test_lines']} test lines ({', '.join(report['test'])}), batch {report['batch_size']}.\n",
             "| model | parameters | " + " | ".join(f"{d} CER / WER %" for d in datasets)
             + " | all CER % | lines/s | speed vs " + first + " |",
             "|---|---|" + "---|" * len(datasets) + "---|---|---|"]
    for name, m in report["models"].items():
        per = " | ".join(f"{100 * m['datasets'][d]['cer']:.2f} / {100 * m['datasets'][d]['wer']:.2f}" for d in datasets)
        lines.append(f"| {name} | {m['parameters']:,} | {per} | {100 * m['overall']['cer']:.2f} | "
                     f"{m['lines_per_second']:.1f} | {m['lines_per_second'] / report['models'][first]['lines_per_second']:.2f}x |")
    lines += ["", f"Lines/s: `Recognizer.recognize` (decoding, preprocessing, network, greedy decoding), best of "
                  f"{report['repeats']} passes per model, models alternating in one process.", "",
              f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from htrjand.checkpoint import CheckpointError
    from htrjand.datasets import DataError, Problems, read_datasets
    from htrjand.evaluation import evaluate
    from htrjand.recognition import load

    torch.set_num_threads(args.threads)
    try:
        recognizers = {name: load(path) for name, path in (m.split("=", 1) for m in args.models)}
        problems = Problems()
        samples = read_datasets(args.test, problems)
    except (CheckpointError, DataError) as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 2
    if problems:
        print(problems.summary(), file=sys.stderr)
    models = {}
    for name, r in recognizers.items():
        report = evaluate(r, samples, batch_size=args.batch_size)
        models[name] = {"checkpoint": r.meta.get("path"), "parameters": r.parameters,
                        "model": r.meta.get("model"), "overall": report["overall"], "datasets": report["datasets"]}
    for name, lps in speed(recognizers, samples, args.batch_size, args.repeats).items():
        models[name]["lines_per_second"] = lps
    report = {"date": datetime.date.today().isoformat(), "machine": cpu_model(), "threads": args.threads,
              "torch": torch.__version__, "test": args.test, "test_lines": len(samples),
              "batch_size": args.batch_size, "repeats": args.repeats, "models": models,
              "command": "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_results(args.out, args.name, report, to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
