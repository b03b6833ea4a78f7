"""Page layouts (PAGE XML, ALTO) as plain records of lines, and the `Sample`s cut from them.

`pagexml` and `alto` parse a file into a `PageDoc`: its page image and its `PageLine`s in reading
order, each with its polygon, baseline, text, type labels and lxml element (so that a writer can put
recognised text back into the same file). `read_pages` turns the files of a dataset spec into
samples, checking and repairing line geometry on the way.
"""
from __future__ import annotations

import glob
import logging
import math
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from urllib.parse import urlparse

from lxml import etree
from PIL import Image, UnidentifiedImageError

from ..charset import normalize_text
from . import geometry
from .paths import KIND as OUTSIDE, Confinement, is_file
from .sample import DataError, LineCrop, Point, Problems, Sample
from .spec import DatasetSpec
from .xml import local, namespace, parse_xml

log = logging.getLogger("htrjand")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".jp2", ".bmp", ".webp")
ROOT_TAGS = {"PcGts": "page", "alto": "alto"}
NAMESPACES = {
    "page": re.compile(r"^https?://schema\.primaresearch\.org/PAGE/gts/pagecontent/\d{4}-\d{2}-\d{2}/?$"),
    "alto": re.compile(r"^(https?://www\.loc\.gov/standards/alto(/ns-v\d+#?|/v\d+/?)?/?|"
                       r"https?://schema\.ccs-gmbh\.com/(docworks/version20/)?alto[-\w.]*)$"),
}
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "valid", "validation", "dev"),
                 "test": ("test", "testing")}
OPTIONS = ("types", "skip_types")
DEFAULT_LINE_TYPE = "default"  # label of a line whose source gives it no type (eScriptorium's name)


@dataclass
class PageLine:
    """One TextLine of a page file, independent of training samples.

    `polygon` and `baseline` are in page-image pixels as the file gives them (() when absent or
    unparsable; `polygon_error` says why). `box` is the fallback rectangle the format offers (ALTO
    HPOS/VPOS/WIDTH/HEIGHT, PAGE the parent region's box). `text` is decoded from the format but not
    normalised. `types` are the line's own type labels, `region_types` those of its block/region.
    `index` is the line's position among all TextLines of the file (document order).
    """

    id: str
    index: int
    source: str  # "file.xml:LINE" of the TextLine element
    element: etree._Element
    text: str
    polygon: tuple[Point, ...] = ()
    baseline: tuple[Point, ...] = ()
    box: tuple[float, float, float, float] | None = None
    types: tuple[str, ...] = ()
    region_id: str = ""
    region_types: tuple[str, ...] = ()
    polygon_error: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        """All type labels: the line's own (or "default" when it has none), then its region's."""
        return (self.types or (DEFAULT_LINE_TYPE,)) + self.region_types


@dataclass
class PageDoc:
    """A parsed page file: its lines in reading order and where its page image is."""

    path: Path
    format: str  # "page" or "alto"
    root: etree._Element
    image: Path | None  # the page image found on disk (None: not found)
    image_ref: str  # the image name as written in the file
    image_where: str  # "file.xml:LINE" of that reference
    lines: list[PageLine] = field(default_factory=list)
    size: tuple[float, float] | None = None  # page size the file declares, in pixels
    fallbacks: tuple[str, ...] = ("baseline", "box")  # geometry to try, in order, without a polygon
    images_tried: tuple[Path, ...] = ()
    image_refused: str = ""  # why an image that exists was not used (outside the dataset folder)


# ---------------------------------------------------------------- files and detection

def is_glob(path: Path | str) -> bool:
    return glob.has_magic(str(path))


def xml_files(path: Path) -> list[Path]:
    """The XML files of a dataset path: one file, a folder (recursively) or a glob pattern."""
    if is_glob(path):
        files: set[Path] = set()
        for match in glob.glob(str(path), recursive=True):
            p = Path(match)
            files.update(_folder_xml(p) if p.is_dir() else [p] if p.suffix.lower() == ".xml" else [])
        return sorted(files)
    if path.is_dir():
        return _folder_xml(path)
    if path.is_file():
        return [path]
    raise DataError(f"{path}: no such file or folder")


