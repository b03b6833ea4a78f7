"""Epoch time of the training data pipeline with and without the decoded-line cache.

Iterates the training DataLoader (width-bucketed batches, padding, collation, augmentation as
configured; no model) over real lines from ../shared/data, for two epochs per setting:
cache off (every epoch decodes JPEGs and, for page lines, crops and masks polygons) against the
in-memory cache (decoded once before the first epoch). Both settings run in this one process, side
by side. Writes benchmarks/results/data_loading.{json,md}.

    python benchmarks/data_loading.py [--data ../shared/data] [--workers 2] [--augment 0 1] [--limit 0]
"""
from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

from machine import cpu_model, write_results  # benchmarks/machine.py


def load(data: Path, limit: int):
    from htrjand.charset import Charset
    from htrjand.datasets import Problems, read_dataset

    samples = [s for name in ("copiste", "hooker") for s in read_dataset(data / name / "train.tsv")]
    # real page lines too: every PAGE/ALTO page of pages/, repeated so that they weigh in
    pages = read_dataset(data / "pages" / "page") + read_dataset(f"{data / 'pages' / 'alto'}?types=handwritten,default")
    if limit:
        samples = samples[:limit]
    samples += pages * 10
    return samples, Charset.from_texts(s.text for s in samples), Problems(), len(pages)


def epochs(samples, charset, problems, cache: str, workers: int, augment: float, n_epochs: int = 2) -> dict:
    from htrjand.training.data import LineDataModule, cache_lines, prepare_samples

    started = time.perf_counter()
    prepared = prepare_samples(samples, charset, 64, 8, 4096, problems)
    prepared = cache_lines(prepared, 64, 4096, cache, Path("/tmp/htrjand-bench-cache"), 4.0, workers, problems)
    setup = time.perf_counter() - started
    dm = LineDataModule(prepared, prepared, charset, 64, 8, 16, 0, workers, augment, 4096, 0)
    times = []
    for epoch in range(n_epochs):
        loader = dm.train_dataloader()
        loader.batch_sampler.set_epoch(epoch)
        t = time.perf_counter()
        lines = sum(len(batch["widths"]) for batch in loader if "widths" in batch)
        times.append(time.perf_counter() - t)
    return {"cache": cache, "augment": augment, "lines": lines, "setup_seconds": round(setup, 2),
            "epoch_seconds": [round(x, 2) for x in times],
            "cache_mb": round(prepared.cache.nbytes / 2**20, 1) if prepared.cache is not None else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--augment", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--limit", type=int, default=0, help="use only the first N manifest lines (0 = all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    samples, charset, problems, n_pages = load(args.data, args.limit)
    load_before = os.getloadavg()[0]
    rows = [epochs(samples, charset, problems, cache, args.workers, augment)
            for augment in args.augment for cache in ("off", "memory")]
    result = {"date": datetime.date.today().isoformat(), "machine": cpu_model(),
              "workers": args.workers, "lines": len(samples), "page_lines": n_pages * 10, "rows": rows,
              "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)]}
    md = [f"# Data loading: epoch time with and without the line cache ({result['date']})", "",
          f"{len(samples)} training lines (copiste + hooker train, plus {n_pages} real PAGE/ALTO page lines x10, "
          f"cut and masked from their pages), batch 16, {args.workers} loader workers, no model; "
          "both settings measured in one run (`python benchmarks/data_loading.py`); 1-minute load average "
          f"{result['load_average'][0]} at the start and {result['load_average'][1]} at the end (2 cores).", "",
          "| augment | cache | setup s (decode once) | epoch 1 s | epoch 2 s | cache MB | epoch 2 speed-up |",
          "|---|---|---|---|---|---|---|"]
    for augment in args.augment:
        off, mem = [r for r in rows if r["augment"] == augment]
        for r in (off, mem):
            speed = off["epoch_seconds"][1] / r["epoch_seconds"][1]
            md.append(f"| {augment:g} | {r['cache']} | {r['setup_seconds']} | {r['epoch_seconds'][0]} | "
                      f"{r['epoch_seconds'][1]} | {r['cache_mb']} | {speed:.2f}x |")
    write_results(args.out, "data_loading", result, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
