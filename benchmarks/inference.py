"""CPU inference: lines/s, peak memory and CER of Teacher and Student on every engine, and Kraken.

Real lines from ../shared/data (copiste and hooker test splits, interleaved, `--lines` of them),
read from their JPEG files the way `htrjand recognize` reads them (decoding, preprocessing,
width-sorted batches, greedy decoding). Engines: PyTorch eager, torch.compile, ONNX fp32, ONNX int8
dynamic (linear layers) and static (convolutions too, calibrated on validation lines, never test
lines). Each measurement runs in its own process, one after the other, so that its peak resident
memory is its own; `whole lines/s` counts the process from model load to the last result,
`lines/s` the recognition call alone. Kraken's default recogniser (untrained: it costs the same
time as a trained one) runs on the same lines in its own virtual environment
(benchmarks/kraken_env.sh) when that exists. Writes benchmarks/results/inference.{json,md}.

    python benchmarks/inference.py --student CKPT [--teacher CKPT] [--lines 1000] [--threads 2]

A model given as `preset:NAME` is that preset with untrained weights (speed only; its CER is
meaningless and shown as such).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_EAGER = 93.5  # Student lines/s, PyTorch eager, benchmarks/results/throughput.md (2026-11-24)


def select_lines(data: Path, n: int, split: str = "test") -> list[tuple[str, str]]:
    """(image path, reference) pairs, alternating between copiste and hooker."""
    from htrjand.datasets import read_dataset

    parts = [read_dataset(data / name / f"{split}.tsv") for name in ("copiste", "hooker")]
    mixed = [s for pair in zip(*parts) for s in pair] + [s for p in parts for s in p[min(map(len, parts)):]]
    return [(str(s.image), s.text) for s in mixed[:n]]


def untrained_checkpoint(preset_name: str, charset_from: Path, out: Path) -> Path:
    """An htrjand checkpoint of a preset with fresh weights and another checkpoint's charset."""
    import torch

    from htrjand.checkpoint import atomic_save, model_checkpoint, read_checkpoint
    from htrjand.model import HTRNet, preset

    charset = read_checkpoint(charset_from)["hyper_parameters"]["charset"]
    torch.manual_seed(0)
    atomic_save(model_checkpoint(HTRNet(preset(preset_name), len(charset) + 1), charset, preset_name), out)
    return out


