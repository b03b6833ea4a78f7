"""Test-time augmentation: CER and lines/s of a model reading each line 1, 3 or 5 times (shifted up
and down, log-probabilities averaged: `--tta`) at 1, 3, 5 or 7 widths (the most confident reading kept:
`--scales`), with greedy decoding and, given `--lm`, flashlight beam + LM (and with `--lexicon` the
Python beam + LM + lexicon).

Every setting reads the same test lines in one process, taking turns, so the speeds compare side by
side; lines/s count the model and the decoder. Writes benchmarks/results/NAME.{json,md} (default: tta).

    python benchmarks/tta.py [CKPT ...] --data TEST... [--lm LM.arpa --alpha A --beta B [--lexicon WORDS
        --oov-penalty P]] [--tta 1,3,5] [--scales 1,3] [--threads 2] [--name tta]
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import shlex
import sys
from pathlib import Path

from machine import cpu_model, write_results  # benchmarks/machine.py


def to_markdown(report: dict) -> str:
    names = list(report["rows"][0]["datasets"])
    rows = ["| model | tta | scales | decoder | " + " | ".join(f"{n} CER %" for n in names) + " | all CER % | "
            "all WER % | lines/s with the model | x one reading's time |",
            "|---|---|---|---|" + "---|" * (len(names) + 4)]
    base = {(r["model"], r["decoder"]): r["lines_per_second"] for r in report["rows"]
            if r["tta"] == 1 and r.get("scales", 1) == 1}
    for r in report["rows"]:
        slower = base[(r["model"], r["decoder"])] / r["lines_per_second"] if (r["model"], r["decoder"]) in base else 0
        rows.append(f"| {r['model']} | {r['tta']} | {r.get('scales', 1)} | {r['decoder']} | "
                    + " | ".join(f"{100 * r['datasets'][n]['cer']:.2f}" for n in names)
                    + f" | {100 * r['cer']:.2f} | {100 * r['wer']:.2f} | {r['lines_per_second']:.1f} | {slower:.2f} |")
    return "\n".join([
        "# Test-time augmentation: the line read 1, 3 or 5 times, at 1 or more widths", "",
        f"{report['date']}, {report['cpu']}, {report['threads']} threads, torch {report['torch']}; "
        f"{report['lines']} test lines from {', '.join(report['data'])}; batch {report['batch']}.", "",
        *rows, "",
        "tta 3: the line and its copies moved up and down by 1/32 of the input height (2 pixels at height 64); "
        "tta 5 adds 2/32. The frames' log-probabilities are averaged, then decoded as usual. Lines/s count the "
        "model and the decoder, each setting timed once in the same process (rough ratios on a shared machine). "
        "scales 3: each line also read 0.8 and 1.25 times as wide, the reading with the most confident greedy "
        "characters kept (5 adds 0.9 and 1.12, 7 also 0.7 and 1.4; runtime.SCALE_PRESETS) and then decoded.",
        "", f"Command: `{report['command']}`", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*", help="models (default: the bundled Student)")
    parser.add_argument("--data", nargs="+", required=True, help="test datasets")
    parser.add_argument("--lm", help="ARPA character LM for a flashlight beam + LM row")
    parser.add_argument("--alpha", type=float)
    parser.add_argument("--beta", type=float)
    parser.add_argument("--lexicon", help="word list for a Python beam + LM + lexicon row (with --lm)")
    parser.add_argument("--oov-penalty", type=float, default=1.0)
    parser.add_argument("--beam-width", type=int, default=16)
    parser.add_argument("--tta", default="1,3,5", help="settings to compare (default: 1,3,5)")
    parser.add_argument("--scales", default="1", help="width-scale presets to compare (default: 1)")
    parser.add_argument("--name", default="tta", help="results file name (default: tta)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    import torch

    from htrjand import load
    from htrjand.datasets import Problems, read_datasets
    from htrjand.evaluation import evaluate_decoders

    torch.set_num_threads(args.threads)
    samples = read_datasets(args.data, Problems())
    rows = []
    for path in args.checkpoints or [None]:
        for tta, scales in itertools.product(map(int, args.tta.split(",")), map(int, args.scales.split(","))):
            reader = load(path, tta=tta, scales=scales)
            name = Path(path).name if path else "bundled Student"
            decoders = [reader.make_decoder("greedy")]
            if args.lm:
                decoders.append(reader.make_decoder("beam", lm=args.lm, engine="flashlight", alpha=args.alpha,
                                                    beta=args.beta, beam_width=args.beam_width))
                if args.lexicon:
                    decoders.append(reader.make_decoder("beam", lm=args.lm, alpha=args.alpha, beta=args.beta,
                                                        beam_width=args.beam_width, lexicon=args.lexicon,
                                                        oov_penalty=args.oov_penalty))
            reader.recognize(samples[:args.batch], batch_size=args.batch)  # warm-up
            reports, _ = evaluate_decoders(reader, samples, decoders, args.batch)
            for decoder, report in zip(decoders, reports):
                rows.append({"model": name, "parameters": reader.parameters, "tta": tta, "scales": scales,
                             "decoder": decoder.name,
                             "cer": report["overall"]["cer"], "wer": report["overall"]["wer"],
                             "lines_per_second": report["lines_per_second"],
                             "datasets": {n: {"cer": d["cer"], "wer": d["wer"]} for n, d in report["datasets"].items()}})
                print(f"{name} tta {tta} scales {scales} {decoder.name}: CER {100 * rows[-1]['cer']:.2f}% "
                      f"{rows[-1]['lines_per_second']:.1f} lines/s", flush=True)
    report = {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "threads": args.threads,
              "torch": torch.__version__, "data": args.data, "lines": len(samples), "batch": args.batch,
              "rows": rows, "command": "python benchmarks/tta.py " + shlex.join(sys.argv[1:])}
    write_results(args.out, args.name, report, to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