def _folder_xml(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".xml" and p.is_file())


def root_format(path: Path) -> str:
    """'page' or 'alto' from the root element's name alone (reads only the file's start); '' for
    anything else, unreadable files included."""
    try:
        for _, element in etree.iterparse(str(path), events=("start",), resolve_entities=False,
                                          no_network=True, load_dtd=False, huge_tree=False):
            return ROOT_TAGS.get(local(element.tag), "")
    except (etree.LxmlError, OSError, ValueError):
        return ""
    return ""


def holds_format(path: Path, fmt: str, sample: int = 50) -> bool:
    """Whether `path` (a file, folder or glob) holds XML files of `fmt`; never raises."""
    try:
        if is_glob(path):
            candidates: Iterable[Path] = (Path(p) for p in glob.iglob(str(path), recursive=True))
            candidates = (c for c in candidates if c.suffix.lower() == ".xml")
        elif path.is_dir():
            candidates = (p for p in path.rglob("*.[xX][mM][lL]"))
        elif path.is_file() and path.suffix.lower() == ".xml":
            candidates = [path]
        else:
            return False
        return any(root_format(p) == fmt for p in islice(candidates, sample) if p.is_file())
    except OSError:
        return False


def check_root(root: etree._Element, path: Path) -> str:
    """The format of a parsed file ('page', 'alto' or '' for other XML); raises `DataError` for a
    PAGE or ALTO root in a namespace htrjand does not know."""
    fmt = ROOT_TAGS.get(local(root.tag), "")
    ns = namespace(root)
    if fmt and ns and not NAMESPACES[fmt].match(ns):
        raise DataError(f"{path}:{root.sourceline}: unknown {'PAGE' if fmt == 'page' else 'ALTO'} "
                        f"namespace {ns!r} (known: PAGE pagecontent/YYYY-MM-DD, ALTO ns-v2/v3/v4)")
    return fmt


def page_confinement(xml_path: Path, confine: Confinement | None = None) -> Confinement:
    """Where a page file's image may lie: the dataset's folders (`confine`; by default the file's
    own) and the folder above the file's (Transkribus' `page/`, OCR-D). A symlink as the image itself
    is followed wherever it points: `htrjand recognize` links the page image beside the XML it writes."""
    confine = confine or Confinement((xml_path.parent,))
    return confine.widened(xml_path.parent.parent, follow_last=False)


def find_image(xml_path: Path, ref: str, confine: Confinement | None = None
               ) -> tuple[Path | None, tuple[Path, ...]]:
    """The page image a file names, relative to the file's folder (also its parent folder, where
    Transkribus exports put images beside a `page/` folder; a URL or foreign path by its file
    name), else an image with the file's stem next to it. Returns the image (None when none
    exists, or with `confine` none that it permits) and the paths tried."""
    folder = xml_path.parent
    tried: list[Path] = []
    ref = ref.strip()
    if ref:
        if "://" in ref:
            name = urlparse(ref).path.rsplit("/", 1)[-1]
        else:
            direct = Path(ref)
            tried += [direct] if direct.is_absolute() else [folder / direct, folder.parent / direct]
            name = re.split(r"[\\/]", ref)[-1]
        if name:
            tried.append(folder / name)
    tried += [folder / (xml_path.stem + suffix) for suffix in IMAGE_SUFFIXES]
    unique = tuple(dict.fromkeys(tried))
    found = (p for p in unique if is_file(p) and (confine is None or confine.permits(p)))
    return next(found, None), unique


def locate_image(xml_path: Path, ref: str, confine: Confinement | None = None
                 ) -> tuple[Path | None, tuple[Path, ...], str]:
    """`find_image` within `page_confinement`, and why an existing image was refused ('' if none)."""
    confine = page_confinement(xml_path, confine)
    image, tried = find_image(xml_path, ref, confine)
    refused = "" if image is not None else next(
        (confine.reason(p) for p in tried if is_file(p) and not confine.permits(p)), "")
    return image, tried, refused


