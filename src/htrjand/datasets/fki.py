"""What the FKI (University of Bern) historical databases share: Washington and Saint Gall.

Both unpack to one folder (`washingtondb-v1.0/`, `saintgalldb-v1.0/`) holding
`ground_truth/transcription.txt` (a line id, a space, the encoded transcription and, for Saint Gall,
a space and the edition's word labels), `data/line_images_normalized/<line id>.png` and split lists
under `sets/`. A transcription spells each word character by character, pieces separated by `-`
and words by `|` (`L-e-t-t-e-r-s-s_cm|O-r-d-e-r-s`); a piece is one letter or a code of the
database. Each reader supplies the decoding of one piece; a piece it does not know rejects the
line with a `Problems` entry naming file and line, so no code ever reaches a label undecoded.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..charset import normalize_text
from .idlists import image_index, select_listed, text_lines
from .paths import Confinement
from .sample import DataError, Problems, Sample
from .spec import DatasetSpec

TRANSCRIPTION = Path("ground_truth") / "transcription.txt"
IMAGES = Path("data") / "line_images_normalized"
SPLIT_FILES = {"train": "train.txt", "training": "train.txt",
               "val": "valid.txt", "valid": "valid.txt", "validation": "valid.txt", "dev": "valid.txt",
               "test": "test.txt"}


class CodeError(ValueError):
    """A transcription piece the database's encoding does not define (the piece is the message)."""


@dataclass
class Record:
    line_id: str
    encoded: str
    lineno: int

    @property
    def page_id(self) -> str:
        return self.line_id.rsplit("-", 1)[0]


def find_root(path: Path, folder: str) -> Path | None:
    """The database folder for `path`: the folder itself, its `folder` subfolder (as unzipped), or
    the folder above `ground_truth/` when `path` is the transcription file; None if neither."""
    candidates = [path, path / folder]
    if path.name == TRANSCRIPTION.name and path.parent.name == TRANSCRIPTION.parent.name:
        candidates.insert(0, path.parent.parent)
    for root in candidates:
        try:
            if (root / TRANSCRIPTION).is_file():
                return root
        except OSError:
            continue
    return None


def first_line_id(root: Path) -> str:
    """Id of the first record of the transcription file ('' if unreadable); for cheap detection."""
    try:
        with (root / TRANSCRIPTION).open("rb") as f:
            for raw in f:
                if raw.strip():
                    return raw.split()[0].decode("utf-8", "replace").lstrip("\ufeff")
    except OSError:
        pass
    return ""


def decode(encoded: str, piece: Callable[[str], str]) -> str:
    """Words of `encoded` decoded piece by piece and joined by spaces. Empty pieces (from the
    `-|-` spelling of a word break) are skipped; `piece` raises `CodeError` for an unknown one."""
    words = []
    for word in encoded.split("|"):
        chars = [piece(p) for p in word.split("-") if p]
        if chars:
            words.append("".join(chars))
    return normalize_text(" ".join(words))


def read_transcriptions(path: Path, problems: Problems) -> dict[str, Record]:
    """Records of transcription.txt by line id, in file order; malformed ones go to `problems`."""
    records: dict[str, Record] = {}
    for lineno, where, line in text_lines(path, problems, "transcription file"):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2:
            problems.add("malformed record", where, f"line {fields[0]!r} has no transcription")
            continue
        line_id = fields[0]
        if "-" not in line_id:
            problems.add("malformed record", where, f"line id {line_id!r} is not PAGE-LINE")
            continue
        if line_id in records:
            problems.add("duplicate line", where, f"line {line_id} already given at line {records[line_id].lineno}")
            continue
        records[line_id] = Record(line_id, fields[1], lineno)
    return records


def select(records: dict[str, Record], list_path: Path, problems: Problems) -> list[Record]:
    """Records named by a split list (line ids or page ids), in its order."""
    return select_listed(records, lambda r: r.page_id, list_path, problems, "page of the transcription file")


def split_file(split: str, where: Path) -> str:
    """File name of a split list (`train.txt`, `valid.txt`, `test.txt`)."""
    name = SPLIT_FILES.get(split.lower())
    if name is None:
        raise DataError(f"{where}: unknown split {split!r} (use train, val or test)")
    return name


def check_options(spec: DatasetSpec, known: tuple[str, ...], fmt: str) -> None:
    unknown = sorted(set(spec.options) - set(known))
    if unknown:
        allowed = ", ".join(known) if known else "none"
        raise DataError(f"{spec.path}: unknown option(s) for {fmt}: {', '.join(unknown)} (known: {allowed})")


def read_lines(spec: DatasetSpec, problems: Problems, root: Path, sets: Path | None,
               piece: Callable[[str], str], name: str) -> list[Sample]:
    """Samples of the lines of `root` (all, or those of `sets/<split file>` when `spec.split` is set)."""
    transcription = root / TRANSCRIPTION
    records = read_transcriptions(transcription, problems)
    if spec.split and sets is not None:
        chosen = select(records, sets / split_file(spec.split, spec.path), problems)
    else:
        chosen = list(records.values())
    folder = root / IMAGES
    if not folder.is_dir():
        raise DataError(f"{folder}: line image folder not found")
    images = image_index(folder, (".png",))
    confine = Confinement.of(spec, name, root)  # `spec.path` may be the transcription file
    samples = []
    for record in chosen:
        where = f"{transcription}:{record.lineno}"
        try:
            text = decode(record.encoded, piece)
        except CodeError as err:
            problems.add("unknown code", where, f"line {record.line_id}: unknown character code {str(err)!r}")
            continue
        image = images.get(record.line_id)
        if image is None:
            problems.add("missing image", where, f"image {folder / (record.line_id + '.png')} not found")
            continue
        if confine.refuse(image, problems, where):
            continue
        samples.append(Sample(image, text, spec.name or name, record.page_id, where, line_id=record.line_id))
    return samples
