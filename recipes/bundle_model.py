"""Ship a trained Student as the package's bundled model (src/htrjand/models/student.ckpt).

Keeps what recognition needs (weights, charset, model and preprocessing settings, training metadata)
and drops the optimizer and loop state. Refuses a model whose corpus CER on the test data is not
lower than the bundled one's (--force to replace anyway), and checks the Student size limit.

    python recipes/bundle_model.py CKPT [--test ../shared/data/copiste/test.tsv ../shared/data/hooker/test.tsv] [--force]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from htrjand.checkpoint import atomic_save, read_checkpoint
from htrjand.datasets import Problems, read_datasets, spec_of
from htrjand.evaluation import evaluate
from htrjand.model import count_parameters
from htrjand.recognition import Recognizer
from htrjand.runtime import DEFAULT_MODEL

KEEP = ("epoch", "global_step", "state_dict", "hyper_parameters", "pytorch-lightning_version", "metrics")
MAX_PARAMETERS = 750_000


def test_cer(path: Path, samples) -> float:
    return evaluate(Recognizer.from_checkpoint(path), samples, batch_size=16)["overall"]["cer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--test", nargs="+", default=["../shared/data/copiste/test.tsv",
                                                      "../shared/data/hooker/test.tsv"])
    parser.add_argument("--force", action="store_true", help="replace the bundled model even if not better")
    args = parser.parse_args()
    ckpt = read_checkpoint(args.checkpoint)
    params = count_parameters(Recognizer.from_checkpoint(args.checkpoint).model)
    if params > MAX_PARAMETERS:
        sys.exit(f"{args.checkpoint}: {params:,} parameters, more than the Student's {MAX_PARAMETERS:,}")
    samples = read_datasets([spec_of(t) for t in args.test], Problems())
    new = test_cer(args.checkpoint, samples)
    if DEFAULT_MODEL.is_file() and not args.force:
        old = test_cer(DEFAULT_MODEL, samples)
        if new >= old:
            sys.exit(f"not bundled: test CER {100 * new:.2f}% is not lower than the bundled model's {100 * old:.2f}%")
    atomic_save({k: ckpt[k] for k in KEEP if k in ckpt}, DEFAULT_MODEL)
    print(f"bundled {args.checkpoint} as {DEFAULT_MODEL} ({params:,} parameters, test CER {100 * new:.2f}%, "
          f"{DEFAULT_MODEL.stat().st_size / 1e6:.1f} MB); update the model card and docs/results.md")


if __name__ == "__main__":
    main()
