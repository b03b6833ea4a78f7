"""Ablations of spec section 4 on the same data and budget: training stages and architecture.

Trains the same preset on a fraction of a real training set, each variant through `htrjand pipeline`
with the same real-data epochs and seed:

- training stages: real lines only (`real`); synthetic pre-training then real (`synthetic+real`, the
  baseline of the architecture variants); real with the auxiliary CTC head (`real+aux`); real with the
  length curriculum (`real+curriculum`);
- architecture, each as `synthetic+real` with one model option changed: plain MHSA
  (`attention=mhsa`), Proxima attention alone (`attention=proxima`), no Squeeze-and-Excitation (`se=off`).

Runs `--parallel` variants at a time (one torch thread each) and writes OUT/NAME.{json,md} with the
test CER/WER of each (KD on/off and the decoders have their own benchmarks: distill.py, decoding.py).

    python benchmarks/ablations.py --train ../shared/data/hooker/train.tsv --fraction 0.1 \\
        --val ../shared/data/hooker/val.tsv --test ../shared/data/hooker/test.tsv [--epochs 20] \\
        [--variants synthetic+real attention=mhsa ...] [--synth-lines 3000] [--synth-epochs 3] \\
        [--preset student] [--batch-size 8] [--lr 3e-3] [--runs runs/ablations] [--name ablations] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from machine import write_results  # benchmarks/machine.py

RESULTS = Path(__file__).resolve().parent / "results"
STAGE_VARIANTS = ("real", "synthetic+real", "real+aux", "real+curriculum")
# architecture variants: the `synthetic+real` pipeline with these model options
MODEL_VARIANTS = {"attention=mhsa": {"attention": "mhsa"}, "attention=proxima": {"attention": "proxima"},
                  "se=off": {"se": False}}
VARIANTS = (*STAGE_VARIANTS, *MODEL_VARIANTS)


def subset(manifest: Path, fraction: float, out: Path) -> Path:
    """Every k-th line of a manifest (paths made absolute), k = 1 / fraction."""
    rows = manifest.read_text(encoding="utf-8").splitlines()
    step = max(1, round(1 / fraction))
    out.write_text("".join(f"{(manifest.parent / r.split(chr(9), 1)[0]).resolve()}\t{r.split(chr(9), 1)[1]}\n"
                           for r in rows[::step] if "\t" in r), encoding="utf-8")
    return out


def pipeline_config(variant: str, args: argparse.Namespace, train: Path, runs: Path) -> dict:
    real = {"name": "real", "train": {"epochs": args.epochs}}
    if variant == "real+aux":
        real["train"]["aux_ctc_weight"] = 0.3
    if variant == "real+curriculum":
        real["data"] = {"curriculum_epochs": max(1, args.epochs // 3)}
    stages = [real]
    if variant == "synthetic+real" or variant in MODEL_VARIANTS:
        stages.insert(0, {"name": "synthetic", "synth": {"lines": args.synth_lines, "val_fraction": 0.05},
                          "data": {"train": [], "val": []}, "train": {"epochs": args.synth_epochs}})
    return {"output": str(runs / variant), "preset": args.preset, "model": MODEL_VARIANTS.get(variant, {}),
            "data": {"train": [str(train)], "val": [str(Path(v).resolve()) for v in args.val],
                     "test": [str(Path(t).resolve()) for t in args.test], "batch_size": args.batch_size, "workers": 1,
                     "augment": 1.0},
            "train": {"lr": args.lr, "warmup_steps": 50, "schedule": "cosine", "patience": 1000, "progress": False,
                      "seed": args.seed},
            "synth": {"text": [str(Path(t).resolve()) for t in args.synth_text or [train]], "min_chars": 10,
                      "max_chars": 60, "seed": args.seed},
            "stages": stages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--val", nargs="+", required=True)
    parser.add_argument("--test", nargs="+", required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--synth-lines", type=int, default=3000)
    parser.add_argument("--synth-epochs", type=int, default=3)
    parser.add_argument("--synth-text", nargs="+", help="corpus of the synthetic lines (default: the real subset's text)")
    parser.add_argument("--preset", default="student")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1, help="training and rendering seed of every variant")
    parser.add_argument("--runs", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--name", default="ablations", help="results file name (OUT/NAME.json, OUT/NAME.md)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    train = subset(args.train, args.fraction, args.runs / f"train-{args.fraction:g}.tsv")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending = list(args.variants)
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            variant = pending.pop(0)
            config = args.runs / f"{variant}.yaml"
            config.write_text(yaml.safe_dump(pipeline_config(variant, args, train, args.runs)), encoding="utf-8")
            log = (args.runs / f"{variant}.log").open("ab")
            running.append((variant, subprocess.Popen([sys.executable, "-m", "htrjand", "pipeline", str(config)],
                                                      stdout=log, stderr=subprocess.STDOUT, env=env)))
        variant, proc = running.pop(0)
        if proc.wait() != 0:
            print(f"{variant} failed: see {args.runs / variant}.log", file=sys.stderr)
    rows = {}
    for variant in args.variants:
        report = args.runs / variant / "report.json"
        if not report.is_file():
            continue
        stages = json.loads(report.read_text())["stages"]
        last = stages[-1]["teacher"]
        test = last["report"]["test"]["overall"]
        rows[variant] = {"test_cer": test["cer"], "test_wer": test["wer"], "best_val_cer": last["best_val_cer"],
                         "seconds": sum(s["teacher"]["seconds"] or 0 for s in stages),
                         "stages": [s["name"] for s in stages]}
    result = {"date": datetime.date.today().isoformat(), "train": str(args.train), "fraction": args.fraction,
              "train_lines": sum(1 for _ in train.open()), "epochs": args.epochs, "synth_lines": args.synth_lines,
              "synth_epochs": args.synth_epochs, "preset": args.preset, "seed": args.seed, "variants": rows,
              "command": "python benchmarks/ablations.py " + " ".join(sys.argv[1:])}
    md = ["# Ablations on scarce real data (spec section 4)", "",
          f"{result['date']}; {args.preset} preset; {result['train_lines']} real training lines ({args.fraction:g} of "
          f"{args.train}), {args.epochs} real-data epochs for every variant (batch {args.batch_size}, augmentation 1.0, "
          f"cosine LR {args.lr:g}, warm-up 50 steps, seed {args.seed}); synthetic pre-training: {args.synth_lines} rendered lines for {args.synth_epochs} epochs; "
          "CPU, one torch thread per run.", "",
          "| variant | stages | model options | test CER % | test WER % | best val CER % | training s |",
          "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        options = ", ".join(f"{k}={v}" for k, v in MODEL_VARIANTS.get(name, {}).items()) or "preset"
        md.append(f"| {name} | {' -> '.join(r['stages'])} | {options} | {100 * r['test_cer']:.2f} | {100 * r['test_wer']:.2f} | "
                  f"{100 * r['best_val_cer']:.2f} | {r['seconds']:.0f} |")
    md += ["", f"Command: `{result['command']}`", ""]
    write_results(args.out, args.name, result, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