# ---------------------------------------------------------------- type filters

def _label_forms(label: str) -> set[str]:
    """A label and its parts: 'DefaultLine:Handwritten' also answers to 'defaultline' and
    'handwritten'; SegmOnto's '#n' suffixes are ignored."""
    label = label.strip().lower()
    parts = {p.split("#", 1)[0] for p in label.split(":")}
    return {label, label.split("#", 1)[0]} | parts - {""}


def type_filter(spec: DatasetSpec) -> Callable[[PageLine], bool]:
    """Keep lines with a label in the `types` option (when given) and none in `skip_types`
    (comma lists, case-insensitive)."""
    wanted = {t.strip().lower() for t in spec.option("types").split(",") if t.strip()}
    skipped = {t.strip().lower() for t in spec.option("skip_types").split(",") if t.strip()}

    def keep(line: PageLine) -> bool:
        forms = set().union(*(_label_forms(label) for label in line.labels))
        return (not wanted or bool(forms & wanted)) and not forms & skipped

    return keep


# ---------------------------------------------------------------- problems

def note(problems: Problems | None, kind: str, where: str, message: str) -> None:
    """A warning-level problem: recorded in `problems` but the line is kept."""
    if problems is not None:
        problems.warn(kind, where, message)
    else:
        log.warning("%s: %s (kept)", where, message)


def _xml_problem(err: DataError, path: Path) -> tuple[str, str]:
    """Split a `parse_xml` error into (file:line, message)."""
    text = str(err)
    m = re.match(re.escape(str(path)) + r"(:\d+|:\?)?: (.*)$", text, re.S)
    return (str(path) + (m.group(1) or "").replace(":?", ""), m.group(2)) if m else (str(path), text)


# ---------------------------------------------------------------- samples

def image_header(path: Path) -> tuple[tuple[int, int], float | None]:
    """(width, height) and DPI (None when the header has none) from an image header only; an
    unreadable image, or one over `images.MAX_IMAGE_PIXELS`, raises `OSError`."""
    from ..images import ImageError, open_image  # lazily: htrjand.images imports this package

    try:
        with open_image(path) as im:
            dpi = im.info.get("dpi")
            try:
                # rounded: PNG stores whole pixels per metre, so 100 dpi reads back as 99.9998
                dpi = round(float(dpi[0]), 2) if dpi and 1 < float(dpi[0]) < 1e6 else None
            except (TypeError, ValueError, IndexError, OverflowError):
                dpi = None
            return im.size, dpi
    except ImageError as err:
        raise OSError(str(err).removeprefix(f"{path}: ")) from None


def line_height(lines: Iterable[PageLine], page_height: float | None) -> float:
    """Typical line height of a page: the median box height of its lines with a usable polygon,
    else a 40th of the page height, else 40 px (for growing baselines into boxes)."""
    heights = [b[3] - b[1] for b in (geometry.bounds(l.polygon) for l in lines
                                     if l.polygon and not geometry.degenerate(l.polygon)) if b[3] - b[1] > 1]
    if heights:
        return float(statistics.median(heights))
    return page_height / 40 if page_height else 40.0


