"""Ship a trained Student as the package's bundled model (src/htrjand/models/student.ckpt).

Keeps what recognition needs (weights, charset, model and preprocessing settings, training metadata)
and drops the optimizer and loop state. Refuses a model whose corpus CER on the test data is not
lower than the bundled one's (--force to replace anyway), and checks the Student size limit. Then
writes the figures tests/test_bundled_model.py checks into src/htrjand/models/student.json (test
CER/WER per dataset, the first 100 lines of each, the example lines); the card's prose and the
"trained" section are yours to update (--name, --trained KEY=VALUE).

    python recipes/bundle_model.py CKPT [--test ../shared/data/copiste/test.tsv ../shared/data/hooker/test.tsv]
        [--name TEXT] [--trained KEY=VALUE ...] [--force]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from htrjand.checkpoint import slim_checkpoint
from htrjand.datasets import Problems, read_datasets, spec_of
from htrjand.evaluation import evaluate
from htrjand.model import count_parameters
from htrjand.recognition import Recognizer
from htrjand.runtime import DEFAULT_MODEL

MAX_PARAMETERS = 750_000
CARD = DEFAULT_MODEL.with_suffix(".json")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "lines.tsv"
CHECK_LINES = 100


def test_cer(path: Path, samples) -> float:
    return evaluate(Recognizer.from_checkpoint(path), samples, batch_size=16)["overall"]["cer"]


def figures(reader: Recognizer, samples: list, report: dict) -> dict:
    """What the card states and the tests check, from the test `report` of `reader` on `samples`:
    per test split (all lines, and its first CHECK_LINES), and the README's example lines."""
    out: dict = {"test": {name: {"lines": t["lines"], "cer": round(t["cer"], 4), "wer": round(t["wer"], 4)}
                          for name, t in report["datasets"].items()},
                 "check": {"what": f"the first {CHECK_LINES} lines of each test split "
                                   "(tests/test_bundled_model.py: within 1 CER point)"}}
    for name in report["datasets"]:
        first = [s for s in samples if s.dataset == name][:CHECK_LINES]
        c = evaluate(reader, first, batch_size=16)["overall"]
        out["check"][name] = {"lines": c["lines"], "cer": round(c["cer"], 4)}
    e = evaluate(reader, read_datasets([spec_of(str(EXAMPLES))], Problems()), batch_size=16)["overall"]
    out["examples"] = {"what": "examples/lines.tsv: 6 lines rendered by `htrjand synth` (README's first command)",
                       "lines": e["lines"], "cer": round(e["cer"], 4), "wer": round(e["wer"], 4)}
    return out


def _value(text: str):
    """A number or JSON value as such, anything else as the text given."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--test", nargs="+", default=["../shared/data/copiste/test.tsv",
                                                      "../shared/data/hooker/test.tsv"])
    parser.add_argument("--force", action="store_true", help="replace the bundled model even if not better")
    parser.add_argument("--name", help="the card's model name")
    parser.add_argument("--trained", nargs="*", default=[], metavar="KEY=VALUE",
                        help="entries of the card's 'trained' section (hardware, command, epochs, ...)")
    args = parser.parse_args()
    reader = Recognizer.from_checkpoint(args.checkpoint)
    params = count_parameters(reader.model)
    if params > MAX_PARAMETERS:
        sys.exit(f"{args.checkpoint}: {params:,} parameters, more than the Student's {MAX_PARAMETERS:,}")
    samples = read_datasets([spec_of(t) for t in args.test], Problems())
    report = evaluate(reader, samples, batch_size=16)
    new = report["overall"]["cer"]
    if DEFAULT_MODEL.is_file() and not args.force:
        old = test_cer(DEFAULT_MODEL, samples)
        if new >= old:
            sys.exit(f"not bundled: test CER {100 * new:.2f}% is not lower than the bundled model's {100 * old:.2f}%")
    slim_checkpoint(args.checkpoint, DEFAULT_MODEL, digest=False)
    card = json.loads(CARD.read_text(encoding="utf-8")) if CARD.is_file() else {"model": DEFAULT_MODEL.name}
    card.update(parameters=params, input_height=reader.height, charset_size=len(reader.charset),
                **figures(reader, samples, report))  # the bundled file holds the same weights
    if args.name:
        card["name"] = args.name
    for item in args.trained:
        key, _, value = item.partition("=")
        card.setdefault("trained", {})[key] = _value(value)
    CARD.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"bundled {args.checkpoint} as {DEFAULT_MODEL} ({params:,} parameters, test CER {100 * new:.2f}%, "
          f"{DEFAULT_MODEL.stat().st_size / 1e6:.1f} MB); figures written to {CARD}; update the model card's "
          "prose (student.md), README and docs/results.md")


if __name__ == "__main__":
    main()
