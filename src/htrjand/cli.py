"""Command line: a thin shell over the Python API (parse, call, print)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from . import __version__

EPILOG = "Every train option can also be set in a YAML config (sections model/data/train); flags override it."


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("htrjand").setLevel(logging.INFO)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
        logging.getLogger(name).propagate = verbose
    if not verbose:
        warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config, overrides_from_args
    from .training import train

    cfg = load_config(args.config, overrides_from_args(args), args.preset)
    summary = train(cfg)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def _read_samples(paths: list[str]):
    from .datasets import Problems, read_datasets

    problems = Problems()
    samples = read_datasets(paths, problems)
    if problems:
        print(problems.summary(), file=sys.stderr)
    return samples


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate, format_report
    from .recognition import load

    recognizer = load(args.checkpoint)
    report = evaluate(recognizer, _read_samples(args.data), batch_size=args.batch_size)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"report written to {args.json}")
    return 0


def _expand_images(inputs: list[str]) -> list[str]:
    from .datasets.folder import IMAGE_SUFFIXES

    images: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            images += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            images.append(item)
    return images


def cmd_recognize(args: argparse.Namespace) -> int:
    from .recognition import load

    recognizer = load(args.checkpoint)
    images = _expand_images(args.images)
    if not images:
        print("no images given or found", file=sys.stderr)
        return 2
    results = recognizer.recognize(images, batch_size=args.batch_size)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"error: {r.error}", file=sys.stderr)
        else:
            print(f"{r.source}\t{r.text}\t{r.confidence:.3f}")
    if args.json:
        data = [{"image": r.source, "text": r.text, "confidence": r.confidence,
                 "char_confidences": r.char_confidences, "error": r.error} for r in results]
        Path(args.json).write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return 1 if failed == len(results) else 0


def cmd_info(args: argparse.Namespace) -> int:
    from .recognition import load

    r = load(args.checkpoint)
    meta = r.meta
    if args.json:
        print(json.dumps({**meta, "parameters": r.parameters}, indent=2, ensure_ascii=False))
        return 0
    training = meta.get("training", {})
    print(f"checkpoint   {meta['path']}")
    print(f"htrjand      {meta.get('version')} (format {meta.get('format_version')})")
    print(f"preset       {meta.get('preset') or 'custom'}")
    print(f"parameters   {r.parameters:,}")
    m = meta["model"]
    print(f"architecture height {m['height']}, CNN {list(m['channels'])}, d_model {m['d_model']}, "
          f"{m['heads']} heads, {m['blocks']} {m['attention']} block(s), width stride {r.stride}")
    print(f"charset      {len(r.charset)} characters (␣ = space): {''.join(r.charset.chars).replace(' ', '␣')}")
    if training:
        print(f"trained on   {', '.join(training.get('train_data', []))} ({training.get('train_lines')} lines, "
              f"datasets: {', '.join(training.get('datasets', []))})")
        print(f"validated on {', '.join(training.get('val_data', []))} ({training.get('val_lines')} lines)")
        if training.get("skipped"):
            print(f"skipped      {training['skipped']}")
    metrics = meta.get("metrics", {})
    if metrics:
        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        print(f"metrics      {shown}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.output, train_lines=args.lines, epochs=args.epochs, progress=not args.quiet)
    cer = result["test"]["overall"]["cer"]
    print(f"\ndemo finished: test CER {100 * cer:.2f}% (model in {Path(args.output) / 'model'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import add_arguments

    parser = argparse.ArgumentParser(prog="htrjand", description="Handwritten text recognition of line images "
                                     "(HTR-JAND: gated CNN + combined attention + CTC).")
    parser.add_argument("--version", action="version", version=f"htrjand {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a recogniser", epilog=EPILOG,
                       description="Train an HTR-JAND model on line images with transcriptions.")
    p.add_argument("--config", help="YAML config file (sections: preset, model, data, train)")
    p.add_argument("--preset", help="architecture preset: teacher (~1.5M) or student (<=0.75M)")
    add_arguments(p)
    p.set_defaults(func=cmd_train)

    for name, help_text, inputs, inputs_help, json_help, func in (
            ("evaluate", "CER/WER of a checkpoint on labelled data", "data",
             "TSV manifests or folders of image + .gt.txt",
             "also write the full report (with every line) to this JSON file", cmd_evaluate),
            ("recognize", "read line images", "images", "line images or folders of them",
             "write results (text, confidences) to this JSON file", cmd_recognize)):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("checkpoint", help="model checkpoint (.ckpt)")
        p.add_argument(inputs, nargs="+", help=inputs_help)
        p.add_argument("--json", help=json_help)
        p.add_argument("--batch-size", type=int, default=16, help="lines per batch (default: 16)")
        p.set_defaults(func=func)

    p = sub.add_parser("info", help="describe a checkpoint")
    p.add_argument("checkpoint", help="model checkpoint (.ckpt)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="render a small dataset, train a Student on it, evaluate and recognise")
    p.add_argument("--output", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--lines", type=int, default=1500, help="training lines to render (default: 1500)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .datasets import DataError
    from .images import ImageError

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (CheckpointError, ConfigError, DataError, ImageError) as err:
        print(f"htrjand: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("htrjand: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
