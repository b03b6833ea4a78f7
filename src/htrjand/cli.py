"""Command line: a thin shell over the Python API (parse, call, print)."""
from __future__ import annotations

import argparse
import json
import logging
import os
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


def _student_preset(value: str | None, overrides: dict) -> str | None:
    """`--student-preset`: a preset name, or a YAML file of model options (a mapping, or one with a
    `model:` section and an optional base `preset:`); the file's options go under the flags'."""
    if not value or not (value.endswith((".yaml", ".yml")) or Path(value).is_file()):
        return value
    from .config import ConfigError, read_yaml
    from .model import ModelConfig

    path = Path(value)
    raw = read_yaml(path, "Student config")
    model = raw.get("model", {k: v for k, v in raw.items() if k != "preset"}) if isinstance(raw, dict) else None
    if not isinstance(model, dict):
        raise ConfigError(f"{path}: a Student config must be a mapping of model options")
    unknown = set(model) - set(ModelConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{path}: unknown model options {', '.join(sorted(unknown))}")
    overrides["model"] = {**model, **overrides.get("model", {})}
    return raw.get("preset") or "student"


def cmd_distill(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config, overrides_from_args
    from .training import train
    from .training.run import _resume_path

    overrides = overrides_from_args(args)
    preset_name = _student_preset(args.student_preset, overrides)
    cfg = load_config(args.config, overrides, preset_name, default_preset="student")
    if not cfg.distill.teacher and not _resume_path(cfg):  # a resumed distillation knows its Teacher
        raise ConfigError("distill needs a Teacher: give --teacher CKPT (or distill.teacher in the config)")
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


def _decoder_options(args: argparse.Namespace) -> dict:
    return {"beam_width": args.beam_width, "lm": args.lm, "alpha": getattr(args, "alpha", None),
            "beta": getattr(args, "beta", None),
            "lexicon": args.lexicon, "lexicon_mode": args.lexicon_mode, "oov_penalty": args.oov_penalty,
            "lm_backend": args.lm_backend, "nbest": getattr(args, "nbest", 5),
            "engine": args.beam_engine, "blank_penalty": getattr(args, "blank_penalty", None)}


def _default_model(args: argparse.Namespace) -> None:
    """`recognize`/`evaluate` without a model file: the bundled Student reads every argument."""
    from .runtime import DEFAULT_MODEL, MODEL_SUFFIXES

    first = args.checkpoint
    if first is None or Path(first).suffix.lower() not in MODEL_SUFFIXES:
        setattr(args, args.inputs_attr, ([first] if first else []) + getattr(args, args.inputs_attr))
        args.checkpoint = str(DEFAULT_MODEL)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import compare, evaluate, format_comparison, format_report
    from .runtime import load

    _default_model(args)
    recognizer = load(args.checkpoint, tta=args.tta, scales=args.scales)
    options = _decoder_options(args)
    if args.compare:
        plain = {**options, "lm": None, "lexicon": None}
        decoders = [recognizer.make_decoder("greedy", **plain), recognizer.make_decoder("beam", **plain)]
        if args.lm:
            decoders.append(recognizer.make_decoder("beam", **{**options, "lexicon": None}))
        lexical = {**options, "engine": "python"}  # the only engine with lexicons
        if args.lexicon:
            decoders.append(recognizer.make_decoder("beam", **{**lexical, "lm": None}))
        if args.lm and args.lexicon:
            decoders.append(recognizer.make_decoder("beam", **lexical))
        corrector = None
        if args.corrector:
            from .correction import Corrector

            corrector = Corrector.load(args.corrector)
        report = compare(recognizer, _read_samples(args.data), decoders, batch_size=args.batch_size,
                         corrector=corrector, where=args.checkpoint)
        print(format_comparison(report))
    else:
        decoder = recognizer.make_decoder(args.decoder, **options)
        report = evaluate(recognizer, _read_samples(args.data), batch_size=args.batch_size, decoder=decoder)
        print(format_report(report))
        if args.corrector:
            from .correction import Corrector, correct_report, format_correction

            report = correct_report(Corrector.load(args.corrector), report, charset=recognizer.charset.chars,
                                    where=args.checkpoint)
            print(format_correction(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"report written to {args.json}")
    return 0


def _expand_images(inputs: list[str], force_line: bool = False) -> list:
    """Image paths, folders of images, and PAGE/ALTO files or folders of them (or `page:`/`alto:`
    specs), whose lines are read in reading order, transcribed or not. An image that looks like a
    whole page is skipped with a warning (line segmentation is needed first) unless `force_line`."""
    from .datasets import Problems, layout, read_dataset, spec_of
    from .datasets.folder import IMAGE_SUFFIXES
    from .datasets.paths import files_under
    from .writers import page_image_warning

    images: list = []
    for item in inputs:
        p, spec = Path(item), spec_of(item)
        if spec.format in ("page", "alto") or (p.is_file() and p.suffix.lower() == ".xml") or (
                spec.path.is_dir() and any(layout.holds_format(spec.path, f) for f in ("page", "alto"))):
            spec.keep_empty = True
            problems = Problems()
            images += read_dataset(spec, problems)
            if problems or problems.warnings:
                print(f"{item}: {problems.summary()}", file=sys.stderr)
            continue
        found = [str(f) for f in files_under(p, IMAGE_SUFFIXES)] if p.is_dir() else [item]
        for image in found:
            warning = None if force_line else page_image_warning(image)
            if warning:
                print(f"htrjand: warning: {warning}", file=sys.stderr)
            else:
                images.append(image)
    return images


def cmd_recognize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .outputs import OutputStream, plan_outputs
    from .runtime import load
    from .signals import Stopped, StopSignals

    _default_model(args)
    images = _expand_images(args.images, args.force_line)
    if not images:
        print("no images given or found", file=sys.stderr)
        return 2
    everything, positions, shard = images, [], getattr(args, "shard", None)
    if shard is not None:  # --shard K/N: this process reads its share of the files (htrjand.shards)
        from .shards import select

        plan_outputs(images, args.images, args.format, args.output_dir)  # the whole job's outputs, checked
        positions = select(images, shard)
        images = [everything[i] for i in positions]
        print(f"shard {shard}: {len(images)} of {len(everything)} lines", file=sys.stderr)
    plan = plan_outputs(images, args.images, args.format, args.output_dir)  # checked before the model loads
    # a progress bar on a terminal (messages are written above it); nothing on a pipe or file
    bar = tqdm(total=0, unit="line", disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False)
    say = lambda message: bar.write(message, file=sys.stderr)  # noqa: E731
    stream = OutputStream(plan, images, args.images, json_path=args.json, shard=shard, everything=everything,
                          positions=positions, resume=args.resume, words=args.words, glyphs=args.glyphs,
                          creator=f"htrjand {__version__} ({Path(args.checkpoint).name})",
                          report=lambda path: say(f"written: {path}"))
    todo, failed = stream.todo, 0
    if args.resume:
        say(f"--resume: {len(images) - len(todo)} of {len(images)} lines need not be read again")
    try:
        if todo:
            recognizer = load(args.checkpoint, engine=args.engine, tta=args.tta, scales=args.scales)
            decoder = recognizer.make_decoder(args.decoder, **_decoder_options(args))
            done = 0
            bar.reset(total=len(todo))
            with StopSignals("the lines being read are written") as stop:
                for results in recognizer.recognize_chunks([images[i] for i in todo], batch_size=args.batch_size,
                                                           decoder=decoder):
                    stream.add(todo[done:done + len(results)], results)
                    done += len(results)
                    bar.update(len(results))
                    for r in results:
                        if r.error:
                            failed += 1
                            say(f"error: {r.error}")
                    if stop.received and done < len(todo):
                        raise Stopped(stop.received, f"after {done} of {len(todo)} lines: {stream.summary()}; the "
                                      f"same command with --resume reads the rest")
        stream.finish()
    finally:
        stream.close()
        bar.close()
    return 1 if todo and failed == len(todo) else 0


def _corpus(args: argparse.Namespace) -> list[str]:
    """The standardised text lines of `args.text` (problems reported on stderr)."""
    from .charmap import CharMapping, MappingError
    from .datasets import DataError, Problems
    from .lm import corpus_lines

    try:
        mapping = CharMapping.load(args.charset_mapping)
    except MappingError as err:
        raise DataError(str(err)) from None
    problems = Problems()
    lines = corpus_lines(args.text, problems, mapping.apply)
    if problems:
        print(problems.summary(), file=sys.stderr)
    return lines


def cmd_lm_build(args: argparse.Namespace) -> int:
    from .lm import build_lm, write_sidecar

    lines = _corpus(args)
    order = args.order or (6 if args.unit == "char" else 3)
    lm, stats = build_lm(lines, order, args.unit)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lm.write_arpa(out)
    write_sidecar(out, {**stats, "sources": list(args.text), "charset_mapping": args.charset_mapping})
    print(f"{args.unit} {order}-gram LM ({stats['smoothing']}) from {stats['sentences']} lines, "
          f"{stats['tokens']} tokens, vocabulary {stats['vocabulary']}: "
          f"{', '.join(f'{n}-grams {c}' for n, c in stats['ngrams'].items())}")
    print(f"written to {out} (settings in {out}.json)")
    return 0


def cmd_lm_lexicon(args: argparse.Namespace) -> int:
    from .datasets import DataError
    from .lm import lexicon_words, wordfreq_words

    if not args.text and not args.wordfreq:
        raise DataError("lm lexicon: give texts or datasets, --wordfreq LANG, or both")
    words, distinct = lexicon_words(_corpus(args), args.min_count) if args.text else ([], 0)
    if args.text and not words:
        raise DataError(f"{', '.join(args.text)}: no word occurs {args.min_count} times or more: nothing to write")
    counts = [f"{len(words)} words (of {distinct} distinct) from the texts"] if args.text else []
    known = {w.lower() for w in words}
    for spec in args.wordfreq or []:
        new = [w for w in wordfreq_words(spec) if w.lower() not in known]
        known.update(w.lower() for w in new)
        words += new
        counts.append(f"{len(new)} more from wordfreq {spec}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(words) + "\n", encoding="utf-8")
    print(f"{len(words)} words written to {out}: {', '.join(counts)}")
    return 0


def _add_mapping_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--charset-mapping", default="default",
                   help="character standardisation as in training: default | none | mapping file (default: default)")


def _scales(text: str) -> int | tuple[float, ...]:
    """`--scales`: a preset count (1, 3, 5, 7) or comma-separated width factors, checked by `width_scales`."""
    from .runtime import width_scales

    value: int | list[float] = int(text) if text.strip().isdigit() else _floats(text)
    try:
        return width_scales(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def cmd_lm_tune(args: argparse.Namespace) -> int:
    from .evaluation import DEFAULT_ALPHAS, DEFAULT_BETAS, tune_weights
    from .lm import read_sidecar, write_sidecar
    from .runtime import load

    recognizer = load(args.checkpoint, tta=args.tta, scales=args.scales)
    decoder = recognizer.make_decoder("beam", **{**_decoder_options(args), "alpha": 0.0, "beta": 0.0})
    samples = _read_samples(args.data)
    print(f"{'alpha':>6} {'beta':>6} {'CER %':>7} {'WER %':>7}")
    show = lambda g: print(f"{g['alpha']:6g} {g['beta']:6g} {100 * g['cer']:7.2f} {100 * g['wer']:7.2f}", flush=True)  # noqa: E731
    report = tune_weights(recognizer, samples, decoder, args.alphas or DEFAULT_ALPHAS, args.betas or DEFAULT_BETAS,
                          batch_size=args.batch_size, progress=show)
    best = report["best"]
    print(f"best: alpha {best['alpha']:g}, beta {best['beta']:g}: CER {100 * best['cer']:.2f}% "
          f"(greedy {100 * report['greedy']['cer']:.2f}%) on {report['lines']} lines")
    if args.save:
        settings = read_sidecar(args.lm)
        settings.update({"alpha": best["alpha"], "beta": best["beta"],
                         "tuned": {"checkpoint": args.checkpoint, "data": list(args.data), "lines": report["lines"],
                                   "beam_width": args.beam_width, "engine": args.beam_engine, "lexicon": args.lexicon,
                                   "cer": best["cer"], "wer": best["wer"], "greedy_cer": report["greedy"]["cer"]}})
        print(f"weights stored in {write_sidecar(args.lm, settings)} (used by default with this LM)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibration import calibrate_recognizer, reliability_diagram
    from .checkpoint import update_metadata
    from .runtime import load

    recognizer = load(args.checkpoint, tta=args.tta, scales=args.scales)
    report = calibrate_recognizer(recognizer, _read_samples(args.data), args.batch_size, args.bins,
                                  args.blank_penalties)
    blank = report["blank_penalty_fit"]
    print("blank penalty: " + ", ".join(f"{g['blank_penalty']:g} -> CER {100 * g['cer']:.2f}%" for g in blank["grid"]))
    print(f"blank penalty {blank['blank_penalty']:g}: greedy CER {100 * blank['cer']:.2f}% "
          f"(without: {100 * blank['cer_without']:.2f}%)")
    print(f"temperature {report['temperature']:.3f} fitted on {report['characters']} characters "
          f"of {report['lines']} lines")
    print(f"ECE {100 * report['ece_before']:.2f}% -> {100 * report['ece_after']:.2f}%, "
          f"NLL {report['nll_before']:.4f} -> {report['nll_after']:.4f}")
    output = Path(args.output) if args.output else Path(args.checkpoint)
    stored = {k: report[k] for k in ("temperature", "target", "characters", "lines", "ece_before", "ece_after",
                                     "nll_before", "nll_after", "blank_penalty", "tta", "scales")}
    stored["greedy_cer"] = {"with_blank_penalty": blank["cer"], "without": blank["cer_without"]}
    backup = update_metadata(args.checkpoint, {"calibration": {**stored, "data": list(args.data)}},
                             args.output)
    print(f"blank penalty and temperature stored in {output}" + (f" (original kept as {backup})" if backup else ""))
    diagram = reliability_diagram(report, args.diagram or output.with_suffix(".reliability.png"))
    print(f"reliability diagram: {diagram}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .runtime import load

    r = load(args.checkpoint)  # None: the bundled model
    meta = r.meta
    if args.json:
        print(json.dumps({**meta, "parameters": r.parameters}, indent=2, ensure_ascii=False))
        return 0
    training = meta.get("training", {})
    if r.engine == "onnx":
        int8 = f", int8 ({meta['int8']})" if meta.get("int8") else ""
        print(f"model file   {meta['path']} (ONNX{int8})")
        print(f"exported     {meta.get('exported')} by htrjand {meta.get('htrjand_version')} from "
              f"{meta.get('source_checkpoint')} (sha256 {meta.get('source_sha256')})")
    else:
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
    cal = meta.get("calibration")
    if cal:
        print(f"calibration  temperature {cal['temperature']:.3f} (ECE {100 * cal['ece_before']:.2f}% -> "
              f"{100 * cal['ece_after']:.2f}% on {cal['characters']} characters), blank penalty "
              f"{cal.get('blank_penalty', 0.0):g}")
    metrics = meta.get("metrics", {})
    if metrics:
        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        print(f"metrics      {shown}")
    kd = meta.get("distillation")
    if kd:
        t, s = kd["teacher"], kd["settings"]
        print(f"distilled    from Teacher {t['path']} (sha256 {t['sha256']})")
        print(f"teacher      preset {t['preset']}, {t['parameters']:,} parameters, {t['charset_size']} characters, "
              f"epoch {t.get('epoch')}, step {t.get('step')}")
        if t.get("metrics"):
            shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in t["metrics"].items())
            print(f"teacher had  {shown}")
        blank = (f"blank frames (p > {s['blank_threshold']}) weigh {s['blank_weight']}" if s["blank_weight"] != 1
                 else "no blank down-weighting")
        stages = f" in {s['alpha_stages']} stages" if s["alpha_schedule"] == "step" else ""
        print(f"distillation tau {s['temperature']}, CTC weight a(t) {s['alpha_start']} -> {s['alpha_end']} "
              f"({s['alpha_schedule']}{stages}), feature weight {s['feature_weight']}, {blank}, "
              f"{kd.get('unlabelled_lines', 0)} unlabelled lines; charset {kd['charset']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.output, train_lines=args.lines, epochs=args.epochs, progress=not args.quiet)
    cer = result["test"]["overall"]["cer"]
    print(f"\ndemo finished: test CER {100 * cer:.2f}% (model in {Path(args.output) / 'model'})")
    return 0


def _shard_arg(text: str):
    from .shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_merge_results(args: argparse.Namespace) -> int:
    from .shards import merge

    done = merge(args.output, args.shards)
    print(f"{done['output']}: {done['records']} {done['format'].upper()} records of {done['inputs']} inputs "
          f"from {done['shards']} shards")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401

        from . import serve
    except ImportError as err:
        missing = f" ({err.name} is missing)" if err.name else ""
        print(f"htrjand: error: htrjand serve needs FastAPI, uvicorn and python-multipart{missing}: "
              "pip install 'htrjand[serve]'", file=sys.stderr)
        return 2
    return serve.main(args)


def _add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="local web page and JSON API for reading lines and pages (docs/serve.md)")
    p.add_argument("model", nargs="?", help="model checkpoint (.ckpt) or exported .onnx (default: the bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest request body in MB (default: 20)")
    p.add_argument("--max-files", type=int, default=200, help="most images per request (default: 200)")
    p.add_argument("--max-megapixels", type=float, default=64, help="largest image in megapixels (default: 64)")
    p.add_argument("--low-confidence", type=float, default=0.8,
                   help="initial threshold for highlighting characters (default: 0.8)")
    p.add_argument("--batch-size", type=int, default=16, help="lines per batch (default: 16)")
    _add_decoder_arguments(p)
    p.set_defaults(func=cmd_serve)


def _add_decoder_arguments(p: argparse.ArgumentParser, lm_required: bool = False) -> None:
    from .decoding import DEFAULT_BEAM, DEFAULT_OOV_PENALTY, ENGINES
    from .runtime import TTA_CHOICES

    g = p.add_argument_group("decoding (docs/decoding.md)")
    if not lm_required:
        g.add_argument("--decoder", choices=("greedy", "beam"),
                       help="greedy best path or prefix beam search (default: beam with --lm/--lexicon, else greedy)")
    g.add_argument("--beam-width", type=int, default=DEFAULT_BEAM, help=f"beam width (default: {DEFAULT_BEAM})")
    g.add_argument("--lm", required=lm_required, help="n-gram LM: ARPA file (or KenLM binary with the kenlm module)")
    g.add_argument("--lm-backend", choices=("auto", "kenlm", "python"), default="auto",
                   help="LM scorer: kenlm when importable (auto) or the built-in Python one")
    g.add_argument("--beam-engine", choices=ENGINES, default="python",
                   help="beam search in Python (default: any LM, lexicons) or in flashlight-text's C++ decoder "
                        "(pip install 'htrjand[flashlight]'; character LMs, no lexicon; several times faster)")
    if not lm_required:
        g.add_argument("--alpha", type=float, help="LM weight (default: tuned value in LM.json, else 0.5)")
        g.add_argument("--beta", type=float, help="insertion bonus per LM token (default: LM.json, else 1.0)")
    g.add_argument("--lexicon", help="word list, one word per line")
    g.add_argument("--lexicon-mode", choices=("penalty", "strict"), default="penalty",
                   help="words outside the lexicon: penalised (default) or forbidden")
    g.add_argument("--oov-penalty", type=float, default=DEFAULT_OOV_PENALTY,
                   help=f"log-score penalty per out-of-lexicon word (default: {DEFAULT_OOV_PENALTY:g})")
    g.add_argument("--blank-penalty", type=float, metavar="P",
                   help="subtract P from the blank's logit in every frame, so fewer characters are dropped (default: "
                   "the model's, fitted by `htrjand calibrate`, for decoders without --lm; 0 with an LM)")
    g.add_argument("--tta", type=int, choices=TTA_CHOICES, default=1,
                   help="test-time augmentation: read each line 3 or 5 times, shifted up and down, and average "
                   "(about 0.5 CER points better for 3 or 5 times the network's work; default: 1, off)")
    g.add_argument("--scales", type=_scales, default=(1.0,), metavar="N|F,F,...",
                   help="multi-scale reading: read each line at 3, 5 or 7 widths (0.8-1.25 times, up to 0.7-1.4) or "
                   "at the width factors given, and keep the most confident reading (bundled Student, copiste test: "
                   "0.9 CER points better for 3 times the network's work; default: 1, off)")


def build_parser() -> argparse.ArgumentParser:
    from .calibration import BLANK_PENALTIES
    from .config import SECTIONS, add_arguments
    from .runtime import TTA_CHOICES

    parser = argparse.ArgumentParser(prog="htrjand", description="Handwritten text recognition of line images "
                                     "(HTR-JAND: gated CNN + combined attention + CTC).")
    parser.add_argument("--version", action="version", version=f"htrjand {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a recogniser", epilog=EPILOG,
                       description="Train an HTR-JAND model on line images with transcriptions.")
    p.add_argument("--config", help="YAML config file (sections: preset, model, data, train)")
    p.add_argument("--preset", help="architecture preset: teacher (~1.5M) or student (<=0.75M)")
    add_arguments(p, tuple(s for s in SECTIONS if s != "distill"))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="train a Student from a frozen Teacher (knowledge distillation)",
                       epilog="Every option can also be set in a YAML config (sections model/data/train/distill); "
                       "flags override it. See docs/distillation.md.",
                       description="Train a Student on labelled lines with CTC plus the frame-wise KL to a frozen "
                       "Teacher's posteriors, weighted by a curriculum a(t) (spec 2.5).")
    p.add_argument("--config", help="YAML config file (sections: preset, model, data, train, distill)")
    p.add_argument("--student-preset", metavar="NAME|YAML",
                   help="Student architecture: a preset name (default: student) or a YAML file of model options")
    add_arguments(p)
    p.set_defaults(func=cmd_distill)

    for name, help_text, inputs, inputs_help, json_help, func in (
            ("evaluate", "CER/WER of a checkpoint on labelled data", "data",
             "TSV manifests or folders of image + .gt.txt",
             "also write the full report (with every line) to this JSON file", cmd_evaluate),
            ("recognize", "read line images", "images", "line images, folders of them, or PAGE/ALTO files",
             "write results (text, confidences) to this JSON file", cmd_recognize)):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("checkpoint", nargs="?", help="model checkpoint (.ckpt) or exported .onnx (default: the "
                       "bundled Student; a first argument that is not a model file is read as input)")
        p.add_argument(inputs, nargs="+", help=inputs_help)
        p.set_defaults(inputs_attr=inputs)
        p.add_argument("--json", help=json_help)
        p.add_argument("--batch-size", type=int, default=16, help="lines per batch (default: 16)")
        _add_decoder_arguments(p)
        p.set_defaults(func=func)
    sub.choices["recognize"].add_argument("--engine", choices=("torch", "onnx"),
                                          help="torch (checkpoints) or onnx (exported .onnx files, no PyTorch "
                                          "needed; default: from the file's suffix)")
    sub.choices["recognize"].add_argument("--nbest", type=int, default=5,
                                          help="candidates kept in the JSON's n-best lists (default: 5)")
    out = sub.choices["recognize"].add_argument_group("outputs (docs/outputs.md)")
    out.add_argument("--output-dir", help="write files here: PAGE/ALTO inputs as the same file name in their own "
                     "format (inputs are never overwritten); text: one .txt per input; tsv/json: results.tsv/.json")
    out.add_argument("--format", default="auto", choices=("auto", "text", "tsv", "json", "page", "alto"),
                     help="auto (default): PAGE/ALTO inputs back into their format in --output-dir, line images "
                     "as `source<TAB>text<TAB>confidence` on stdout; text, tsv (a manifest), json; page/alto: "
                     "only inputs of that format")
    out.add_argument("--words", action=argparse.BooleanOptionalAction, default=True,
                     help="word boxes in written PAGE files (ALTO always gets a String per word) (default: on)")
    out.add_argument("--glyphs", action="store_true", help="also character boxes (PAGE Glyph, ALTO 4 Glyph)")
    out.add_argument("--force-line", action="store_true",
                     help="read images that look like whole pages as single lines instead of skipping them")
    out.add_argument("--resume", action="store_true",
                     help="continue a stopped run: page and text files in --output-dir that exist are kept, TSV/JSON "
                     "outputs keep the lines their .partial journal holds; only the other lines are read")
    out.add_argument("--shard", type=_shard_arg, metavar="K/N|auto",
                     help="read only share K (0..N-1) of N of the inputs, whole files per shard; auto: from "
                     "SLURM_PROCID/SLURM_NTASKS or RANK/WORLD_SIZE. TSV/JSON go to *.shard-K-of-N.* files that "
                     "`htrjand merge-results` joins (docs/reliability.md)")
    sub.choices["evaluate"].add_argument("--compare", action="store_true", help="compare greedy, beam, beam + LM "
                                         "and beam + lexicon (those given) side by side on the same model outputs, "
                                         "each also after --corrector when given")
    sub.choices["evaluate"].add_argument("--corrector", help="also report CER/WER after T5 correction with this "
                                         "corrector folder (docs/correction.md)")

    p = sub.add_parser("lm", help="build or tune an n-gram language model for beam search")
    lm_sub = p.add_subparsers(dest="lm_command", required=True)
    p = lm_sub.add_parser("build", help="train an n-gram LM (modified Kneser-Ney) and write it as ARPA",
                          description="Train an interpolated modified Kneser-Ney n-gram LM over characters or "
                          "words. Inputs: text:PATH or *.txt (one line per line) or datasets (their transcriptions).")
    p.add_argument("text", nargs="+", help="text files (text:PATH or *.txt) or datasets (TSV manifests, folders, "
                   "FORMAT:PATH?split=..)")
    p.add_argument("--unit", choices=("char", "word"), default="char", help="tokens (default: char)")
    p.add_argument("--order", type=int, help="n-gram order (default: 6 for char, 3 for word)")
    p.add_argument("--out", required=True, help="ARPA file to write (settings go to OUT.json)")
    _add_mapping_argument(p)
    p.set_defaults(func=cmd_lm_build)
    p = lm_sub.add_parser("lexicon", help="write the words of texts or datasets as a lexicon for beam search",
                          description="One word per line, most frequent first (words are split at spaces, as "
                          "the decoder splits them; it ignores punctuation around a word and case when matching).")
    p.add_argument("text", nargs="*", help="text files (text:PATH or *.txt) or datasets, as for `lm build`")
    p.add_argument("--out", required=True, help="word list to write")
    p.add_argument("--min-count", type=int, default=1, help="keep words seen at least this often (default: 1)")
    p.add_argument("--wordfreq", action="append", metavar="LANG[:N]",
                   help="add the N most frequent words of LANG (default N 20000) from the wordfreq package's lists, "
                   "after the texts' words; repeat for several languages (pip install 'htrjand[wordfreq]')")
    _add_mapping_argument(p)
    p.set_defaults(func=cmd_lm_lexicon)
    p = lm_sub.add_parser("tune", help="grid-search the LM weight (alpha) and insertion bonus (beta) on "
                          "validation data", description="Decode validation lines with every (alpha, beta) "
                          "and print CER; the best pair is stored in LM.json and used by default afterwards.")
    p.add_argument("checkpoint", help="model checkpoint (.ckpt)")
    p.add_argument("data", nargs="+", help="validation datasets")
    p.add_argument("--alphas", type=_floats, help="comma-separated LM weights (default: 0,0.25,0.5,0.75,1,1.5)")
    p.add_argument("--betas", type=_floats, help="comma-separated insertion bonuses (default: -1,0,1,2,3)")
    p.add_argument("--no-save", dest="save", action="store_false", help="do not store the best weights in LM.json")
    p.add_argument("--json", help="write the grid to this JSON file")
    p.add_argument("--batch-size", type=int, default=16, help="lines per batch (default: 16)")
    _add_decoder_arguments(p, lm_required=True)
    p.set_defaults(func=cmd_lm_tune)

    p = sub.add_parser("calibrate", help="fit the blank penalty and confidence temperature on validation data",
                       description="Fit the blank penalty of decoding (the value of a grid with the lowest greedy CER "
                       "on the lines; it changes the text of decoders without an LM), then one temperature T for the "
                       "character confidences (target: per-character correctness of greedy output aligned to the "
                       "reference); store both in the checkpoint and draw a reliability diagram.")
    p.add_argument("checkpoint", help="model checkpoint (.ckpt)")
    p.add_argument("data", nargs="+", help="validation datasets")
    p.add_argument("--output", help="write the calibrated checkpoint here (default: in place, original kept as .bak)")
    p.add_argument("--diagram", help="reliability diagram PNG (default: OUTPUT with .reliability.png)")
    p.add_argument("--bins", type=int, default=15, help="confidence bins for ECE (default: 15)")
    p.add_argument("--blank-penalties", type=_floats, default=list(BLANK_PENALTIES),
                   help=f"comma-separated blank penalties to try (default: {','.join(f'{v:g}' for v in BLANK_PENALTIES)}; "
                   "0: none)")
    p.add_argument("--tta", type=int, choices=TTA_CHOICES, default=1,
                   help="fit on the averaged reading of --tta 3 or 5, for a model read that way (default: 1)")
    p.add_argument("--scales", type=_scales, default=(1.0,), metavar="N|F,F,...",
                   help="fit on the multi-scale reading, for a model read that way (as recognize --scales; default: 1)")
    p.add_argument("--json", help="write the calibration report to this JSON file")
    p.add_argument("--batch-size", type=int, default=16, help="lines per batch (default: 16)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("info", help="describe a checkpoint")
    p.add_argument("checkpoint", nargs="?", help="model checkpoint (.ckpt) or .onnx (default: the bundled model)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="render a small dataset, train a Student on it, evaluate and recognise")
    p.add_argument("--output", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--lines", type=int, default=1500, help="training lines to render (default: 1500)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)
    _add_dataset_commands(sub)
    _add_corrector_commands(sub)
    _add_serve_command(sub)
    _add_export_command(sub)
    _add_synth_command(sub)
    _add_pipeline_command(sub)
    p = sub.add_parser("merge-results", help="join the JSON or TSV files of `recognize --shard` runs in input order",
                       description="Check that the shard files are complete (every K of N), disjoint and of "
                       "the same inputs, then write them as one unsharded `recognize` run writes its JSON or TSV.")
    p.add_argument("output", help="merged JSON or TSV file to write")
    p.add_argument("shards", nargs="+", help="the shard files (results.shard-K-of-N.json or .tsv)")
    p.set_defaults(func=cmd_merge_results)
    return parser


def _model_geometry(args: argparse.Namespace):
    """(charset or None, height, stride, mapping): from --model CKPT when given, else the flags."""
    from .charmap import CharMapping

    if getattr(args, "model", None):
        from .runtime import load

        r = load(args.model)
        return r.charset, r.height, r.stride, r.mapping
    return None, args.height, args.stride, CharMapping.load(args.mapping)


def cmd_dataset_stats(args: argparse.Namespace) -> int:
    from .datasets import Problems
    from .datatools import format_stats, read_all, stats

    _, height, stride, mapping = _model_geometry(args)
    problems = Problems()
    parts = read_all(args.data, problems, mapping)
    result = {name: stats(samples, height, stride) for name, samples in parts.items()}
    if len(parts) > 1:
        result["all"] = stats([s for samples in parts.values() for s in samples], height, stride)
    for name, s in result.items():
        print(format_stats(name, s))
    if problems:
        print(problems.summary(), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


def cmd_dataset_validate(args: argparse.Namespace) -> int:
    from .datasets import Problems
    from .datatools import read_all, validate

    charset, height, stride, mapping = _model_geometry(args)
    problems = Problems()
    samples = [s for part in read_all(args.data, problems, mapping, keep_empty=True).values() for s in part]
    report = validate(samples, problems, charset, height, stride)
    for kind, where, message in report.problems:
        print(f"{where}: {kind}: {message}")
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts().items()))
    print(f"{report.lines} lines checked: " + (f"{len(report.problems)} problems ({counts})" if report.problems else "no problems"))
    if args.json:
        data = {"lines": report.lines, "counts": dict(report.counts()),
                "problems": [{"kind": k, "where": w, "message": m} for k, w, m in report.problems]}
        Path(args.json).write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return 1 if report.problems else 0


def cmd_dataset_extract(args: argparse.Namespace) -> int:
    from .datasets import Problems
    from .datatools import extract, read_all

    problems = Problems()
    samples = [s for part in read_all(args.pages, problems, keep_empty=args.keep_empty).values() for s in part]
    manifest = extract(samples, Path(args.out), args.height, args.image_format, problems)
    print(f"{manifest}: {sum(1 for _ in manifest.open(encoding='utf-8'))} lines written")
    if problems or problems.warnings:
        print(problems.summary(), file=sys.stderr)
    return 0


def cmd_charset(args: argparse.Namespace) -> int:
    from .charmap import CharMapping
    from .datasets import Problems
    from .datatools import charset_report, format_charset_report, read_all

    charset, mapping = None, CharMapping.load(args.mapping)
    if args.model:
        from .runtime import load

        r = load(args.model)
        charset, mapping = r.charset, (r.mapping if args.mapping == "model" else mapping)
    problems = Problems()
    report = charset_report(read_all(args.data, problems), mapping, charset)
    print(format_charset_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


def _add_dataset_commands(sub) -> None:
    data_help = "datasets: [FORMAT:]PATH[?split=..&name=..] (docs/datasets.md)"
    p = sub.add_parser("dataset", help="dataset tools: stats, validate, extract")
    tools = p.add_subparsers(dest="tool", required=True)
    for name, help_text, func in (("stats", "lines, writers, characters, sizes, CTC feasibility", cmd_dataset_stats),
                                  ("validate", "list every unusable line with its file and line (exit 1 if any)",
                                   cmd_dataset_validate)):
        t = tools.add_parser(name, help=help_text)
        t.add_argument("data", nargs="+", help=data_help)
        t.add_argument("--model", help="take height, width stride, charset and mapping from this checkpoint")
        t.add_argument("--height", type=int, default=64, help="line height of the model (default: 64)")
        t.add_argument("--stride", type=int, default=8, help="width stride of the model (default: 8)")
        t.add_argument("--mapping", default="default", help="character mapping: default | none | FILE (default: default)")
        t.add_argument("--json", help="also write the result to this JSON file")
        t.set_defaults(func=func)
    t = tools.add_parser("extract", help="cut the lines of PAGE/ALTO (or any dataset) into images + a TSV manifest")
    t.add_argument("pages", nargs="+", help="PAGE XML / ALTO files or folders, or any dataset spec")
    t.add_argument("--out", required=True, help="output folder (gets lines/ and lines.tsv)")
    t.add_argument("--height", type=int, default=0, help="normalise line height to this (default: 0 = keep)")
    t.add_argument("--image-format", default="png", choices=["png", "jpg"], help="line image format (default: png)")
    t.add_argument("--keep-empty", action="store_true", help="also write lines without transcription")
    t.set_defaults(func=cmd_dataset_extract)

    p = sub.add_parser("charset", help="merged charset of datasets with counts, mapping changes, model coverage")
    p.add_argument("data", nargs="+", help=data_help)
    p.add_argument("--mapping", default="default",
                   help="character mapping: default | none | FILE | model (the --model's own) (default: default)")
    p.add_argument("--model", help="also list the characters this checkpoint cannot produce")
    p.add_argument("--json", help="also write the report to this JSON file")
    p.set_defaults(func=cmd_charset)


def cmd_corrector_train(args: argparse.Namespace) -> int:
    from .training.corrector import TrainSettings, train_corrector

    names = {f for f in TrainSettings.__dataclass_fields__}
    settings = TrainSettings(**{k: v for k, v in vars(args).items() if k in names and v is not None})
    print(json.dumps(train_corrector(settings), indent=2, ensure_ascii=False))
    return 0


def cmd_corrector_apply(args: argparse.Namespace) -> int:
    from .correction import Corrector, Gate, correct_report, format_correction, read_report, recogniser_charset

    corrector = Corrector.load(args.corrector, device=args.device)
    _, report = read_report(args.report)
    gate = Gate(args.gate_abs if args.gate_abs is not None else corrector.gate.absolute,
                args.gate_rel if args.gate_rel is not None else corrector.gate.relative)
    charset = recogniser_charset(args.recognizer) if args.recognizer else None
    out = correct_report(corrector, report, charset=charset, where=args.recognizer or "", gate=gate,
                         batch_size=args.batch_size, beams=args.beams, report_path=args.report)
    if isinstance(out, dict):
        print(format_correction(out))
    Path(args.out).write_text(json.dumps(out, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"corrected report written to {args.out}")
    return 0


def _add_corrector_commands(sub) -> None:
    from .correction import Gate
    from .correction import TrainSettings

    d = TrainSettings(output="")
    p = sub.add_parser("corrector", help="context-aware T5 correction of recognised lines: train, apply")
    tools = p.add_subparsers(dest="tool", required=True)
    t = tools.add_parser("train", help="train a byte-level T5 corrector (docs/correction.md)",
                         description="Train on the recogniser's outputs (evaluate --json reports of held-out data) "
                         "and on text corpora corrupted with its confusion statistics.")
    t.add_argument("output", help="corrector folder to write")
    t.add_argument("--reports", nargs="+", default=[], help="`htrjand evaluate --json` reports (real pairs)")
    t.add_argument("--corpus", dest="corpora", nargs="+", default=[],
                   help="text corpora: .txt (one line per line, blank line = new page) or TSV manifests")
    t.add_argument("--init", help="start from a local T5/ByT5/mT5 folder or an existing corrector (never downloads)")
    t.add_argument("--recognizer", help="checkpoint whose charset the corrector is for (default: the reports' model)")
    t.add_argument("--resume", action="store_true", help="continue the training state in OUTPUT")
    for name, typ, help_text in (
            ("synthetic_ratio", float, "share of synthetic pairs when both kinds exist"),
            ("noise_scale", float, "multiplies the recogniser's error rates in synthetic noise"),
            ("base_rate", float, "extra random edits per character in synthetic noise"),
            ("max_pair_cer", float, "skip real pairs whose line CER is above this"),
            ("context_chars", int, "characters of the previous/next line in the input (0: none)"),
            ("max_length", int, "longest input/target in tokens (bytes)"),
            ("steps", int, "optimiser steps"), ("epochs", float, "passes over the data (overrides --steps)"),
            ("max_time", str, "stop after this training time, kept across --resume: seconds, 90m, 2h or "
             "DD:HH:MM:SS; the learning rate decays with whichever runs out first, steps or time"),
            ("batch_size", int, "pairs per step"), ("lr", float, "peak learning rate (AdamW)"),
            ("warmup", int, "warm-up steps"), ("weight_decay", float, "AdamW weight decay"),
            ("d_model", int, "model width"), ("layers", int, "encoder layers"),
            ("decoder_layers", int, "decoder layers (default: as --layers)"), ("heads", int, "attention heads"),
            ("d_ff", int, "feed-forward width"), ("dropout", float, "dropout"),
            ("val_fraction", float, "share of report pages held out for validation"),
            ("val_lines", int, "most validation lines"), ("eval_every", int, "validate every N steps (0: at the end)"),
            ("save_every", int, "write the resumable state every N steps"), ("log_every", int, "log every N steps"),
            ("gate_abs", int, "default gate: absolute edit bound"), ("gate_rel", float, "default gate: relative bound"),
            ("seed", int, "random seed"), ("device", str, "auto | cpu | cuda[:N]"),
            ("precision", str, "auto (bf16 autocast on GPUs that support it) | 32 | bf16-mixed (also on a CPU with "
             "native bfloat16)")):
        default = getattr(d, name)
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=typ,
                       help=f"{help_text} (default: {default if default is not None else 'see help'})")
    t.set_defaults(func=cmd_corrector_train)
    a = tools.add_parser("apply", help="correct the lines of an evaluate (or recognize) JSON report")
    a.add_argument("corrector", help="corrector folder")
    a.add_argument("report", help="`htrjand evaluate --json` report or `htrjand recognize --json` output")
    a.add_argument("--out", required=True, help="JSON file to write (lines get `corrected` and `correction`)")
    a.add_argument("--recognizer", help="checkpoint whose charset limits the output (default: the report's model)")
    a.add_argument("--gate-abs", type=int, help=f"accept at most max(ABS, REL * len) edits (default: the "
                   f"corrector's, {Gate.absolute} for new ones)")
    a.add_argument("--gate-rel", type=float, help=f"see --gate-abs (default: the corrector's, {Gate.relative} for new ones)")
    a.add_argument("--beams", type=int, default=1, help="beam size (default: 1, greedy)")
    a.add_argument("--batch-size", type=int, default=32, help="lines per batch (default: 32)")
    a.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    a.set_defaults(func=cmd_corrector_apply)



def _dataset_images(items: list[str] | None) -> list:
    """Line images from dataset specs (their samples) or image paths/folders."""
    if not items:
        return []
    from .datasets import Problems, read_dataset, spec_of

    images: list = []
    for item in items:
        if Path(item).is_dir() or Path(item).suffix.lower() in (".tsv", ".txt", ".xml", ".csv") or "?" in item:
            problems = Problems()
            images += read_dataset(spec_of(item), problems)
            if problems:
                print(f"{item}: {problems.summary()}", file=sys.stderr)
        else:
            images.append(item)
    return images


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    report = export(args.checkpoint, args.output, args.format, args.int8, verify=_dataset_images(args.verify)[:args.lines],
                    calibration=_dataset_images(args.calibration)[:args.calibration_lines])
    int8 = f" int8 ({report.int8})" if report.int8 else ""
    print(f"wrote {report.path}: {report.format}{int8}, {report.bytes / 1e6:.2f} MB, in {report.seconds:.1f} s")
    print(f"checked on {report.lines} {'given' if args.verify else 'rendered'} lines against PyTorch: "
          f"max |logit difference| {report.max_abs_diff:.2e}, identical transcriptions "
          f"{100 * report.text_agreement:.1f}%, CER against PyTorch {100 * report.cer_vs_torch:.2f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


def _add_export_command(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (dynamic width, optional int8) or TorchScript",
                       description="Write a deployable model whose file alone is enough to run it (charset and "
                       "preprocessing settings in its metadata; auxiliary training heads are not exported), "
                       "then check it against the PyTorch model. docs/deployment.md")
    p.add_argument("checkpoint", help="model checkpoint (.ckpt)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="(default: onnx)")
    p.add_argument("--int8", nargs="?", const="dynamic", choices=("dynamic", "static"),
                   help="quantise to int8: dynamic (linear layers, no data needed; the default of a bare --int8) "
                   "or static (convolutions too; needs --calibration)")
    p.add_argument("--output", help="file to write (default: the checkpoint's name with .onnx, .int8.onnx or .pt)")
    p.add_argument("--verify", nargs="+", help="datasets or line images to compare on (default: rendered lines)")
    p.add_argument("--lines", type=int, default=200, help="verification lines used at most (default: 200)")
    p.add_argument("--calibration", nargs="+", help="datasets or line images for static int8 calibration")
    p.add_argument("--calibration-lines", type=int, default=300, help="calibration lines used at most (default: 300)")
    p.add_argument("--json", help="write the export report to this JSON file")
    p.set_defaults(func=cmd_export)


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import FontWarning, build_generator, write_dataset

    with warnings.catch_warnings(record=True) as caught:  # fonts that fail to load: one line each
        warnings.simplefilter("always", FontWarning)
        try:
            generator = build_generator(args.text, args.fonts, args.seed, args.height, args.min_chars,
                                        args.max_chars, args.charset, args.strength)
        finally:
            for w in caught:
                print(f"htrjand: warning: {w.message}", file=sys.stderr)
    progress = None
    if sys.stderr.isatty():
        def progress(i: int, n: int) -> None:
            if i % 50 == 0 or i == n:
                print(f"\r{i}/{n} lines", end="" if i < n else "\n", file=sys.stderr)
    done = write_dataset(generator, args.out, args.lines, args.val_fraction, progress,
                         workers=args.workers or os.cpu_count() or 1)
    print(f"{done['lines']} lines ({done['train']} train, {done['val']} val) from {done['texts']} texts in "
          f"{len(done['lines_per_font'])} of {len(done['fonts'])} fonts written to {args.out} "
          f"({done['lines_per_second']} lines/s)")
    return 0


def _add_synth_command(sub) -> None:
    p = sub.add_parser("synth", help="render synthetic handwritten lines from text into a dataset (docs/synthetic.md)",
                       description="Draw text lines in handwriting fonts with random slant, baseline, spacing, "
                       "stroke, ink, paper and scan degradations; writes OUT/lines/*.png and OUT/train.tsv "
                       "(and OUT/val.tsv), which every dataset option reads.")
    p.add_argument("--text", nargs="+", required=True, help="text files (one line per line; text:PATH forces "
                   "plain text) or datasets whose transcriptions are used (TSV manifests, folders, FORMAT:PATH)")
    p.add_argument("--lines", type=int, default=1000, help="lines to render (default: 1000)")
    p.add_argument("--out", default="synth", help="output folder (default: synth)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same images (default: 0)")
    p.add_argument("--fonts", help="folder of .ttf/.otf/.woff/.woff2 fonts (default: the bundled handwriting fonts)")
    p.add_argument("--height", type=int, default=64, help="line image height in pixels (default: 64)")
    p.add_argument("--max-chars", type=int, help="re-cut the text at word boundaries into lines of --min-chars to "
                   "this many characters (default: lines as they are)")
    p.add_argument("--min-chars", type=int, help="shortest re-cut line (default: 10); without --max-chars: skip "
                   "shorter lines")
    p.add_argument("--val-fraction", type=float, default=0.0, help="share of the lines written to val.tsv (default: 0)")
    p.add_argument("--charset", help="UTF-8 file of the target characters: lines with others are skipped")
    p.add_argument("--workers", type=int, default=0, help="rendering processes (default: one per core; the "
                   "images do not depend on it)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="scale of the geometric variation and the page and scan effects (0: none; default: 1)")
    p.set_defaults(func=cmd_synth)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    report = Pipeline(args.config).run()
    print((Path(report["output"]) / "report.md").read_text(encoding="utf-8"))
    return 0


def _add_pipeline_command(sub) -> None:
    p = sub.add_parser("pipeline", help="multi-stage training from one config: synthetic pre-training, real data, "
                       "fine-tuning, a Student distilled per stage (docs/pipeline.md)",
                       description="Run the stages of a pipeline config in order, each from the previous stage's "
                       "best checkpoint; run it again to resume where it stopped.")
    p.add_argument("config", help="pipeline YAML (docs/pipeline.md; recipes/pipeline.yaml)")
    p.set_defaults(func=cmd_pipeline)


# Errors that carry a message for the user (module, class): caught only when their module was
# imported, so that commands which never load PyTorch (e.g. `recognize` on an ONNX file) stay light.
USER_ERRORS = (("charmap", "MappingError"), ("checkpoint", "CheckpointError"), ("config", "ConfigError"),
               ("datasets.sample", "DataError"), ("decoding", "DecodingError"), ("images", "ImageError"),
               ("lm", "LMError"), ("correction", "CorrectionError"), ("export", "ExportError"),
               ("runtime", "ModelFileError"), ("training.faults", "NumericalFault"),
               ("signals", "Stopped"))


def _user_errors() -> tuple[type, ...]:
    found = [getattr(sys.modules[f"htrjand.{m}"], name, None) for m, name in USER_ERRORS if f"htrjand.{m}" in sys.modules]
    return tuple(e for e in found if e is not None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("htrjand: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `htrjand recognize ... | head`: the reader stopped; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush must not fail again
        return 141
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        code = getattr(err, "exit_code", 2)  # a stop on a signal: 128 + its number, as the shell reports one
        print(f"htrjand: {'error: ' if code == 2 else ''}{err}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