def line_crop(doc: PageDoc, line: PageLine, height: float, problems: Problems) -> LineCrop | None:
    """Where `line` lies on the page image: its polygon (a self-intersecting one, or one too
    complex to check, replaced by its convex hull), else the format's fallbacks; None (reported)
    when nothing usable remains."""
    where = line.source
    polygon = geometry.clean(line.polygon)
    issue = line.polygon_error
    if polygon and not issue and len(polygon) > geometry.MAX_CHECKED_POINTS:
        polygon = geometry.simplify(polygon)  # within half a pixel
        if len(polygon) > geometry.MAX_CHECKED_POINTS:
            hull = geometry.convex_hull(polygon)
            if not geometry.degenerate(hull):
                note(problems, "repaired polygon", where, f"polygon of {len(line.polygon)} points is too complex to "
                     "check for self-intersection; using its convex hull")
                return LineCrop(hull, line.baseline, mask=True)
    if polygon and not issue:
        if geometry.self_intersects(polygon):
            hull = geometry.convex_hull(polygon)
            if not geometry.degenerate(hull):
                note(problems, "repaired polygon", where, "self-intersecting polygon; using its convex hull")
                return LineCrop(hull, line.baseline, mask=True)
        issue = geometry.degenerate(polygon)
        if not issue:
            return LineCrop(polygon, line.baseline, mask=True)
    for name in doc.fallbacks:
        if name == "baseline":
            shape = geometry.baseline_box(line.baseline, height)
        else:
            shape = geometry.box(*line.box) if geometry.usable_box(line.box) else None
        if shape is not None:
            label = "baseline grown to a box" if name == "baseline" else (
                "parent region's box" if doc.format == "page" else "HPOS/VPOS/WIDTH/HEIGHT box")
            if issue:
                note(problems, "repaired polygon", where, f"{issue}; using the {label}")
            else:
                log.debug("%s: line has no polygon; using the %s", where, label)
            return LineCrop(shape, line.baseline, mask=False)
    if issue.startswith("unparsable"):
        kind = "unparsable points"
    elif issue.startswith("degenerate"):
        kind = "degenerate polygon"
    else:
        kind, issue = "no geometry", issue or "line has no polygon"
    problems.add(kind, where, f"{issue}; no baseline or box to fall back on")
    return None


def _outside(crop: LineCrop, size: tuple[int, int]) -> bool:
    """Whether a crop's box with its margin, clipped to the image, keeps less than 2x2 pixels
    (the test `images.crop_line` applies)."""
    from ..images import CROP_MARGIN  # lazily: htrjand.images imports this package
    left, top, right, bottom = crop.bounds
    if not all(map(math.isfinite, (left, top, right, bottom))):
        return True
    w, h = size
    x0, y0 = max(math.floor(left) - CROP_MARGIN, 0), max(math.floor(top) - CROP_MARGIN, 0)
    x1, y1 = min(math.ceil(right) + CROP_MARGIN + 1, w), min(math.ceil(bottom) + CROP_MARGIN + 1, h)
    return x1 - x0 < 2 or y1 - y0 < 2


def page_samples(doc: PageDoc, lines: list[PageLine], dataset: str, problems: Problems) -> list[Sample]:
    """Samples for `lines` of a parsed page (the page's lines already filtered by type)."""
    if not lines:
        return []
    if doc.image is None and doc.image_refused:
        problems.add(OUTSIDE, doc.image_where, f"page image {doc.image_refused}; its {len(lines)} lines are skipped")
        return []
    if doc.image is None:
        tried = ", ".join(str(p) for p in doc.images_tried)
        problems.add("missing image", doc.image_where,
                     f"page image {doc.image_ref!r} not found (looked for {tried}); "
                     f"its {len(lines)} lines are skipped")
        return []
    try:
        size, _ = image_header(doc.image)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        problems.add("unreadable image", doc.image_where, f"cannot read page image {doc.image} ({err}); "
                     f"its {len(lines)} lines are skipped")
        return []
    if doc.size and any(abs(a - b) > 1 for a, b in zip(doc.size, size)):
        note(problems, "image size mismatch", doc.image_where,
             f"the file declares a {doc.size[0]:g}x{doc.size[1]:g} page but {doc.image.name} is "
             f"{size[0]}x{size[1]}; coordinates are used as they are")
    height = line_height(doc.lines, doc.size[1] if doc.size else size[1])
    samples = []
    for line in lines:
        crop = line_crop(doc, line, height, problems)
        if crop is None:
            continue
        if _outside(crop, size):
            l, t, r, b = crop.bounds
            problems.add("polygon outside image", line.source,
                         f"line polygon ({l:g},{t:g})-({r:g},{b:g}) lies outside the "
                         f"{size[0]}x{size[1]} page image {doc.image.name}")
            continue
        samples.append(Sample(doc.image, normalize_text(line.text), dataset, doc.path.stem, line.source,
                              crop, line.id))
    return samples


