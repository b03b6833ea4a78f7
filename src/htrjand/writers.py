"""Recognition results written out: back into the PAGE XML or ALTO file the lines came from, or as
plain text, a TSV manifest or JSON.

`page_xml` puts each recognised line's text, confidence and (optionally) word and glyph boxes into
a copy of its page file, keeping everything else (regions, reading order, other attributes, the
schema version). Positions come from `Result.char_positions` / `Word.x`, which are pixel columns of
the cut line region (`images.crop_line`: the line polygon's box plus `CROP_MARGIN`, clipped to the
page), so page x = region x + the region's left edge; a word's y-range is the line polygon's extent
over the word's columns. See docs/outputs.md.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from lxml import etree
from PIL import Image

from .datasets import layout
from .datasets.layout import PageDoc, PageLine
from .datasets.sample import DataError, LineCrop, Point, Problems
from .datasets.xml import local, namespace
from .images import CROP_MARGIN

if TYPE_CHECKING:
    from .runtime import Result

PAGE_LINE_ORDER = ("AlternativeImage", "Coords", "Baseline", "Word", "TextEquiv", "TextStyle", "UserDefined",
                   "Labels")  # PAGE TextLineType's children, in schema order
_ALTO_TEXT = ("String", "SP", "HYP")
_TEXT_TAG = re.compile(r"\s*[\w-]+\s*\{[^}]*\boffset\s*:[^}]*\}")  # Transkribus tags on character ranges


def line_key(line: PageLine) -> str:
    """The key of a line's result in `page_xml`'s `results`: its id, else its `file:LINE` source."""
    return line.id or line.source


# ---------------------------------------------------------------- words and geometry

@dataclass
class _Token:
    """A word to write: text, [start, end) in the line text, confidence, region-x range or None."""

    text: str
    start: int
    end: int
    confidence: float
    x: tuple[int, int] | None


def _tokens(result: Result) -> list[_Token]:
    """The result's words; derived from its text (and char positions) when it has none."""
    if result.words:
        return [_Token(w.text, w.start, w.end, w.confidence, tuple(w.x) if w.x else None) for w in result.words]
    tokens = []
    positions = result.char_positions if len(result.char_positions) == len(result.text) else []
    confs = result.char_confidences if len(result.char_confidences) == len(result.text) else []
    for m in re.finditer(r"\S+", result.text):
        a, b = m.span()
        x = (min(p[0] for p in positions[a:b]), max(p[1] for p in positions[a:b])) if positions else None
        conf = math.prod(confs[a:b]) if confs else result.confidence
        tokens.append(_Token(m.group(), a, b, conf, x))
    return tokens


def _strip_ys(polygon: Sequence[Point], x0: float, x1: float) -> list[float]:
    """y values of `polygon` clipped to the vertical strip x0 <= x <= x1 (Sutherland-Hodgman)."""
    def clip(points, inside, x):
        out = []
        for i, cur in enumerate(points):
            prev = points[i - 1]
            if inside(cur) != inside(prev):  # the edge crosses x: add the crossing point
                t = (x - prev[0]) / (cur[0] - prev[0])
                out.append((x, prev[1] + t * (cur[1] - prev[1])))
            if inside(cur):
                out.append(cur)
        return out

    points = clip(list(polygon), lambda p: p[0] >= x0, x0)
    points = clip(points, lambda p: p[0] <= x1, x1) if points else []
    return [y for _, y in points]


