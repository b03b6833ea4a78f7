"""Training and inference throughput (lines/s) and peak memory of the Teacher and Student on CPU.

Real lines from ../shared/data (an equal share of the copiste and hooker test splits); untrained
weights, which cost the same time as trained ones. Each measurement runs in its own process so
that its peak resident memory is its own; each is made in full precision and, where the CPU has
native bfloat16 (AVX512-BF16, AMX), under bfloat16 autocast (what `--precision bf16-mixed` trains
with). Writes benchmarks/results/throughput.{json,md}.

    python benchmarks/throughput.py [--data ../shared/data] [--lines 256] [--threads 2] [--precisions 32 bf16]
"""
from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_model, write_results  # benchmarks/machine.py

PRECISION_NAMES = {"32": "float32", "bf16": "bfloat16 autocast"}
BASELINE = ("Baselines (issue 2): a 1.3M-parameter gated-CNN + attention + LSTM prototype trained at about "
            "6 lines/s and inferred at about 22 lines/s on this machine (64x1024 lines); Kraken 7.1.1's default "
            "recogniser reads about 10 lines/s (batch 16, whole process). Target: Student inference >= 60 lines/s.")


def select_lines(data: Path, n: int):
    from htrjand.datasets import read_dataset

    half = n // 2
    return [s for name in ("copiste", "hooker") for s in read_dataset(data / name / "test.tsv")[:half]]


def measure(phase: str, preset_name: str, data: Path, n: int, threads: int, batch: int, precision: str) -> dict:
    """One measurement, run inside a child process."""
    import contextlib

    import torch

    from htrjand.charset import Charset
    from htrjand.images import pad_batch, preprocess
    from htrjand.model import HTRNet, count_parameters, preset
    from htrjand.recognition import Recognizer
    from htrjand.training.module import ctc_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    samples = select_lines(data, n)
    charset = Charset.from_texts(s.text for s in samples)
    model = HTRNet(preset(preset_name), charset.num_classes)
    result = {"parameters": count_parameters(model), "lines": len(samples)}
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    if phase == "train":
        arrays = sorted(((preprocess(s.image, 64), charset.encode(s.text)) for s in samples),
                        key=lambda a: a[0].shape[1])
        result["mean_width"] = sum(a.shape[1] for a, _ in arrays) / len(arrays)
        batches = [arrays[i:i + batch] for i in range(0, len(arrays), batch)]
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
        model.train()

        def step(items):
            images, widths = (torch.from_numpy(a) for a in pad_batch([a for a, _ in items], model.config.width_stride))
            targets = torch.tensor([c for _, label in items for c in label])
            lengths = torch.tensor([len(label) for _, label in items])
            with autocast:
                logits, frames = model(images, widths)
                loss = ctc_loss(logits.float(), frames, targets, lengths).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step(batches[len(batches) // 2])  # warm-up
        start = time.perf_counter()
        for items in batches:
            step(items)
        result["lines_per_s"] = len(samples) / (time.perf_counter() - start)
    else:
        recognizer = Recognizer(model, charset)
        paths = [s.image for s in samples]
        with autocast:
            recognizer.recognize(paths[:batch], batch_size=batch)  # warm-up
            start = time.perf_counter()
            recognizer.recognize(paths, batch_size=batch)
        result["lines_per_s"] = len(samples) / (time.perf_counter() - start)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def to_markdown(report: dict) -> str:
    rows = ["| model | parameters | precision | training lines/s | training peak MB | inference lines/s | "
            "inference peak MB |", "|---|---|---|---|---|---|---|"]
    for name, r in report["presets"].items():
        for precision in report["precisions"]:
            train, infer = r[f"train-{precision}"], r[f"infer-{precision}"]
            rows.append(f"| {name} | {r['parameters']:,} | {PRECISION_NAMES[precision]} | {train['lines_per_s']:.1f} | "
                        f"{train['peak_rss_mb']:.0f} | {infer['lines_per_s']:.1f} | {infer['peak_rss_mb']:.0f} |")
    ratios = [f"{name} {phase} {ratio:.2f}x" for name, r in report["presets"].items()
              for phase, ratio in r.get("bf16_speedup", {}).items()]
    return "\n".join([
        "# Throughput on CPU", "",
        f"{report['date']}, {report['cpu']}, {report['threads']} threads, torch {report['torch']}, "
        f"{report['lines']} real lines (copiste + hooker test, mean width {report['mean_width']:.0f} px at height 64), "
        f"batch {report['batch']}.", "",
        *rows, "",
        f"Student/Teacher inference speed: {report['student_teacher_inference_ratio']:.2f}x (full precision).", "",
        *([f"bfloat16 autocast / full precision: {', '.join(ratios)}.", ""] if ratios else []),
        *([report["note"], ""] if report.get("note") else []),
        "Training: forward + CTC loss + backward + AdamW step on width-sorted batches of preprocessed lines. "
        "Inference: `Recognizer.recognize` on the image files (JPEG decoding, preprocessing, model, greedy "
        "decoding), batch 16, eval mode.", "",
        BASELINE, "",
        f"Command: `{report['command']}`", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--lines", type=int, default=256, help="lines to measure (half from each dataset)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precisions", nargs="+", default=["32", "bf16"], choices=list(PRECISION_NAMES))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--child", nargs=3, metavar=("PHASE", "PRESET", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        phase, preset_name, precision = args.child
        print(json.dumps(measure(phase, preset_name, args.data, args.lines, args.threads, args.batch, precision)))
        return
    if not (args.data / "copiste" / "test.tsv").is_file():
        print(f"{args.data}: datasets not found; nothing measured")
        return

    import torch

    precisions, note = list(args.precisions), ""
    if "bf16" in precisions and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        precisions.remove("bf16")
        note = "This CPU has no native bfloat16 (AVX512-BF16 or AMX): bfloat16 not measured."
    presets = {}
    for name in ("teacher", "student"):
        presets[name] = {}
        for phase in ("train", "infer"):
            for precision in precisions:  # alternating, so that both see the same machine
                key = f"{phase}-{precision}"
                out = subprocess.run([sys.executable, __file__, "--child", phase, name, precision,
                                      "--data", str(args.data), "--lines", str(args.lines),
                                      "--threads", str(args.threads), "--batch", str(args.batch)],
                                     check=True, capture_output=True, text=True)
                presets[name][key] = json.loads(out.stdout.strip().splitlines()[-1])
                presets[name]["parameters"] = presets[name][key]["parameters"]
                print(f"{name:8s} {key:11s} {presets[name][key]['lines_per_s']:7.1f} lines/s", flush=True)
        if "bf16" in precisions and "32" in precisions:
            presets[name]["bf16_speedup"] = {phase: presets[name][f"{phase}-bf16"]["lines_per_s"]
                                             / presets[name][f"{phase}-32"]["lines_per_s"] for phase in ("train", "infer")}
    report = {
        "date": datetime.date.today().isoformat(), "cpu": cpu_model(), "threads": args.threads,
        "torch": torch.__version__, "lines": presets["student"][f"train-{precisions[0]}"]["lines"],
        "batch": args.batch, "mean_width": presets["student"][f"train-{precisions[0]}"]["mean_width"],
        "precisions": precisions, "presets": presets, "note": note,
        "student_teacher_inference_ratio": presets["student"][f"infer-{precisions[0]}"]["lines_per_s"]
        / presets["teacher"][f"infer-{precisions[0]}"]["lines_per_s"],
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
    }
    write_results(args.out, "throughput", report, to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