def _split_path(spec: DatasetSpec) -> Path:
    """With a split, the folder of that split under the dataset folder (`train/`, `val/` or
    `valid/`/`validation/`, `test/`)."""
    if not spec.split:
        return spec.path
    names = SPLIT_ALIASES.get(spec.split.lower(), (spec.split,))
    if spec.path.is_dir():
        for name in names:
            if (spec.path / name).is_dir():
                return spec.path / name
    raise DataError(f"{spec.path}: page files have no split of their own; for split {spec.split!r} "
                    f"give a folder with a {'/'.join(n + '/' for n in names)} subfolder")


def dataset_name(spec: DatasetSpec) -> str:
    if spec.name:
        return spec.name
    path = spec.path
    if is_glob(path):
        while is_glob(path) and path != path.parent:
            path = path.parent
        return path.resolve().name
    return (path if path.is_dir() else path.parent).resolve().name


def _parser(fmt: str) -> Callable[..., PageDoc]:
    from . import alto, pagexml  # lazily: both import this module

    return pagexml.parse_page if fmt == "page" else alto.parse_alto


def read_pages(spec: DatasetSpec, problems: Problems, fmt: str) -> list[Sample]:
    """Samples of every page file of a spec (malformed files and bad lines reported and skipped).

    `fmt` is the format asked for; a file of the other one (a folder mixing PAGE and ALTO) is read
    by its own parser. Other XML (METS, Transkribus doc.xml) in a folder is passed over."""
    for key in spec.options:
        if key not in OPTIONS:
            log.warning("%s: option %r is not used by the %s reader (known: %s)", spec.path, key, fmt,
                        ", ".join(OPTIONS))
    path = _split_path(spec)
    files = xml_files(path)
    if not files:
        raise DataError(f"{path}: no .xml files found")
    keep, dataset = type_filter(spec), dataset_name(spec)
    confine = Confinement.of(spec, fmt)
    samples: list[Sample] = []
    found = filtered = broken = 0
    other: dict[str, int] = {}  # files of the other format, read as such
    for file in files:
        try:
            root = parse_xml(file)
        except DataError as err:
            where, message = _xml_problem(err, file)
            problems.add("malformed XML", where, message + "; the whole file is skipped")
            broken += 1
            continue
        kind = check_root(root, file)
        if not kind:
            if path.is_file():
                raise DataError(f"{file}: root element <{local(root.tag)}> is neither PAGE (PcGts) "
                                f"nor ALTO (alto)")
            log.debug("%s: not PAGE or ALTO (<%s>), passed over", file, local(root.tag))
            continue
        if kind != fmt:
            other[kind] = other.get(kind, 0) + 1
            log.debug("%s: is %s, read as such", file, kind)
        found += 1
        try:
            doc = _parser(kind)(root, file, problems, confine=confine)
        except DataError as err:
            where, message = _xml_problem(err, file)
            problems.add("unusable file", where, message + "; the whole file is skipped")
            broken += 1
            continue
        lines = [line for line in doc.lines if keep(line)]
        filtered += len(doc.lines) - len(lines)
        samples += page_samples(doc, lines, dataset, problems)
    if not found and not broken:
        raise DataError(f"{path}: no PAGE or ALTO files found")
    for kind, count in other.items():
        log.info("%s: %d file%s %s, not %s, read as such", path, count, "s are" if count > 1 else " is",
                 kind.upper() if kind == "alto" else "PAGE", fmt.upper() if fmt == "alto" else "PAGE")
    if filtered:
        log.info("%s: %d lines left out by their type (types=%r, skip_types=%r)", path, filtered,
                 spec.option("types"), spec.option("skip_types"))
    return samples


def load_page(path: Path, problems: Problems | None = None, confine: Confinement | None = None) -> PageDoc:
    """Parse one PAGE or ALTO file (format from its root element) into a `PageDoc` (its image looked
    for within `confine`, by default the file's folder and the one above it)."""
    root = parse_xml(path)
    fmt = check_root(root, path)
    if not fmt:
        raise DataError(f"{path}: root element <{local(root.tag)}> is neither PAGE (PcGts) nor ALTO (alto)")
    return _parser(fmt)(root, path, problems, confine=confine)