class _Geometry:
    """Where a cut line region lies on its page: region x -> page boxes inside the line's polygon."""

    def __init__(self, crop: LineCrop):
        self.polygon = crop.polygon
        self.bounds = crop.bounds
        self.offset = max(math.floor(self.bounds[0]) - CROP_MARGIN, 0)  # as images.crop_line cuts

    def box(self, x: tuple[int, int]) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) page pixels of region columns [x0, x1), clipped to the line's
        box, with the polygon's y extent over those columns (the line's box where it has none)."""
        l, t, r, b = math.floor(self.bounds[0]), math.floor(self.bounds[1]), math.ceil(self.bounds[2]), \
            math.ceil(self.bounds[3])
        x0 = min(max(self.offset + x[0], l), r - 1)
        x1 = min(max(self.offset + x[1], x0 + 1), r)
        ys = _strip_ys(self.polygon, x0, x1)
        top, bottom = (max(math.floor(min(ys)), t), min(math.ceil(max(ys)), b)) if ys else (t, b)
        if bottom <= top:
            top, bottom = t, b
        return x0, top, x1, bottom


def _crops(doc: PageDoc) -> dict[str, LineCrop]:
    """The crop each line of `doc` is cut with (as `layout.page_samples` makes them)."""
    class Quiet(Problems):  # its problems were reported when the page was read
        def add(self, kind: str, where: str, message: str) -> None:
            pass

        def warn(self, kind: str, where: str, message: str) -> None:
            pass

    page_height = doc.size[1] if doc.size else None
    if page_height is None and doc.image is not None:
        try:
            page_height = layout.image_header(doc.image)[0][1]
        except (OSError, Image.DecompressionBombError):
            pass  # then no line of it was cut
    height = layout.line_height(doc.lines, page_height)
    crops = {}
    for line in doc.lines:
        crop = layout.line_crop(doc, line, height, Quiet())
        if crop is not None:
            crops[line_key(line)] = crop
    return crops


# ---------------------------------------------------------------- XML helpers

def _conf(value: float) -> str:
    """A confidence in [0, 1] with at most 4 decimals ('0.9312', '1', '0')."""
    value = min(max(float(value), 0.0), 1.0) if math.isfinite(value) else 0.0
    return f"{value:.4f}".rstrip("0").rstrip(".") or "0"


def _children(element: etree._Element, *names: str) -> list[etree._Element]:
    return [c for c in element if local(c.tag) in names]


def _insert(parent: etree._Element, new: etree._Element, before: Iterable[str]) -> None:
    """Insert `new` before the first child named in `before` (schema order), else append it."""
    names = set(before)
    for i, child in enumerate(parent):
        if local(child.tag) in names:
            parent.insert(i, new)
            return
    parent.append(new)


def _make(ns: str, name: str, attrib: Mapping[str, str] | None = None, text: str | None = None) -> etree._Element:
    element = etree.Element(f"{{{ns}}}{name}" if ns else name, {k: v for k, v in (attrib or {}).items()})
    element.text = text
    return element


def _unique(base: str, used: set[str]) -> str:
    name, n = base, 1
    while name in used:
        name, n = f"{base}_{n}", n + 1
    used.add(name)
    return name


def _indent_of(element: etree._Element) -> str | None:
    """The whitespace an element is indented by (None in a file that is not pretty-printed)."""
    prev = element.getprevious()
    before = prev.tail if prev is not None else (element.getparent().text if element.getparent() is not None
                                                 else None)
    if not before or "\n" not in before or before.strip():
        return None
    return before.rsplit("\n", 1)[1]


def _reindent(element: etree._Element, new: Collection[etree._Element] = ()) -> None:
    """Indent `element`'s children like the rest of the file, and the subtrees of its `new` children
    (others keep their own layout; text of leaf elements is never touched)."""
    base = _indent_of(element)
    if base is None:
        return
    parent = element.getparent()
    outer = _indent_of(parent) if parent is not None and parent.getparent() is not None else ""
    step = base[len(outer):] if outer is not None and base.startswith(outer) and len(base) > len(outer) else "  "
    new = set(new)

    def walk(el: etree._Element, indent: str, deep: bool) -> None:
        kids = list(el)
        if not kids:
            return
        if el.text is None or not el.text.strip():
            el.text = "\n" + indent + step
        for i, child in enumerate(kids):
            if child.tail is None or not child.tail.strip():
                child.tail = "\n" + indent + (step if i < len(kids) - 1 else "")
            if deep or child in new:
                walk(child, indent + step, True)

    walk(element, base, False)


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().replace(microsecond=0).isoformat()


# ---------------------------------------------------------------- PAGE

def _page_version(root: etree._Element) -> int:
    m = re.search(r"pagecontent/(\d{4})-", namespace(root))
    return int(m.group(1)) if m else 0


def _page_text_equiv(ns: str, text: str, conf: float | None) -> etree._Element:
    equiv = _make(ns, "TextEquiv", {"conf": _conf(conf)} if conf is not None else None)
    equiv.append(_make(ns, "Unicode", text=text))
    return equiv


def _page_coords(ns: str, box: tuple[int, int, int, int]) -> etree._Element:
    l, t, r, b = (max(v, 0) for v in box)
    return _make(ns, "Coords", {"points": f"{l},{t} {r},{t} {r},{b} {l},{b}"})


def _page_line(el: etree._Element, result: Result, geometry_: _Geometry | None, ns: str, used: set[str],
               words: bool, glyphs: bool) -> None:
    for old in _children(el, "Word", "TextEquiv"):
        el.remove(old)
    custom = el.get("custom")
    if custom and _TEXT_TAG.search(custom):  # their offsets point into the old text
        el.set("custom", _TEXT_TAG.sub("", custom).strip())
    tokens = _tokens(result) if words and geometry_ is not None else []
    if tokens and all(t.x is not None for t in tokens):
        chars_ok = glyphs and len(result.char_positions) == len(result.text) \
            and len(result.char_confidences) == len(result.text)
        after_words = PAGE_LINE_ORDER[PAGE_LINE_ORDER.index("Word") + 1:]
        for i, token in enumerate(tokens):
            word_id = _unique(f"{el.get('id') or 'line'}_w{i + 1}", used)
            word = _make(ns, "Word", {"id": word_id})
            word.append(_page_coords(ns, geometry_.box(token.x)))
            if chars_ok:
                for j in range(token.start, token.end):
                    glyph = _make(ns, "Glyph", {"id": _unique(f"{word_id}_g{j - token.start + 1}", used)})
                    glyph.append(_page_coords(ns, geometry_.box(tuple(result.char_positions[j]))))
                    glyph.append(_page_text_equiv(ns, result.text[j], result.char_confidences[j]))
                    word.append(glyph)
            word.append(_page_text_equiv(ns, token.text, token.confidence))
            _insert(el, word, after_words)
    _insert(el, _page_text_equiv(ns, result.text, result.confidence),
            PAGE_LINE_ORDER[PAGE_LINE_ORDER.index("TextEquiv") + 1:])


def _page_region(region: etree._Element, lines: list[tuple[str, float | None]], ns: str) -> None:
    """Set a region's TextEquiv to its lines' texts (conf: their mean, when every line has one)."""
    for old in _children(region, "TextEquiv"):
        region.remove(old)
    confs = [c for _, c in lines]
    conf = sum(confs) / len(confs) if confs and None not in confs else None
    _insert(region, _page_text_equiv(ns, "\n".join(t for t, _ in lines), conf), ("TextStyle",))


def _page_metadata(root: etree._Element, ns: str, creator: str, when: str) -> None:
    meta = next(iter(_children(root, "Metadata")), None)
    if meta is None:
        return
    last = next(iter(_children(meta, "LastChange")), None)
    if last is None:
        last = _make(ns, "LastChange")
        _insert(meta, last, ("Comments", "UserDefined", "MetadataItem"))
    last.text = when
    if _page_version(root) >= 2018:  # MetadataItem exists from PAGE 2018-07-15 on
        item = _make(ns, "MetadataItem", {"type": "processingStep", "name": "text recognition",
                                          "value": creator, "date": when})
        known = [c for c in meta if local(c.tag) in ("Creator", "Created", "LastChange", "Comments", "UserDefined",
                                                      "MetadataItem")]
        if known:
            known[-1].addnext(item)
        else:
            meta.append(item)
    else:
        comments = next(iter(_children(meta, "Comments")), None)
        if comments is None:
            comments = _make(ns, "Comments")
            last.addnext(comments)  # Comments follows LastChange
        note = f"Text recognised by {creator} on {when}"
        comments.text = f"{comments.text.rstrip()}\n{note}" if comments.text and comments.text.strip() else note
    _reindent(meta, _children(meta, "MetadataItem"))


def _write_page(root: etree._Element, doc: PageDoc, lines: dict, results: Mapping[str, Result],
                crops: Mapping[str, LineCrop], words: bool, glyphs: bool, creator: str) -> None:
    ns = namespace(root)
    used = {e.get("id") for e in root.iter(etree.Element) if e.get("id")}
    regions: dict[etree._Element, list[PageLine]] = {}
    for line in doc.lines:
        el = lines[line.element]
        parent = el.getparent()
        if parent is not None and local(parent.tag).endswith("Region"):
            regions.setdefault(parent, []).append(line)
        result = results.get(line_key(line))
        if result is None:
            continue
        for old in _children(el, "Word"):  # their ids are free again
            for node in old.iter(etree.Element):
                used.discard(node.get("id"))
        crop = crops.get(line_key(line))
        _page_line(el, result, _Geometry(crop) if crop else None, ns, used, words, glyphs)
        _reindent(el, _children(el, "Word", "TextEquiv"))
    for region, members in regions.items():
        if any(line_key(l) in results for l in members):
            texts = [(results[line_key(l)].text, results[line_key(l)].confidence) if line_key(l) in results
                     else (l.text, None) for l in members]
            _page_region(region, texts, ns)
            _reindent(region, _children(region, "TextEquiv"))
    _page_metadata(root, ns, creator, _now())


# ---------------------------------------------------------------- ALTO

def _alto_version(root: etree._Element) -> int:
    """The ALTO major version from the namespace (2 when it names none)."""
    m = re.search(r"ns-v(\d+)", namespace(root))
    return int(m.group(1)) if m else 2


def _units(value: float, scale: float) -> str:
    return str(round(value / scale))


def _alto_box(box: tuple[int, int, int, int], scale: float,
              limit: tuple[float, float, float, float] | None = None) -> dict[str, str]:
    """HPOS/VPOS/WIDTH/HEIGHT in file units of a page-pixel box, kept inside `limit` (the line's own
    box in file units) against rounding."""
    l, t, r, b = (round(v / scale) for v in box)
    if limit is not None:
        l, r = (min(max(v, round(limit[0])), round(limit[2])) for v in (l, r))
        t, b = (min(max(v, round(limit[1])), round(limit[3])) for v in (t, b))
    return {"HPOS": str(l), "VPOS": str(t), "WIDTH": str(max(r - l, 1)), "HEIGHT": str(max(b - t, 1))}


def _alto_limit(el: etree._Element) -> tuple[float, float, float, float] | None:
    try:
        hpos, vpos, width, height = (float(el.get(k, "")) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT"))
    except ValueError:
        return None
    return hpos, vpos, hpos + width, vpos + height


def _cc(confs: Sequence[float]) -> str:
    """ALTO character confidences: one digit per character, 0 = sure ... 9 = unsure."""
    return "".join(str(min(9, max(0, round(9 * (1 - min(max(c, 0.0), 1.0)))))) for c in confs)


def _alto_line(el: etree._Element, result: Result, geometry_: _Geometry | None, ns: str, scale: float,
               used: set[str], glyphs: bool) -> list[str]:
    """Replace a TextLine's String/SP/HYP children; returns the ids of the removed elements."""
    removed = [e.get("ID") for old in _children(el, *_ALTO_TEXT) for e in old.iter(etree.Element) if e.get("ID")]
    for old in _children(el, *_ALTO_TEXT):
        el.remove(old)
    used.difference_update(removed)
    el.attrib.pop("CS", None)  # correction status: the text is now machine output
    tokens = _tokens(result)
    confs = result.char_confidences if len(result.char_confidences) == len(result.text) else []
    positions = result.char_positions if len(result.char_positions) == len(result.text) else []
    line_id = el.get("ID")
    limit = _alto_limit(el)
    previous: tuple[int, int, int, int] | None = None
    for i, token in enumerate(tokens):
        box = geometry_.box(token.x) if geometry_ is not None and token.x is not None else None
        if i:
            sp = {}
            if previous is not None and box is not None:
                sp = {"HPOS": _units(previous[2], scale), "VPOS": _units(min(previous[1], box[1]), scale),
                      "WIDTH": str(max(round(box[0] / scale) - round(previous[2] / scale), 0))}
            el.append(_make(ns, "SP", sp))
        attrib = {"ID": _unique(f"{line_id}_s{i + 1}", used)} if line_id else {}
        attrib.update(_alto_box(box, scale, limit) if box else {})
        attrib.update({"CONTENT": token.text, "WC": _conf(token.confidence)})
        if confs:
            attrib["CC"] = _cc(confs[token.start:token.end])
        string = _make(ns, "String", attrib)
        if glyphs and positions and confs and geometry_ is not None:
            for j in range(token.start, token.end):
                glyph = {"ID": _unique(f"{attrib['ID']}_g{j - token.start + 1}", used)} if "ID" in attrib else {}
                glyph.update({"CONTENT": result.text[j], "GC": _conf(confs[j])})
                glyph.update(_alto_box(geometry_.box(tuple(positions[j])), scale, limit))
                string.append(_make(ns, "Glyph", glyph))
        el.append(string)
        previous = box
    if not tokens:  # a TextLine needs a String: an empty one for an empty line
        attrib = {k: el.get(k) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT") if el.get(k) is not None}
        el.append(_make(ns, "String", {**attrib, "CONTENT": "", "WC": _conf(result.confidence)}))
    return removed


def _alto_processing(root: etree._Element, ns: str, major: int, creator: str, when: str, used: set[str]) -> None:
    """Record the recognition step in Description (Processing in ALTO 4, OCRProcessing before)."""
    description = next(iter(_children(root, "Description")), None)
    if description is None:
        return
    step = _make(ns, "Processing" if major >= 4 else "ocrProcessingStep")
    step.append(_make(ns, "processingDateTime", text=when))
    step.append(_make(ns, "processingStepDescription", text="text recognition"))
    software = _make(ns, "processingSoftware")
    software.append(_make(ns, "softwareName", text=creator))
    step.append(software)
    if major >= 4:
        element = step
    else:
        element = _make(ns, "OCRProcessing")
        element.append(step)
    element.set("ID", _unique("htrjand_processing", used))
    before = [c for c in description if local(c.tag) in ("MeasurementUnit", "sourceImageInformation",
                                                          "OCRProcessing", "Processing")]
    if before:
        before[-1].addnext(element)
    else:
        description.append(element)
    _reindent(description, [element])


def _alto_reading_order(root: etree._Element, moved: dict[str, str]) -> None:
    """Point ReadingOrder references to removed Strings at their TextLine instead."""
    order = next(iter(_children(root, "ReadingOrder")), None)
    if order is None or not moved:
        return
    for ref in [e for e in order.iter(etree.Element) if local(e.tag) == "ElementRef"]:
        target = ref.get("REF", "")
        if target not in moved:
            continue
        prev = ref.getprevious()
        if moved[target] and not (prev is not None and prev.get("REF") == moved[target]):
            ref.set("REF", moved[target])
        else:  # the line is referenced already (or has no ID)
            ref.getparent().remove(ref)


def _write_alto(root: etree._Element, doc: PageDoc, lines: dict, results: Mapping[str, Result],
                crops: Mapping[str, LineCrop], glyphs: bool, creator: str) -> None:
    from .datasets import alto

    ns = namespace(root)
    major = _alto_version(root)
    glyphs = glyphs and major >= 4  # Glyph (and Processing) exist from ALTO 4.0 on
    scale = alto._scale(doc.root, doc.path, doc.image)  # pixels per MeasurementUnit, as the reader used
    used = {e.get("ID") for e in root.iter(etree.Element) if e.get("ID")}
    moved: dict[str, str] = {}
    for line in doc.lines:
        result = results.get(line_key(line))
        if result is None:
            continue
        el = lines[line.element]
        crop = crops.get(line_key(line))
        for old_id in _alto_line(el, result, _Geometry(crop) if crop else None, ns, scale, used, glyphs):
            moved[old_id] = el.get("ID", "")
        _reindent(el, _children(el, *_ALTO_TEXT))
    _alto_reading_order(root, {k: v for k, v in moved.items() if k not in used})
    _alto_processing(root, ns, major, creator, _now(), used)


# ---------------------------------------------------------------- page files

def page_xml(doc: PageDoc, results: Mapping[str, Result], *, words: bool = True, glyphs: bool = False,
             creator: str = "htrjand", crops: Mapping[str, LineCrop] | None = None) -> bytes:
    """`doc` serialised in its own format (PAGE or ALTO) with the recognised lines written in.

    `results` maps `line_key(line)` (the line's id) to its `Result`; other lines stay as they are.
    `words` adds word boxes (PAGE Word, ALTO String per word; ALTO always gets one String per word),
    `glyphs` character boxes (PAGE Glyph, ALTO 4 Glyph). `crops` are the `LineCrop`s the lines
    were cut with (default: made again from `doc` as the readers make them). `doc.root` is not
    changed. Comments and processing instructions of the original file are not kept (the reader
    drops them)."""
    if doc.format not in ("page", "alto"):
        raise DataError(f"{doc.path}: cannot write format {doc.format!r} (page or alto)")
    root = copy.deepcopy(doc.root)
    lines = {orig: new for orig, new in zip(doc.root.iter(), root.iter())}
    crops = crops if crops is not None else _crops(doc)
    if doc.format == "page":
        _write_page(root, doc, lines, results, crops, words, glyphs, creator)
    else:
        _write_alto(root, doc, lines, results, crops, glyphs, creator)
    return _declaration(doc.path) + etree.tostring(root, encoding="UTF-8") + b"\n"


def _declaration(path: Path) -> bytes:
    """An XML declaration keeping the original's `standalone` (the parsed tree does not say it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(200)
    except OSError:
        head = b""
    m = re.match(rb"(?:\xef\xbb\xbf)?<\?xml[^>]*?standalone\s*=\s*[\"'](yes|no)[\"']", head)
    return b'<?xml version="1.0" encoding="UTF-8"' + (b' standalone="%s"' % m.group(1) if m else b"") + b"?>\n"


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plainly created file (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def write_page(doc: PageDoc, results: Mapping[str, Result], out_path: str | Path, **kw) -> Path:
    """Write `page_xml(doc, results, **kw)` to `out_path` atomically; never over the input file."""
    out_path = Path(out_path)
    if _same_file(out_path, doc.path):
        raise DataError(f"{out_path}: refusing to overwrite the input file {doc.path}; write to another folder")
    return write_atomic(out_path, page_xml(doc, results, **kw))


def link_image(doc: PageDoc, out_path: str | Path) -> Path | None:
    """Make the page image the written file names findable from `out_path` (as `layout.find_image`
    looks for it): when it is not, a symbolic link named as the reference is made next to the file.
    Returns the link made (None when none was needed or possible)."""
    out_path = Path(out_path)
    if doc.image is None:
        return None
    found, _ = layout.find_image(out_path, doc.image_ref)
    if found is not None and _same_file(found, doc.image):
        return None
    name = re.split(r"[\\/]", doc.image_ref.strip())[-1] if doc.image_ref.strip() and "://" not in doc.image_ref \
        else doc.image.name
    link = out_path.parent / (name or doc.image.name)
    if link.exists() or link.is_symlink():
        return None
    try:
        link.symlink_to(doc.image.resolve())
    except OSError:
        return None
    return link


# ---------------------------------------------------------------- text, TSV, JSON

_BREAKS = re.compile("[\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # tab and what str.splitlines splits on


def _one_line(text: str) -> str:
    """`text` with tabs and line breaks as spaces (one TSV field)."""
    return _BREAKS.sub(" ", text)


def text_lines(results: Iterable[Result], sources: bool = True) -> str:
    """One line per result: `source<TAB>text<TAB>confidence` (`sources`), or the text alone (a
    failed line gives an empty line, so that lines stay aligned with their inputs)."""
    rows = []
    for r in results:
        if sources:
            if r.error is None:
                rows.append(f"{_one_line(r.source)}\t{_one_line(r.text)}\t{r.confidence:.3f}")
        else:
            rows.append(_one_line(r.text) if r.error is None else "")
    return "".join(row + "\n" for row in rows)


TSV_HEADER = "# image\ttext\tconfidence (htrjand recognize)\n"


def tsv_row(result: Result, folder: Path | None = None) -> str:
    """One manifest row `image<TAB>text<TAB>confidence` (see `tsv`), '' for a failed line."""
    if result.error is not None:
        return ""
    image = result.source
    if folder is not None and image and not re.search(r":\d+$", image):
        try:
            image = os.path.relpath(Path(image).resolve(), Path(folder).resolve())
        except ValueError:  # another drive (Windows)
            image = str(Path(image).resolve())
    image = _one_line(image)
    if image.startswith("#"):
        image = "./" + image  # not a comment
    return f"{image}\t{_one_line(result.text)}\t{result.confidence:.4f}\n"


def tsv(results: Iterable[Result], folder: Path | None = None) -> str:
    """A TSV manifest `image<TAB>text<TAB>confidence` (what `manifest` reads; extra columns are
    ignored there) after a comment line. Image paths are made relative to `folder` (the TSV's) where
    possible; texts get tabs and line breaks as spaces. Failed lines are left out."""
    return TSV_HEADER + "".join(tsv_row(r, folder) for r in results)


def json_text(results: Iterable[Result]) -> str:
    """The results as a JSON list of `Result.to_dict()` records."""
    return json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- inputs that are whole pages

PAGE_MIN_HEIGHT = 400  # an image taller than this and narrower than PAGE_MAX_ASPECT heights is a page
PAGE_MAX_ASPECT = 4.0


def page_image_warning(path: str | Path) -> str | None:
    """A message when `path` looks like a whole page rather than a text line (taller than 400 px
    and less than 4 times as wide as tall); None for line images and unreadable files."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
        return None
    if height <= PAGE_MIN_HEIGHT or width / height >= PAGE_MAX_ASPECT:
        return None
    stem = Path(path).with_suffix(".xml")
    return (f"{path}: {width}x{height} pixels looks like a whole page, not a text line. htrjand reads text "
            f"lines: find the lines first (line segmentation), e.g. `kraken -x -i {path} {stem} segment -bl` "
            f"(PAGE XML; -a for ALTO), or eScriptorium or Transkribus (export PAGE XML or ALTO), then give "
            f"htrjand the XML file: `htrjand recognize MODEL {stem}`. Skipped (--force-line reads it as one line).")


__all__ = ["json_text", "line_key", "link_image", "page_image_warning", "page_xml", "text_lines", "tsv",
           "tsv_row", "write_atomic", "write_page", "TSV_HEADER"]
