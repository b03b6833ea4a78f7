"""Dataset readers: every format yields the same `Sample`; `read_dataset` picks the reader by path."""
from __future__ import annotations

from pathlib import Path

from .folder import read_folder
from .manifest import read_manifest
from .sample import DataError, Problems, Sample

__all__ = ["DataError", "Problems", "Sample", "read_dataset", "read_datasets", "read_folder", "read_manifest"]


def read_dataset(path: str | Path, problems: Problems | None = None, name: str | None = None) -> list[Sample]:
    """Samples of a TSV manifest (`path<TAB>text`) or a folder of `image` + `image.gt.txt` files."""
    path = Path(path)
    problems = problems if problems is not None else Problems()
    if path.is_dir():
        return read_folder(path, problems, name)
    if path.is_file():
        return read_manifest(path, problems, name)
    raise DataError(f"{path}: no such manifest or folder")


def read_datasets(paths: list[str | Path], problems: Problems) -> list[Sample]:
    """Samples of several manifests or folders, in order."""
    return [sample for path in paths for sample in read_dataset(path, problems)]
