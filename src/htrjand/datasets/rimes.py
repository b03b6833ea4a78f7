"""RIMES, line level, in either of its two distributions.

1. ICDAR 2011 line competition (A2iA): `training_2011.xml` and `eval_2011_annotated.xml`, each a
   `<DocumentList>` of `<SinglePage FileName="images/train2011-0.png">` holding a `<Paragraph>` of
   `<Line Left= Top= Right= Bottom= Value=>` boxes on the page image. Page images come from
   `training_2011_gray.tar`/`eval_2011_gray.tar` (`images_gray/train2011-0.png`) or the colour tars
   (`training_2011/images/...`). Lines are cut from the page (`Sample.crop`). `¤`, an annotation
   mark that is not written on the pages, is removed. PyLaia's corrected `training_2011.patched.xml`
   is preferred when present. Splits: train = training_2011, test = eval_2011; the competition has
   no validation set: `val_pages=N` moves the N last training pages (by page number) to `val`
   (VAN uses 100).
2. RIMES-2011-Lines (Teklia's release): `Images/<id>.jpg`, `Transcriptions/<id>.txt` and
   `Sets/{TrainLines,ValidationLines,TestLines}.txt`, ids such as `train2011-589_000005`.

`group` is the letter (page) a line comes from, e.g. `train2011-589`.
"""
from __future__ import annotations

import re
from pathlib import Path

from lxml import etree

from ..charset import normalize_text
from .geometry import MAX_COORDINATE
from .idlists import first_existing, image_index, listed_or_all, read_pairs
from .paths import KIND, Confinement, is_file
from .sample import DataError, LineCrop, Problems, Sample
from .spec import DatasetSpec
from .xml import local, parse_xml

FORMAT = "rimes"
TRAIN_XML = ("training_2011.patched.xml", "training_2011.xml")
TEST_XML = ("eval_2011_annotated.xml",)
LINES_DIR = "RIMES-2011-Lines"
SET_FILES = {"train": "TrainLines.txt", "val": "ValidationLines.txt", "test": "TestLines.txt"}
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "eval": "test", "evaluation": "test"}
NOT_WRITTEN = "¤"
_RIMES_ID = re.compile(rb"^\s*(?:train|eval)2011-\d+")


def _lines_root(path: Path) -> Path | None:
    for root in (path, path / LINES_DIR):
        if (root / "Transcriptions").is_dir() and (root / "Images").is_dir() and (root / "Sets").is_dir():
            return root
    return None


def _xml_files(path: Path) -> tuple[Path | None, Path | None]:
    return first_existing(path, TRAIN_XML), first_existing(path, TEST_XML)


def _is_rimes_xml(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4096)
    return b"<DocumentList" in head and b"<SinglePage" in head


def detect(path: Path) -> bool:
    """A folder with the ICDAR 2011 XML files or RIMES-2011-Lines' Sets, or one RIMES XML file."""
    try:
        if path.is_file():
            return path.suffix.lower() == ".xml" and _is_rimes_xml(path)
        if not path.is_dir():
            return False
        if any(_xml_files(path)):
            return True
        root = _lines_root(path)
        if root is None:
            return False
        for name in SET_FILES.values():
            if (root / "Sets" / name).is_file():
                with (root / "Sets" / name).open("rb") as f:
                    return bool(_RIMES_ID.match(f.readline()))
        return False
    except OSError:
        return False


def _split(spec: DatasetSpec) -> str:
    if not spec.split:
        return ""
    split = SPLIT_NAMES.get(spec.split.lower())
    if split is None:
        raise DataError(f"{spec.path}: RIMES has no split {spec.split!r} (use train, val or test)")
    return split


def read(spec: DatasetSpec, problems: Problems) -> list[Sample]:
    split = _split(spec)
    if spec.path.is_file():
        if split:
            raise DataError(f"{spec.path}: give the RIMES folder, not one XML file, to select a split")
        return read_xml(spec.path, problems, spec.name or FORMAT, _images_option(spec), _confinement(spec))
    train_xml, test_xml = _xml_files(spec.path)
    if train_xml or test_xml:
        return _read_competition(spec, split, train_xml, test_xml, problems)
    root = _lines_root(spec.path)
    if root is None:
        raise DataError(f"{spec.path}: no RIMES files here (expected {TRAIN_XML[-1]} and {TEST_XML[0]}, "
                        f"or {LINES_DIR}/ with Images, Transcriptions and Sets)")
    return _read_lines(root, split, problems, spec.name or FORMAT, _confinement(spec))


def _images_option(spec: DatasetSpec) -> Path | None:
    return Path(spec.option("images")).expanduser() if spec.option("images") else None


def _confinement(spec: DatasetSpec) -> Confinement:
    """The dataset folder and the `images` folder the user named."""
    return Confinement.of(spec, FORMAT, _images_option(spec))


# --- ICDAR 2011 XML ------------------------------------------------------------------------------

def _page_number(page_id: str) -> int:
    digits = re.findall(r"\d+", page_id)
    return int(digits[-1]) if digits else 0