def child(args: argparse.Namespace) -> dict:
    """One measurement inside its own process."""
    start = time.perf_counter()
    lines = json.loads(Path(args.lines_file).read_text())
    if args.engine.startswith("onnx"):
        from htrjand.runtime import OnnxRecognizer

        reader = OnnxRecognizer(args.model, threads=args.threads)
    else:
        import torch

        torch.set_num_threads(args.threads)
        from htrjand.recognition import Recognizer

        reader = Recognizer.from_checkpoint(args.model)
        if args.engine == "compile":
            reader.model = torch.compile(reader.model, dynamic=True)
    loaded = time.perf_counter()
    warm = 0.0
    if args.engine == "compile":  # compilation happens on the first calls: timed apart
        reader.recognize([p for p, _ in lines[:32]], batch_size=args.batch_size)
        warm = time.perf_counter() - loaded
    t0 = time.perf_counter()
    results = reader.recognize([p for p, _ in lines], batch_size=args.batch_size)
    t1 = time.perf_counter()
    return {"texts": [r.text for r in results], "errors": sum(r.error is not None for r in results),
            "load_seconds": loaded - start, "warmup_seconds": warm, "seconds": t1 - t0,
            "whole_seconds": t1 - start, "lines_per_second": len(lines) / (t1 - t0),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parameters": reader.parameters, "mapping": reader.mapping.to_dict() if reader.mapping.table else None}


def run_child(engine: str, model: Path, lines_file: Path, threads: int, batch: int, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--engine", engine, "--model", str(model), "--lines-file",
           str(lines_file), "--threads", str(threads), "--batch-size", str(batch)]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout} s"}
    wall = time.perf_counter() - start
    if out.returncode != 0:
        return {"failed": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["whole_seconds"] = wall  # process start to exit, imports included
    return result


def run_kraken(lines_file: Path, charset: list[str], threads: int, batch: int, timeout: int) -> dict | None:
    python = ROOT / ".bench" / "kraken-venv" / "bin" / "python"
    script = ROOT / "benchmarks" / "kraken_speed.py"
    if not python.is_file() or not script.is_file():
        return None
    paths = Path(tempfile.mkdtemp()) / "lines.txt"
    paths.write_text("\n".join(p for p, _ in json.loads(lines_file.read_text())) + "\n")
    out_json = paths.with_suffix(".json")
    chars = paths.with_name("charset.txt")  # the same output layer size as htrjand's models
    chars.write_text("".join(charset) + "\n")
    start = time.perf_counter()
    try:
        done = subprocess.run([str(python), str(script), "--lines", str(paths), "--batch-size", str(batch),
                               "--threads", str(threads), "--charset", str(chars), "--json", str(out_json)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout} s"}
    if done.returncode != 0 or not out_json.is_file():
        return {"failed": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
    result = json.loads(out_json.read_text())
    result["whole_seconds"] = time.perf_counter() - start
    return result


def corpus_cer(references: list[str], texts: list[str], mapping: dict | None) -> float:
    from htrjand.charmap import CharMapping
    from htrjand.metrics import cer

    m = CharMapping.from_dict(mapping)
    return cer([m.apply(r) for r in references], texts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--student", help="Student checkpoint (or preset:student)")
    p.add_argument("--teacher", default="preset:teacher",
                   help="Teacher checkpoint (default: preset:teacher; none: Student only)")
    p.add_argument("--lines", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--engines", default="eager,compile,onnx,onnx-int8-dynamic,onnx-int8-static")
    p.add_argument("--timeout", type=int, default=900, help="seconds per measurement")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--lines-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if not args.student:
        p.error("--student CKPT is required (or preset:student for untrained weights)")
    sys.path.insert(0, str(ROOT / "src"))
    from htrjand.export import export

    lines = select_lines(args.data, args.lines)
    calibration = [path for path, _ in select_lines(args.data, 300, "val")]
    work = Path(tempfile.mkdtemp(prefix="htrjand-bench-"))
    lines_file = work / "lines.json"
    lines_file.write_text(json.dumps(lines))
    references = [t for _, t in lines]
    engines = args.engines.split(",")
    rows, student_ckpt = [], None
    roles = [("student", args.student)] + ([("teacher", args.teacher)] if args.teacher != "none" else [])
    for role, spec in roles:
        if spec.startswith("preset:"):
            base = student_ckpt or Path(args.student)
            ckpt, trained = untrained_checkpoint(spec.split(":", 1)[1], base, work / f"{role}.ckpt"), False
        else:
            ckpt, trained = Path(spec), True
        student_ckpt = student_ckpt or ckpt
        for engine in engines:
            model = ckpt
            row = {"model": role, "trained": trained, "engine": engine, "checkpoint": str(spec)}
            if engine.startswith("onnx"):
                int8 = engine.rsplit("-", 1)[1] if "int8" in engine else None
                model = work / f"{role}-{engine}.onnx"
                rep = export(ckpt, model, int8=int8, verify=[pth for pth, _ in lines[:64]], calibration=calibration)
                row.update(export_max_abs_diff=rep.max_abs_diff, export_text_agreement=rep.text_agreement,
                           file_mb=round(rep.bytes / 1e6, 2))
            print(f"{role} {engine} ...", file=sys.stderr, flush=True)
            result = run_child(engine, model, lines_file, args.threads, args.batch_size, args.timeout)
            if "texts" in result:
                result["cer"] = corpus_cer(references, result.pop("texts"), result.pop("mapping"))
            row.update(result)
            rows.append(row)
            print(f"  {json.dumps({k: v for k, v in row.items() if k != 'checkpoint'})}", file=sys.stderr, flush=True)
    from htrjand.checkpoint import read_checkpoint

    charset = read_checkpoint(student_ckpt)["hyper_parameters"]["charset"]
    kraken = run_kraken(lines_file, charset, args.threads, args.batch_size, args.timeout)
    write(args, rows, kraken, len(lines))


def write(args: argparse.Namespace, rows: list[dict], kraken: dict | None, n: int) -> None:
    def find(model: str, engine: str) -> dict:
        return next((r for r in rows if r["model"] == model and r["engine"] == engine and "failed" not in r), {})

    s_eager, s_onnx = find("student", "eager"), find("student", "onnx")
    s_best = max((r for r in rows if r["model"] == "student" and "failed" not in r),
                 key=lambda r: r["lines_per_second"], default={})
    ratios = {}
    if s_onnx:
        ratios["student_onnx_vs_first_eager"] = s_onnx["lines_per_second"] / FIRST_EAGER
    if s_onnx and s_eager:
        ratios["student_onnx_vs_eager_this_run"] = s_onnx["lines_per_second"] / s_eager["lines_per_second"]
    for mode in ("dynamic", "static"):
        q = find("student", f"onnx-int8-{mode}")
        if q and s_onnx:
            ratios[f"student_int8_{mode}_cer_points"] = 100 * (q["cer"] - s_onnx["cer"])
    if kraken and "lines_per_second" in kraken and s_best:
        ratios["htrjand_best_student_vs_kraken_whole_process"] = (
            (n / s_best["whole_seconds"]) / (kraken["lines"] / kraken["whole_seconds"]))
        ratios["htrjand_best_student_vs_kraken_recognition"] = (
            s_best["lines_per_second"] / kraken.get("lines_per_second_recognition", kraken["lines_per_second"]))
    meta = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
            "cpu_count": __import__("os").cpu_count(), "threads": args.threads, "batch_size": args.batch_size,
            "lines": n, "python": platform.python_version()}
    try:
        import onnxruntime
        import torch

        meta.update(torch=torch.__version__, onnxruntime=onnxruntime.__version__)
    except ImportError:
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "kraken": kraken,
                                                         "ratios": ratios}, indent=2))
    md = ["# CPU inference: engines, int8, Kraken\n",
          f"{meta['date']}, {meta['cpu_count']} CPU cores, {args.threads} threads, batch {args.batch_size}, "
          f"torch {meta.get('torch')}, onnxruntime {meta.get('onnxruntime')}; {n} real lines (copiste + hooker "
          "test, interleaved), read from their JPEG files.\n",
          "| model | engine | parameters | lines/s | whole-process lines/s | peak MB | CER % | file MB | notes |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            md.append(f"| {r['model']} | {r['engine']} | | | | | | | failed: {r['failed']} |")
            continue
        notes = [] if r["trained"] else ["untrained weights: CER meaningless"]
        if r.get("warmup_seconds"):
            notes.append(f"compiling took {r['warmup_seconds']:.0f} s (not counted in lines/s)")
        if "export_max_abs_diff" in r:
            notes.append(f"max logit diff {r['export_max_abs_diff']:.1e}")
        cer = f"{100 * r['cer']:.2f}" if r["trained"] else "-"
        md.append(f"| {r['model']} | {r['engine']} | {r['parameters']:,} | {r['lines_per_second']:.1f} | "
                  f"{n / r['whole_seconds']:.1f} | {r['peak_rss_mb']:.0f} | {cer} | {r.get('file_mb', 0) or '-'} "
                  f"| {'; '.join(notes)} |")
    if kraken:
        if "failed" in kraken:
            md.append(f"| Kraken default | torch | | | | | | | failed: {kraken['failed']} |")
        else:
            md.append(f"| Kraken {kraken.get('kraken_version', '')} default (untrained) | torch | "
                      f"{kraken.get('parameters', 0):,} | {kraken.get('lines_per_second_recognition', 0):.1f} | "
                      f"{kraken['lines'] / kraken['whole_seconds']:.1f} | {kraken.get('peak_rss_mb', 0):.0f} | - | - | "
                      "own venv; speed only |")
    md.append("")
    for key, value in ratios.items():
        md.append(f"- {key.replace('_', ' ')}: {value:.2f}")
    md.append(f"\nCommand: `python benchmarks/inference.py {' '.join(sys.argv[1:])}`")
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
