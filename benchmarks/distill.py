"""Knowledge distillation benchmark: a Student trained alone vs a Student distilled from a Teacher.

Both Students get the same architecture, data, seed and epochs; then the Teacher and both Students
are evaluated on the test datasets (corpus CER/WER per dataset, parameters) and their inference
speed is measured side by side in this one process (best of --repeats timed passes each, the
models taking turns). Writes OUT/distill.{json,md}.

    python benchmarks/distill.py --teacher runs/teacher/best.ckpt --train SPEC [SPEC ...] \\
        --val SPEC [...] --test SPEC [...] [--student-preset student|STUDENT.yaml] [--config RUN.yaml] \\
        [--epochs 30] [--batch-size 16] [--threads 2] [--workers 2] [--runs runs/bench-distill] \\
        [--out benchmarks/results] [--distill temperature=2 --distill alpha_end=0.5 ...]
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from machine import cpu_model, speed, write_results  # benchmarks/machine.py

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="Teacher checkpoint")
    parser.add_argument("--from-runs", type=Path, help="no training: take the Students from the run folders "
                        "RUNS/student, RUNS/student-distilled[, RUNS/student-distilled-*] of recipes/train_all.py")
    parser.add_argument("--train", nargs="+", help="training dataset specs")
    parser.add_argument("--val", nargs="+", help="validation dataset specs")
    parser.add_argument("--test", nargs="+", required=True, help="test dataset specs")
    parser.add_argument("--student-preset", default="student", help="preset name or YAML of model options")
    parser.add_argument("--config", help="YAML run config applied to both Students (model/data/train/distill)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and inference")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers")
    parser.add_argument("--repeats", type=int, default=3, help="timed inference passes per model")
    parser.add_argument("--distill", action="append", default=[], metavar="KEY=VALUE",
                        help="distillation option (as in the YAML section 'distill'); repeatable")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-distill"), help="training run folders")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where distill.{json,md} go")
    return parser.parse_args(argv)


def student_config(args: argparse.Namespace, output: Path, teacher: str):
    from htrjand.cli import _student_preset
    from htrjand.config import ConfigError, load_config

    overrides: dict = {
        "data": {"train": args.train, "val": args.val, "batch_size": args.batch_size, "workers": args.workers},
        "train": {"output": str(output), "epochs": args.epochs, "progress": False},
        "distill": {"teacher": teacher},
    }
    for item in args.distill:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--distill {item!r}: expected KEY=VALUE")
        overrides["distill"][key.strip()] = value
    preset_name = _student_preset(args.student_preset, overrides)
    return load_config(args.config, overrides, preset_name, default_preset="student")


def to_markdown(report: dict) -> str:
    models = report["models"]
    rows = ["| model | parameters | CER % | WER % | inference lines/s | training steps | training s |",
            "|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        t = m.get("training") or {}
        rows.append(f"| {name} | {m['parameters']:,} | {100 * m['overall']['cer']:.2f} | "
                    f"{100 * m['overall']['wer']:.2f} | {m['lines_per_second']:.1f} | {t.get('steps', '-')} | "
                    f"{t.get('seconds', '-')} |")
    datasets = sorted({d for m in models.values() for d in m["datasets"]})
    per = ["| dataset | " + " | ".join(f"{n} CER % / WER %" for n in models) + " |",
           "|---|" + "---|" * len(models)]
    for d in datasets:
        cells = [f"{100 * m['datasets'][d]['cer']:.2f} / {100 * m['datasets'][d]['wer']:.2f}"
                 if d in m["datasets"] else "-" for m in models.values()]
        per.append(f"| {d} | " + " | ".join(cells) + " |")
    s = report["settings"]
    return "\n".join([
        "# Knowledge distillation: Student alone vs distilled", "",
        f"{report['date']}, {report['machine']}, {report['threads']} threads, torch {report['torch']}. "
        f"Teacher `{report['teacher']}`. Both Students: same architecture, seed, data and {report['epochs']} "
        f"epochs ({report.get('trained') or 'batch ' + str(report['batch_size'])}); `distilled` adds the KD term with tau {s['temperature']}, "
        f"a(t) {s['alpha_start']} -> {s['alpha_end']} ({s['alpha_schedule']}), feature weight "
        f"{s['feature_weight']}, blank weight {s['blank_weight']}.", "",
        *rows, "",
        "Per test dataset:", "", *per, "",
        f"Test data: {', '.join(report['test'])} ({report['test_lines']} lines). Inference: "
        f"`Recognizer.recognize` (decoding, preprocessing, model, greedy decoding), batch {report['batch_size']}, "
        f"best of {report['repeats']} passes per model, models alternating in one process.", "",
        f"Command: `{report['command']}`", ""])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from htrjand.checkpoint import CheckpointError
    from htrjand.config import ConfigError
    from htrjand.datasets import DataError, Problems, read_datasets
    from htrjand.evaluation import evaluate
    from htrjand.recognition import load
    from htrjand.training import train

    from htrjand.cli import _setup_logging

    _setup_logging(verbose=False)
    torch.set_num_threads(args.threads)
    try:
        runs = {}
        if args.from_runs:
            folders = [args.from_runs / "student", args.from_runs / "student-distilled",
                       *sorted(args.from_runs.glob("student-distilled-*"))]
            for folder in folders:
                name = folder.name.replace("student-distilled", "distilled")
                runs[name] = {**json.loads((folder / "summary.json").read_text()),
                              "best_checkpoint": str(folder / "best.ckpt")}
        elif not (args.train and args.val):
            raise ConfigError("give --train and --val (or --from-runs)")
        for name, teacher in (("student", ""), ("distilled", args.teacher)):
            if name not in runs:
                print(f"training {name} ...", flush=True)
                runs[name] = train(student_config(args, args.runs / name, teacher))
        problems = Problems()
        samples = read_datasets(args.test, problems)
        if problems:
            print(problems.summary(), file=sys.stderr)
        recognizers = {"teacher": load(args.teacher),
                       **{name: load(run["best_checkpoint"]) for name, run in runs.items()}}
    except (CheckpointError, ConfigError, DataError) as err:
        print(f"distill benchmark: error: {err}", file=sys.stderr)
        return 2
    models = {}
    for name, r in recognizers.items():
        report = evaluate(r, samples, batch_size=args.batch_size)
        models[name] = {"checkpoint": r.meta.get("path"), "parameters": r.parameters,
                        "overall": report["overall"], "datasets": report["datasets"]}
        if name in runs:
            keep = ("steps", "epochs", "seconds", "best_val_cer", "train_lines")
            models[name]["training"] = {k: runs[name].get(k) for k in keep}
        print(f"{name:9s} CER {100 * report['overall']['cer']:6.2f}%  ({r.parameters:,} parameters)", flush=True)
    for name, lps in speed(recognizers, samples, args.batch_size, args.repeats).items():
        models[name]["lines_per_second"] = lps
    report = {
        "date": datetime.date.today().isoformat(), "machine": cpu_model(),
        "threads": args.threads, "torch": torch.__version__, "teacher": args.teacher,
        "epochs": runs["distilled"].get("epochs", args.epochs) if args.from_runs else args.epochs,
        "batch_size": args.batch_size, "repeats": args.repeats,
        **({"trained": f"trained by recipes/train_all.py, runs in {args.from_runs}"} if args.from_runs else {}), "test": args.test, "test_lines": len(samples),
        "settings": runs["distilled"]["distillation"]["settings"], "models": models,
        "command": "python benchmarks/distill.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    write_results(args.out, "distill", report, to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