def _read_competition(spec: DatasetSpec, split: str, train_xml: Path | None, test_xml: Path | None,
                      problems: Problems) -> list[Sample]:
    name, images, confine = spec.name or FORMAT, _images_option(spec), _confinement(spec)
    try:
        val_pages = int(spec.option("val_pages", "0"))
    except ValueError:
        raise DataError(f"{spec.path}: val_pages must be a whole number, got {spec.option('val_pages')!r}") from None
    if split == "val" and val_pages <= 0:
        raise DataError(f"{spec.path}: the ICDAR 2011 RIMES competition has no validation set; "
                        "set val_pages=N to hold out the N last training pages (VAN uses 100)")
    if split and {"train": train_xml, "val": train_xml, "test": test_xml}[split] is None:
        missing = TEST_XML[0] if split == "test" else TRAIN_XML[-1]
        raise DataError(f"{spec.path}: RIMES {missing} not found (needed for split {split!r})")
    samples = []
    if train_xml and split in ("", "train", "val"):
        train, pages = _read_xml(train_xml, problems, name, images, confine)
        if val_pages > 0 and split:
            held = set(sorted(pages, key=_page_number)[-val_pages:])
            train = [s for s in train if (s.group in held) == (split == "val")]
        samples += train
    if test_xml and split in ("", "test"):
        samples += read_xml(test_xml, problems, name, images, confine)
    return samples


def _page_image(file_name: str, xml_path: Path, images: Path | None,
                confine: Confinement) -> tuple[Path | None, str]:
    """The page image `FileName` names, and why one that exists was refused ('' if none)."""
    rel = Path(file_name.replace("\\", "/"))
    folder = xml_path.parent
    candidates = [images / rel.name] if images else []
    for base in (folder, folder / "training_2011", folder / "eval_2011"):
        candidates += [base / rel, base / "images_gray" / rel.name, base / "images" / rel.name, base / rel.name]
    found = [c for c in dict.fromkeys(candidates) if is_file(c)]
    image = next((c for c in found if confine.permits(c)), None)
    return image, "" if image is not None or not found else confine.reason(found[0])


def _box(line: etree._Element) -> tuple[int, int, int, int]:
    try:
        left, top, right, bottom = (int(line.get(k)) for k in ("Left", "Top", "Right", "Bottom"))
    except (TypeError, ValueError):
        raise ValueError("needs integer Left, Top, Right and Bottom attributes") from None
    if max(abs(left), abs(top), abs(right), abs(bottom)) > MAX_COORDINATE:
        raise ValueError(f"has coordinates beyond {MAX_COORDINATE:g}")
    left, top = max(left, 0), max(top, 0)
    if right <= left or bottom <= top:
        raise ValueError(f"empty box (Left={left} Top={top} Right={right} Bottom={bottom})")
    return left, top, right, bottom


def read_xml(path: Path, problems: Problems, name: str = FORMAT, images: Path | None = None,
             confine: Confinement | None = None) -> list[Sample]:
    """Lines of one ICDAR 2011 XML file, cut from their page images (found within `confine`, by
    default the file's folder and `images`)."""
    return _read_xml(path, problems, name, images, confine)[0]


def _read_xml(path: Path, problems: Problems, name: str, images: Path | None,
              confine: Confinement | None = None) -> tuple[list[Sample], list[str]]:
    """The lines of an XML file and the ids of all its pages (skipped ones included)."""
    confine = confine or Confinement(tuple(p for p in (path.parent, images) if p is not None))
    root = parse_xml(path)
    if local(root.tag) != "DocumentList":
        raise DataError(f"{path}:{root.sourceline}: not a RIMES DocumentList (root is <{local(root.tag)}>)")
    samples, pages = [], []
    for page in root:
        if local(page.tag) != "SinglePage":
            continue
        file_name = page.get("FileName", "")
        if not file_name:
            problems.add("malformed record", f"{path}:{page.sourceline}", "SinglePage has no FileName")
            continue
        image, refused = _page_image(file_name, path, images, confine)
        page_id = Path(file_name.replace("\\", "/")).stem
        pages.append(page_id)
        lines = [el for el in page.iter() if local(el.tag) == "Line"]
        if refused:
            problems.add(KIND, f"{path}:{page.sourceline}", f"page image {refused} ({len(lines)} lines skipped)")
            continue
        if image is None:
            problems.add("missing image", f"{path}:{page.sourceline}",
                         f"page image {file_name} not found ({len(lines)} lines skipped)")
            continue
        for index, line in enumerate(lines, 1):
            where = f"{path}:{line.sourceline}"
            try:
                box = _box(line)
            except ValueError as err:
                problems.add("malformed record", where, f"Line {err}")
                continue
            text = normalize_text(line.get("Value", "").replace(NOT_WRITTEN, ""))
            samples.append(Sample(image, text, name, page_id, where, LineCrop.box(*box), f"{page_id}_{index:06d}"))
    return samples, pages


# --- RIMES-2011-Lines ----------------------------------------------------------------------------

def _read_lines(root: Path, split: str, problems: Problems, name: str, confine: Confinement) -> list[Sample]:
    texts, list_path = root / "Transcriptions", None
    if split:
        list_path = root / "Sets" / SET_FILES[split]
        if not list_path.is_file():
            raise DataError(f"{root}: RIMES split list {list_path} not found")
    pairs = read_pairs(listed_or_all(list_path, texts), texts, image_index(root / "Images"), problems, normalize_text,
                       confine)
    return [Sample(image, text, name, line_id.rsplit("_", 1)[0], str(text_file), line_id=line_id)
            for line_id, image, text, text_file in pairs]
