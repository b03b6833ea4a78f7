"""IAM Handwriting Database, line level: `ascii/lines.txt` + `lines/a01/a01-000u/a01-000u-00.png`.

A lines.txt record is `a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from`:
line id, word segmentation `ok`/`err`, graylevel, number of components, box x y w h, then the
transcription, which is everything after the 8th field (a few tokens hold spaces, e.g. `B B C`);
`|` separates words and is read as a space (XML entities such as `&quot;`, which some copies carry,
are decoded). The writer of each form comes from `ascii/forms.txt`.

Splits (`split=train|val|test`, `scheme=aachen|official`):
- aachen (default): the RWTH Aachen split used by most papers (6,482 / 976 / 2,915 lines),
  distributed as `splits/{train,validation,test}.uttlist` (openslr.org/56), which list FORM ids;
  PyLaia's `tr.lst`/`va.lst`/`te.lst`, which list LINE ids, are read too.
- official: the "Large Writer Independent Text Line Recognition Task"
  (`largeWriterIndependentTextLineRecognitionTask/{trainset,validationset1,validationset2,testset}.txt`,
  line ids); `val` is validationset1, `val2` validationset2.
Entries of a list may be line ids or form ids (a form id selects all its lines). `splits=PATH` names
the folder holding the list files, or the list file itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..charset import normalize_text
from .idlists import first_existing, select_listed, text_lines, unescape_entities
from .paths import Confinement, is_file
from .sample import DataError, Problems, Sample
from .spec import DatasetSpec

FORMAT = "iam"
SCHEMES = ("aachen", "official")
SPLIT_NAMES = {"train": "train", "training": "train", "tr": "train",
               "val": "val", "valid": "val", "validation": "val", "va": "val",
               "val1": "val", "valid1": "val", "validation1": "val", "validationset1": "val",
               "val2": "val2", "valid2": "val2", "validation2": "val2", "validationset2": "val2",
               "test": "test", "te": "test"}
SPLIT_FILES = {
    "aachen": {"train": ("train.uttlist", "tr.lst", "train.lst"),
               "val": ("validation.uttlist", "va.lst", "valid.lst", "val.lst"),
               "test": ("test.uttlist", "te.lst", "test.lst")},
    "official": {"train": ("trainset.txt",), "val": ("validationset1.txt",),
                 "val2": ("validationset2.txt",), "test": ("testset.txt",)},
}
SPLIT_DIRS = {"aachen": ("splits", "aachen", "."),
              "official": ("largeWriterIndependentTextLineRecognitionTask", "task", "splits", ".")}
STATUSES = ("ok", "err")
_RECORD = re.compile(r"\S+ (?:ok|err) -?\d+ -?\d+ -?\d+ -?\d+ -?\d+ -?\d+ ")


@dataclass
class Line:
    line_id: str
    form_id: str
    status: str
    text: str
    lineno: int


def _lines_txt(path: Path) -> Path | None:
    candidate = path / "ascii" / "lines.txt" if path.is_dir() else path
    return candidate if candidate.is_file() else None


def detect(path: Path) -> bool:
    """A folder holding `ascii/lines.txt`, or a lines.txt whose first records are IAM records."""
    try:
        if path.is_dir():
            return (path / "ascii" / "lines.txt").is_file()
        if not path.is_file() or path.name.lower() != "lines.txt":
            return False
        with path.open("rb") as f:
            head = f.read(8192)
        rows = head.decode("utf-8", "replace").splitlines()
        rows = rows[:-1] if len(head) == 8192 else rows  # the last row may be cut
        records = [ln for ln in rows if ln.strip() and not ln.startswith("#")]
        return bool(records) and all(_RECORD.match(ln) for ln in records[:5])
    except OSError:
        return False


def _root(lines_txt: Path) -> Path:
    return lines_txt.parent.parent if lines_txt.parent.name == "ascii" else lines_txt.parent


def read_lines_txt(path: Path, problems: Problems) -> dict[str, Line]:
    """Records of lines.txt by line id, in file order; malformed records go to `problems`."""
    lines: dict[str, Line] = {}
    for lineno, where, line in text_lines(path, problems, "IAM lines.txt"):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(maxsplit=8)
        if len(fields) < 9:
            problems.add("malformed record", where,
                         f"expected 8 fields and a transcription, got {len(fields)} fields")
            continue
        line_id, status, numbers, transcription = fields[0], fields[1], fields[2:8], fields[8]
        if status not in STATUSES:
            problems.add("malformed record", where, f"segmentation status {status!r} is neither ok nor err")
            continue
        if not all(re.fullmatch(r"-?\d+", n) for n in numbers):
            problems.add("malformed record", where, f"graylevel, components and box must be integers: {' '.join(numbers)}")
            continue
        if line_id.count("-") < 2:
            problems.add("malformed record", where, f"line id {line_id!r} is not FORM-LINE (e.g. a01-000u-00)")
            continue
        if line_id in lines:
            problems.add("duplicate line", where, f"line {line_id} already given at line {lines[line_id].lineno}")
            continue
        text = normalize_text(unescape_entities(transcription.replace("|", " ")))
        lines[line_id] = Line(line_id, line_id.rsplit("-", 1)[0], status, text, lineno)
    return lines


def read_writers(path: Path, problems: Problems) -> dict[str, str]:
    """Writer id of each form from forms.txt (`a01-000u 000 2 prt 7 5 52 36`); {} when absent."""
    if not path.is_file():
        return {}
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as err:
        raise DataError(f"{path}: cannot read IAM forms.txt ({err.strerror})") from None
    writers = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdigit():
            problems.add("malformed record", f"{path}:{lineno}", "expected a form id and a numeric writer id")
            continue
        writers[fields[0]] = fields[1]
    return writers


def split_list(spec: DatasetSpec, root: Path) -> Path | None:
    """The list file that selects `spec.split` (None: all lines)."""
    scheme = spec.option("scheme", "aachen").lower()
    if scheme not in SCHEMES:
        raise DataError(f"{spec.path}: unknown IAM split scheme {scheme!r} (use {' or '.join(SCHEMES)})")
    given = spec.option("splits")
    given_path = Path(given).expanduser() if given else None
    if given_path is not None and not given_path.is_absolute() and not given_path.exists():
        given_path = root / given_path
    if given_path is not None and given_path.is_file():
        return given_path  # the list itself, whatever the split's name
    if not spec.split:
        return None
    split = SPLIT_NAMES.get(spec.split.lower())
    names = SPLIT_FILES[scheme].get(split or "")
    if names is None:
        known = ", ".join(SPLIT_FILES[scheme])
        raise DataError(f"{spec.path}: IAM {scheme} scheme has no split {spec.split!r} (known: {known})")
    if given_path is not None:
        if not given_path.is_dir():
            raise DataError(f"{spec.path}: splits={given}: no such folder or file")
        folders = [given_path]
    else:
        folders = [root / d if d != "." else root for d in SPLIT_DIRS[scheme]]
    for folder in folders:
        found = first_existing(folder, names)
        if found:
            return found
    raise DataError(f"{spec.path}: no IAM {scheme} list for split {split!r} (looked for {', '.join(names)} "
                    f"in {', '.join(str(f) for f in folders)}); give its folder or file with splits=PATH")


def _select(lines: dict[str, Line], list_path: Path, problems: Problems) -> list[Line]:
    return select_listed(lines, lambda line: line.form_id, list_path, problems, "form of lines.txt")


def read(spec: DatasetSpec, problems: Problems) -> list[Sample]:
    lines_txt = _lines_txt(spec.path)
    if lines_txt is None:
        raise DataError(f"{spec.path}: no IAM ascii/lines.txt here")
    root = _root(lines_txt)
    status = spec.option("status", "all").lower()
    if status not in ("all", "ok"):
        raise DataError(f"{spec.path}: IAM status must be all or ok, got {status!r}")
    images = Path(spec.option("images")).expanduser() if spec.option("images") else root / "lines"
    confine = Confinement.of(spec, FORMAT, root, images)  # `images=DIR` is the user's choice
    lines = read_lines_txt(lines_txt, problems)
    writers = read_writers(lines_txt.parent / "forms.txt", problems)
    list_path = split_list(spec, root)
    selected = _select(lines, list_path, problems) if list_path else list(lines.values())
    samples = []
    for line in selected:
        if status == "ok" and line.status != "ok":
            continue
        image = images / line.form_id.split("-")[0] / line.form_id / f"{line.line_id}.png"
        where = f"{lines_txt}:{line.lineno}"
        if confine.refuse(image, problems, where):
            continue
        if not is_file(image):
            problems.add("missing image", where, f"image {image} not found")
            continue
        samples.append(Sample(image, line.text, spec.name or FORMAT, writers.get(line.form_id, line.form_id),
                              where, line_id=line.line_id))
    return samples
