"""Saint Gall database (saintgalldb-v1.0, FKI Bern): Codex Sangallensis 562, 9th-century Latin, 60
pages, 1,410 lines, one writer.

`ground_truth/transcription.txt` holds `csg562-003-01 v-e-r-s-a-t-i-o|p-e-r|...|h-a-b-e-r-e-t-u-r-pt
conversatio|per|...`: the line id (manuscript csg562, page 003, line 01), the line as the
manuscript spells it, letter by letter (`-`) and word by word (`|`), then the normalised word labels
of the printed edition, which are ignored. Besides letters the spelling has two codes (`CODES`):
`pt`, a punctuation mark (usually a dot between words), and `et`, the et sign written `&` (also
inside words: `n-a-s-c-e-r-et-u-r`). Images are `data/line_images_normalized/csg562-003-01.png`;
`sets/{train,valid,test}.txt` list page ids (`split=train|val|test`). The group of a line is its page.
"""
from __future__ import annotations

from pathlib import Path

from . import fki
from .sample import DataError, Problems, Sample
from .spec import DatasetSpec

FORMAT = "saintgall"
FOLDER = "saintgalldb-v1.0"
CODES = {"pt": ".", "et": "&"}


def piece(p: str) -> str:
    """One piece of a spelling: a letter or one of `CODES`."""
    if p in CODES:
        return CODES[p]
    if len(p) == 1 and p.isalpha():
        return p
    raise fki.CodeError(p)


def detect(path: Path) -> bool:
    """A saintgalldb folder (or its parent, or its transcription file): sets/train.txt and csg ids."""
    root = fki.find_root(path, FOLDER)
    try:
        return (root is not None and (root / "sets" / "train.txt").is_file()
                and fki.first_line_id(root).startswith("csg"))
    except OSError:
        return False


def read(spec: DatasetSpec, problems: Problems) -> list[Sample]:
    fki.check_options(spec, (), FORMAT)
    root = fki.find_root(spec.path, FOLDER)
    if root is None:
        raise DataError(f"{spec.path}: no Saint Gall database here (ground_truth/transcription.txt not found)")
    return fki.read_lines(spec, problems, root, root / "sets", piece, FORMAT)
