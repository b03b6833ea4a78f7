"""ICFHR 2014 HTRtS Bentham dataset (BenthamDatasetR0-GT).

Layout: `Images/Lines/<id>.png` line images, `Transcriptions/<id>.txt` one transcription each and
`Partitions/{TrainLines,ValidationLines,TestLines}.lst` line ids (ids such as `002_080_001_01_01`:
the first three parts name the page, which is the sample's `group`). Transcriptions carry XML
entities (`&amp;`) and `<gap/>` for illegible text; both are decoded/removed. The path may be the
GT folder or the folder it was unpacked into.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..charset import normalize_text
from .idlists import image_index, listed_or_all, read_pairs, unescape_entities
from .paths import Confinement
from .sample import DataError, Problems, Sample
from .spec import DatasetSpec

FORMAT = "bentham"
GT_DIR = "BenthamDatasetR0-GT"
PARTITIONS = {"train": "TrainLines.lst", "val": "ValidationLines.lst", "test": "TestLines.lst"}
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test"}
_GAP = re.compile(r"<gap\s*/>")


def _root(path: Path) -> Path | None:
    for root in (path, path / GT_DIR):
        if (root / "Images" / "Lines").is_dir() and (root / "Transcriptions").is_dir():
            return root
    return None


def detect(path: Path) -> bool:
    """A folder (or its parent) with Images/Lines and Transcriptions."""
    try:
        return path.is_dir() and _root(path) is not None
    except OSError:
        return False


def page_id(line_id: str) -> str:
    """`002_080_001_01_01` -> `002_080_001` (box, folio, page)."""
    parts = line_id.split("_")
    return "_".join(parts[:3]) if len(parts) > 3 else line_id


def decode(text: str) -> str:
    """A transcription file's text as plain text."""
    return normalize_text(unescape_entities(_GAP.sub(" ", text)))


def read(spec: DatasetSpec, problems: Problems) -> list[Sample]:
    root = _root(spec.path)
    if root is None:
        raise DataError(f"{spec.path}: no Bentham Images/Lines and Transcriptions folders here (or in {GT_DIR}/)")
    texts, images = root / "Transcriptions", image_index(root / "Images" / "Lines")
    list_path = None
    if spec.split:
        split = SPLIT_NAMES.get(spec.split.lower())
        if split is None:
            raise DataError(f"{spec.path}: Bentham has no split {spec.split!r} (use train, val or test)")
        list_path = root / "Partitions" / PARTITIONS[split]
        if not list_path.is_file():
            raise DataError(f"{spec.path}: Bentham partition list {list_path} not found")
    pairs = read_pairs(listed_or_all(list_path, texts), texts, images, problems, decode, Confinement.of(spec, FORMAT))
    return [Sample(image, text, spec.name or FORMAT, page_id(line_id), str(text_file), line_id=line_id)
            for line_id, image, text, text_file in pairs]
