"""George Washington database (washingtondb-v1.0, FKI Bern): 20 letterbook pages of 1755, 656 lines.

`ground_truth/transcription.txt` holds `270-01 s_2-s_7-s_0-|-L-e-t-t-e-r-s-s_cm-|-...`: the line
id (page 270, line 01), then the line spelled character by character (`-`) and word by word
(`|`); special characters are `s_` codes (`CODES`, digits `s_0`..`s_9` and ordinals such as `s_1st`,
`s_2nd`, `s_8th`, whose suffix is written as part of the number). Images are
`data/line_images_normalized/270-01.png`. Splits are the four cross-validation folds
`sets/cv1..cv4/{train,valid,test}.txt` (line ids): `washington:PATH?split=test&fold=cv3`
(`fold` defaults to cv1). The group of a line is its page id.
"""
from __future__ import annotations

import re
from pathlib import Path

from . import fki
from .sample import DataError, Problems, Sample
from .spec import DatasetSpec

FORMAT = "washington"
FOLDER = "washingtondb-v1.0"
OPTIONS = ("fold",)

# Every non-digit code of the database (the set PyLaia's recipe and other readers of the full
# transcription use). `s_s` is the long s written before a round s ("unleſs"); the configurable
# character mapping folds it to "s" by default.
CODES = {
    "s_pt": ".", "s_cm": ",", "s_mi": "-", "s_sq": ";", "s_qo": ":", "s_qt": "'",
    "s_et": "&", "s_lb": "£", "s_bl": "(", "s_br": ")", "s_sl": "/",
    "s_s": "\u017f", "s_GW": "G.W.",
}
NUMBER = re.compile(r"s_(\d(?:st|nd|rd|th)?)")  # s_7 -> 7, s_1st -> 1st, s_1th (in "11th") -> 1th


def piece(p: str) -> str:
    """One piece of a transcription: a letter, a symbol code, a digit or an ordinal digit."""
    if p in CODES:
        return CODES[p]
    number = NUMBER.fullmatch(p)
    if number:
        return number.group(1)
    if len(p) == 1 and p.isalpha():
        return p
    raise fki.CodeError(p)


def detect(path: Path) -> bool:
    """A washingtondb folder (or its parent, or its transcription file): transcription + cv folds."""
    root = fki.find_root(path, FOLDER)
    try:
        return root is not None and (root / "sets" / "cv1").is_dir()
    except OSError:
        return False


def fold_folder(spec: DatasetSpec, root: Path) -> Path:
    fold = spec.option("fold", "cv1").strip().lower()
    fold = f"cv{fold}" if fold.isdigit() else fold
    folder = root / "sets" / fold
    if not folder.is_dir():
        known = sorted(p.name for p in (root / "sets").glob("cv*") if p.is_dir())
        raise DataError(f"{spec.path}: no fold {fold!r} in {root / 'sets'} (known: {', '.join(known) or 'none'})")
    return folder


def read(spec: DatasetSpec, problems: Problems) -> list[Sample]:
    fki.check_options(spec, OPTIONS, FORMAT)
    root = fki.find_root(spec.path, FOLDER)
    if root is None:
        raise DataError(f"{spec.path}: no Washington database here (ground_truth/transcription.txt not found)")
    sets = fold_folder(spec, root) if spec.split else None
    return fki.read_lines(spec, problems, root, sets, piece, FORMAT)
