"""Train the Teacher, the Student alone and the distilled Student from the recipes, on a time budget.

Phase A trains the Teacher (recipes/teacher.yaml) and the Student alone (recipes/student.yaml) side by
side; phase B distils the Student from the Teacher's best checkpoint (recipes/distill.yaml). With
--budget, a 90-second probe measures both models' steps/s on this machine first, and the epochs are
set so that each phase fits its share of the budget (the two Students always get the same epochs, so
they compare directly). Every run is resumable: run the same command again to continue.

    python recipes/train_all.py [--budget SECONDS] [--runs runs] [--variant NAME:KEY=VALUE,...]

Writes RUNS/{teacher,student,student-distilled}/ (checkpoints, report.md with test CER, summary.json),
RUNS/plan.json (epochs and measured rates) and RUNS/commands.txt (every command, in order).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parent


def run_all(commands: list[list[str]], runs: Path, logs: list[Path]) -> None:
    """Start `commands` side by side (logs to `logs`), wait for all; any failure stops the recipe."""
    with (runs / "commands.txt").open("a", encoding="utf-8") as f:
        f.writelines(" ".join(c) + "\n" for c in commands)
    procs = [subprocess.Popen(c, stdout=log.open("ab"), stderr=subprocess.STDOUT) for c, log in zip(commands, logs)]
    failed = [c for c, p in zip(commands, procs) if p.wait() != 0]
    if failed:
        sys.exit(f"failed: {' '.join(failed[0])} (see {runs}/*.log)")


def htrjand(*args: str) -> list[str]:
    return [sys.executable, "-m", "htrjand", *args]


def steps_per_epoch(config: Path, batch_size: int = 32) -> int:
    import yaml
    data = yaml.safe_load(config.read_text())["data"]
    lines = sum(sum(1 for _ in open(spec.split("?")[0], encoding="utf-8")) for spec in data["train"])
    return math.ceil(lines / data.get("batch_size", batch_size))


def probe(recipes: Path, runs: Path, seconds: int) -> dict[str, float]:
    """Steady-state steps/s (start-up excluded) of the Teacher and the Student trained side by side
    for `seconds`, plus 15% for the validation passes and checkpoints between epochs."""
    names = ("teacher", "student")
    outs = [runs / "probe" / n for n in names]
    run_all([htrjand("train", "--config", str(recipes / f"{n}.yaml"), "--output", str(o),
                     "--max-time", str(seconds), "--epochs", "1000")
             for n, o in zip(names, outs)], runs, [runs / f"probe-{n}.log" for n in names])
    rates = {}
    for name, out in zip(names, outs):
        summary = json.loads((out / "summary.json").read_text())
        rate = summary["throughput"].get("steps_per_second") or summary["steps"] / seconds  # too few steps timed
        rates[name] = rate / 1.15
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=0, help="seconds for both phases (0 = the recipes' epochs)")
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--recipes", type=Path, default=RECIPES, help="folder of teacher/student/distill.yaml")
    parser.add_argument("--probe", type=int, default=90, help="seconds of the speed probe")
    parser.add_argument("--share", type=float, default=0.55, help="part of the budget for phase A")
    parser.add_argument("--workers", type=int, help="data loader workers of every run (default: the recipes')")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="an extra distilled Student in phase B with these distill options")
    args = parser.parse_args()
    runs, recipes = args.runs, args.recipes
    runs.mkdir(parents=True, exist_ok=True)
    plan_path = runs / "plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.exists() else {}
    if args.budget and "epochs" not in plan:
        rates = probe(recipes, runs, args.probe)
        spe = steps_per_epoch(recipes / "teacher.yaml")
        phase_a, phase_b = args.budget * args.share, args.budget * (1 - args.share)
        plan = {"rates_steps_per_s": rates, "steps_per_epoch": spe, "budget_s": args.budget,
                "epochs": {"teacher": max(1, int(phase_a * rates["teacher"] / spe)),
                           # distillation adds a Teacher forward pass: ~25% slower than the Student alone
                           "student": max(1, int(0.75 * phase_b * rates["student"] / spe))}}
        plan_path.write_text(json.dumps(plan, indent=2))
    epochs = plan.get("epochs", {})
    # a safety net: a phase that runs slower than probed still ends (with its best checkpoint so far)
    workers = ["--workers", str(args.workers)] if args.workers else []
    limit_a = (["--max-time", str(int(args.budget * args.share * 1.1))] if args.budget else []) + workers
    limit_b = (["--max-time", str(int(args.budget * (1 - args.share) * 1.1))] if args.budget else []) + workers

    def train(name: str, epochs_key: str) -> list[str]:
        extra = ["--epochs", str(epochs[epochs_key])] if epochs_key in epochs else []
        return htrjand("train", "--config", str(recipes / f"{name}.yaml"), "--output", str(runs / name),
                       "--resume", "auto", *extra, *limit_a)

    run_all([train("teacher", "teacher"), train("student", "student")], runs,
            [runs / "teacher.log", runs / "student.log"])
    teacher = str(runs / "teacher" / "best.ckpt")
    extra = ["--epochs", str(epochs["student"])] if "student" in epochs else []
    distills = [("student-distilled", [])]
    for variant in args.variant:
        name, _, opts = variant.partition(":")
        distills.append((name, [a for kv in opts.split(",") if kv
                                for a in (f"--{kv.partition('=')[0].replace('_', '-')}", kv.partition("=")[2])]))
    run_all([htrjand("distill", "--config", str(recipes / "distill.yaml"), "--teacher", teacher,
                     "--output", str(runs / name), "--resume", "auto", *extra, *limit_b, *opts)
             for name, opts in distills], runs, [runs / f"{name}.log" for name, _ in distills])
    print(json.dumps({n: json.loads((runs / n / "report.json").read_text())["test"]["datasets"]
                      for n in ["teacher", "student"] + [d for d, _ in distills]
                      if (runs / n / "report.json").exists()}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
