"""Dataset readers: every format yields the same `Sample`; `read_dataset` picks the reader.

A reader is a module with `FORMAT` (its name), `detect(path) -> bool` (does this path look like
the format?) and `read(spec, problems) -> list[Sample]`. `READERS` lists them in detection order:
the first whose `detect` accepts a path reads it when the spec gives no format.
"""
from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from . import alto, bentham, folder, hf, iam, manifest, pagexml, rimes, saintgall, washington
from .sample import DataError, LineCrop, Problems, Sample
from .spec import DatasetSpec, parse_spec

__all__ = ["DataError", "DatasetSpec", "LineCrop", "Problems", "READERS", "Sample", "detect_format", "spec_of",
           "parse_spec", "read_dataset", "read_datasets"]

READERS: dict[str, ModuleType] = {m.FORMAT: m for m in (iam, rimes, bentham, washington, saintgall, hf,
                                                          pagexml, alto, manifest, folder)}


def spec_of(value: str | Path | dict | DatasetSpec) -> DatasetSpec:
    """Parse a dataset given as a string, path, mapping or spec, knowing the registered formats."""
    return parse_spec(value, tuple(READERS))


def detect_format(path: Path) -> str:
    """The first registered format whose `detect` accepts `path`."""
    if not path.exists() and not glob.has_magic(str(path)):  # a glob (pages/*.xml) is detected too
        raise DataError(f"{path}: no such manifest, folder or file")
    for name, reader in READERS.items():
        if reader.detect(path):
            return name
    raise DataError(f"{path}: cannot tell the dataset format (give it as FORMAT:PATH; "
                    f"known formats: {', '.join(READERS)})")


def read_dataset(value: str | Path | dict | DatasetSpec, problems: Problems | None = None,
                 name: str | None = None) -> list[Sample]:
    """Samples of one dataset (see `htrjand.datasets.spec` for the ways to name one)."""
    spec = spec_of(value)
    if name and not spec.name:
        spec.name = name
    problems = problems if problems is not None else Problems()
    fmt = spec.format if spec.format != "auto" else detect_format(spec.path)
    samples = READERS[fmt].read(spec, problems)
    if not spec.keep_empty:
        kept = []
        for s in samples:
            if s.text:
                kept.append(s)
            else:
                problems.add("empty transcription", s.source, "line has no transcription")
        samples = kept
    return samples


def read_datasets(values: Iterable[str | Path | dict | DatasetSpec], problems: Problems) -> list[Sample]:
    """Samples of several datasets, in order."""
    return [sample for value in values for sample in read_dataset(value, problems)]
