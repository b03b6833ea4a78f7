"""Ablations of spec section 4 on the same data and budget: training stages and architecture.

Trains the same preset on a fraction of a real training set, each variant through `htrjand pipeline`
with the same real-data epochs and seed:

- training stages: real lines only (`real`); synthetic pre-training then real (`synthetic+real`, the
  baseline of the architecture variants); real with the auxiliary CTC head (`real+aux`); real with the
  length curriculum (`real+curriculum`);
- architecture, each as `synthetic+real` with one model option changed: plain MHSA
  (`attention=mhsa`), Proxima attention alone (`attention=proxima`), no Squeeze-and-Excitation (`se=off`).

Runs every variant once per `--seeds` seed, `--parallel` runs at a time (one torch thread each), and
writes OUT/NAME.{json,md} with the test CER/WER of each, per seed and averaged (KD on/off and the
decoders have their own benchmarks: distill.py, decoding.py).

    python benchmarks/ablations.py --train ../shared/data/hooker/train.tsv --fraction 0.1 \\
        --val ../shared/data/hooker/val.tsv --test ../shared/data/hooker/test.tsv [--epochs 20] \\
        [--variants synthetic+real attention=mhsa ...] [--seeds 1 2] [--synth-lines 3000] [--synth-epochs 3] \\
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


def _lines(manifest: Path) -> int:
    return len(manifest.read_text(encoding="utf-8").splitlines())


def pipeline_config(variant: str, args: argparse.Namespace, train: Path, runs: Path, val: list[Path],
                    seed: int) -> dict:
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
            "data": {"train": [str(train)], "val": [str(v) for v in val],
                     "test": [str(Path(t).resolve()) for t in args.test], "batch_size": args.batch_size, "workers": 1,
                     "augment": 1.0},
            "train": {"lr": args.lr, "warmup_steps": 50, "schedule": "cosine", "patience": 1000, "progress": False,
                      "seed": seed},
            "synth": {"text": [str(Path(t).resolve()) for t in args.synth_text or [train]], "min_chars": 10,
                      "max_chars": 60, "seed": seed},
            "stages": stages}


def collect(runs: Path, variants: list[str], seeds: list[int]) -> dict:
    """Test CER/WER, best validation CER and training time of each finished run, per seed and averaged."""
    rows = {}
    for variant in variants:
        by_seed = {}
        for seed in seeds:
            report = runs / f"seed{seed}" / variant / "report.json"
            stages = json.loads(report.read_text())["stages"] if report.is_file() else []
            if not stages or stages[-1]["name"] != "real":  # not finished
                continue
            last = stages[-1]["teacher"]
            test = last["report"]["test"]["overall"]
            by_seed[seed] = {"test_cer": test["cer"], "test_wer": test["wer"], "best_val_cer": last["best_val_cer"],
                             "seconds": sum(s["teacher"]["seconds"] or 0 for s in stages)}
            rows.setdefault(variant, {})["stages"] = [s["name"] for s in stages]
        if by_seed:
            rows[variant]["seeds"] = by_seed
            for key in ("test_cer", "test_wer", "best_val_cer", "seconds"):
                rows[variant][key] = sum(r[key] for r in by_seed.values()) / len(by_seed)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--val", nargs="+", required=True)
    parser.add_argument("--val-fraction", type=float, default=1.0,
                        help="validate on every k-th line of each --val manifest, k = 1 / fraction (cheaper on CPU)")
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[1],
                        help="training and rendering seeds: every variant runs once per seed (RUNS/seedN/VARIANT)")
    parser.add_argument("--runs", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--name", default="ablations", help="results file name (OUT/NAME.json, OUT/NAME.md)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    train = subset(args.train, args.fraction, args.runs / f"train-{args.fraction:g}.tsv")
    val = [subset(Path(v), args.val_fraction, args.runs / f"val{i}-{args.val_fraction:g}.tsv")
           for i, v in enumerate(args.val)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending = [(seed, variant) for seed in args.seeds for variant in args.variants]
    running: list[tuple[Path, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            seed, variant = pending.pop(0)
            runs = args.runs / f"seed{seed}"
            runs.mkdir(exist_ok=True)
            config = runs / f"{variant}.yaml"
            config.write_text(yaml.safe_dump(pipeline_config(variant, args, train, runs, val, seed)), encoding="utf-8")
            log = runs / f"{variant}.log"
            running.append((log, subprocess.Popen([sys.executable, "-m", "htrjand", "pipeline", str(config)],
                                                  stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)))
        log, proc = running.pop(0)
        if proc.wait() != 0:
            print(f"failed: see {log}", file=sys.stderr)
    rows = collect(args.runs, args.variants, args.seeds)
    result = {"date": datetime.date.today().isoformat(), "train": str(args.train), "fraction": args.fraction,
              "train_lines": _lines(train), "epochs": args.epochs, "synth_lines": args.synth_lines,
              "synth_epochs": args.synth_epochs, "preset": args.preset, "seeds": args.seeds, "val": args.val,
              "val_fraction": args.val_fraction, "val_lines": sum(map(_lines, val)), "variants": rows,
              "command": "python benchmarks/ablations.py " + " ".join(sys.argv[1:])}
    md = ["# Ablations on scarce real data (spec section 4)", "",
          f"{result['date']}; {args.preset} preset; {result['train_lines']} real training lines ({args.fraction:g} of "
          f"{args.train}), {args.epochs} real-data epochs for every variant (batch {args.batch_size}, augmentation 1.0, "
          f"cosine LR {args.lr:g}, warm-up 50 steps, seeds {', '.join(map(str, args.seeds))}); synthetic pre-training: "
          f"{args.synth_lines} rendered lines for {args.synth_epochs} epochs; validation: {result['val_lines']} lines "
          f"({args.val_fraction:g} of {', '.join(args.val)}); CPU, one torch thread per run.", "",
          f"| variant | stages | model options | test CER % by seed ({' / '.join(map(str, args.seeds))}) | test CER % mean | "
          "test WER % mean | best val CER % mean | training s |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        options = ", ".join(f"{k}={v}" for k, v in MODEL_VARIANTS.get(name, {}).items()) or "preset"
        by_seed = " / ".join(f"{100 * r['seeds'][seed]['test_cer']:.2f}" if seed in r["seeds"] else "-" for seed in args.seeds)
        md.append(f"| {name} | {' -> '.join(r['stages'])} | {options} | {by_seed} | {100 * r['test_cer']:.2f} | "
                  f"{100 * r['test_wer']:.2f} | {100 * r['best_val_cer']:.2f} | {r['seconds']:.0f} |")
    md += ["", f"Command: `{result['command']}`", ""]
    write_results(args.out, args.name, result, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
