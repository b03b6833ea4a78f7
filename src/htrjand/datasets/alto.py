"""ALTO v2, v3 and v4 (eScriptorium, Kraken, OCR exports): text lines cut from page images.

A TextLine's polygon is `Shape/Polygon/@POINTS`, else its HPOS/VPOS/WIDTH/HEIGHT box, else its
baseline grown to a box. `BASELINE` is a point list in ALTO 4 ("x1,y1 x2,y2" or "x1 y1 x2 y2") and
a single y value before. Text: String/@CONTENT, SP as a space and HYP as its hyphen character, in
order. Coordinates in `mm10` or `inch1200` units are converted to pixels with the image's DPI (else
the ratio of image to page size, else 300 dpi with a warning). Reading order: ALTO 4 `ReadingOrder`
when present (groups nested, ElementRef to blocks, lines or strings), then the remaining lines in
document order. Line types: the LABELs of the `Tags` a line's TAGREFS names, then its block's.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lxml import etree
from PIL import Image

from . import geometry, layout
from .layout import PageDoc, PageLine
from .paths import Confinement
from .sample import DataError, Problems, Sample
from .spec import DatasetSpec
from .xml import local, parse_xml

FORMAT = "alto"
log = logging.getLogger("htrjand")

UNITS_PER_INCH = {"mm10": 254.0, "inch1200": 1200.0}
DEFAULT_DPI = 300.0
_GROUPS = ("OrderedGroup", "UnorderedGroup")


def detect(path: Path) -> bool:
    """An .xml file (or a folder/glob holding .xml files) whose root element is alto."""
    return layout.holds_format(path, FORMAT)


def read(spec: DatasetSpec, problems: Problems) -> list[Sample]:
    return layout.read_pages(spec, problems, FORMAT)


def page_lines(path: Path, problems: Problems | None = None) -> list[PageLine]:
    """The TextLines of one ALTO file in reading order (geometry, text, types and elements)."""
    return parse_alto(parse_xml(path), path, problems).lines


def _child(element: etree._Element | None, *names: str) -> etree._Element | None:
    """The first descendant along a path of local names (`_child(root, 'Description', 'fileName')`)."""
    for name in names:
        if element is None:
            return None
        element = next((c for c in element if local(c.tag) == name), None)
    return element


def _float(element: etree._Element, attr: str) -> float | None:
    value = element.get(attr)
    if value is None or not value.strip():
        return None
    try:
        return geometry.number(value)
    except geometry.PointsError as err:
        raise ValueError(f"{attr}: {err}") from None  # reported by the caller


def _scale(root: etree._Element, path: Path, image: Path | None) -> float:
    """Pixels per ALTO measurement unit."""
    unit_el = _child(root, "Description", "MeasurementUnit")
    unit = (unit_el.text or "").strip().lower() if unit_el is not None else ""
    if unit in ("", "pixel"):
        return 1.0
    if unit not in UNITS_PER_INCH:
        where = f"{path}:{unit_el.sourceline}"
        raise DataError(f"{where}: unknown MeasurementUnit {unit!r} (known: pixel, mm10, inch1200)")
    size = dpi = None
    if image is not None:
        try:
            size, dpi = layout.image_header(image)
        except (OSError, Image.DecompressionBombError):
            pass  # reported as an unreadable image when its lines are cut
    if dpi:
        return dpi / UNITS_PER_INCH[unit]
    page = next((e for e in root.iter(etree.Element) if local(e.tag) == "Page"), None)
    try:
        page_width = _float(page, "WIDTH") if page is not None else None
    except ValueError:
        page_width = None
    if size and page_width:
        log.info("%s: coordinates in %s; %s has no DPI, scaling by image/page width", path, unit, image)
        return size[0] / page_width
    log.warning("%s: coordinates in %s but the image's DPI is unknown; assuming %g dpi", path, unit,
                DEFAULT_DPI)
    return DEFAULT_DPI / UNITS_PER_INCH[unit]


def _tag_labels(root: etree._Element) -> dict[str, str]:
    tags = _child(root, "Tags")
    labels = {}
    for tag in tags if tags is not None else ():
        label = tag.get("LABEL") or tag.get("TYPE") or ""
        if tag.get("ID") and label.strip():
            labels[tag.get("ID")] = label.strip()
    return labels


def _labels(element: etree._Element | None, tags: dict[str, str]) -> tuple[str, ...]:
    if element is None:
        return ()
    return tuple(dict.fromkeys(tags[r] for r in (element.get("TAGREFS") or "").split() if r in tags))


def _text(line: etree._Element) -> str:
    parts = []
    for child in line:
        name = local(child.tag)
        if name == "String":
            parts.append(child.get("CONTENT") or "")
        elif name == "SP":
            parts.append(" ")
        elif name == "HYP":
            parts.append(child.get("CONTENT") or "-")
    return "".join(parts)


def _reading_order(root: etree._Element) -> list[str]:
    """Element ids in the order of an ALTO 4 ReadingOrder (empty without one)."""
    ids: list[str] = []

    def walk(group: etree._Element) -> None:
        ids.extend((group.get("REF") or "").split())
        for member in group:
            if local(member.tag) == "ElementRef":
                ids.extend((member.get("REF") or "").split())
            elif local(member.tag) in _GROUPS:
                walk(member)

    order = _child(root, "ReadingOrder")
    for group in order if order is not None else ():
        if local(group.tag) in _GROUPS:
            walk(group)
    return ids


def parse_alto(root: etree._Element, path: Path, problems: Problems | None = None,
               confine: Confinement | None = None) -> PageDoc:
    """A `PageDoc` of a parsed ALTO file (coordinates in pixels; the image is looked for within
    `confine`, see `layout.page_confinement`)."""
    name_el = _child(root, "Description", "sourceImageInformation", "fileName")
    image_ref = (name_el.text or "").strip() if name_el is not None else ""
    image, tried, refused = layout.locate_image(path, image_ref, confine)
    where_el = next((e for e in (name_el, _child(root, "Description")) if e is not None), root)
    scale = _scale(root, path, image)
    layout_el = _child(root, "Layout")
    if layout_el is None:
        raise DataError(f"{path}:{root.sourceline}: ALTO file has no Layout element")
    page = next((e for e in layout_el if local(e.tag) == "Page"), None)
    size = None
    if page is not None and scale == 1.0:
        try:
            w, h = _float(page, "WIDTH"), _float(page, "HEIGHT")
            size = (w, h) if w and h else None
        except ValueError:
            size = None
    doc = PageDoc(path, FORMAT, root, image, image_ref, f"{path}:{where_el.sourceline}", size=size,
                  fallbacks=("box", "baseline"), images_tried=tried, image_refused=refused)

    tags = _tag_labels(root)
    ordered: list[PageLine] = []
    for element in layout_el.iter(etree.Element):
        if local(element.tag) == "TextLine":
            ordered.append(_alto_line(element, len(ordered), path, scale, tags, problems))
    by_element = {line.element: line for line in ordered}

    ids = {e.get("ID"): e for e in layout_el.iter(etree.Element) if e.get("ID")}
    placed: set[int] = set()
    for ref in _reading_order(root):
        target = ids.get(ref)
        if target is None:
            log.warning("%s: ReadingOrder names %r, which the file does not have", path, ref)
            continue
        if local(target.tag) in ("String", "Glyph", "SP", "HYP"):
            target = next((a for a in target.iterancestors() if local(a.tag) == "TextLine"), target)
        members = [target] if local(target.tag) == "TextLine" else [
            e for e in target.iter(etree.Element) if local(e.tag) == "TextLine"]
        for element in members:
            line = by_element.get(element)
            if line is not None and line.index not in placed:
                placed.add(line.index)
                doc.lines.append(line)
    doc.lines.extend(line for line in ordered if line.index not in placed)
    return doc


def _alto_line(element: etree._Element, index: int, path: Path, scale: float, tags: dict[str, str],
               problems: Problems | None) -> PageLine:
    where = f"{path}:{element.sourceline}"
    polygon, polygon_error = (), ""
    shape_polygon = _child(element, "Shape", "Polygon")
    if shape_polygon is not None:
        try:
            polygon = geometry.scale_points(geometry.parse_points(shape_polygon.get("POINTS", "")), scale)
            if not polygon:
                polygon_error = "degenerate polygon (Polygon has no POINTS)"
        except geometry.PointsError as err:
            polygon_error = f"unparsable Polygon POINTS: {err}"
    box = None
    try:
        hpos, vpos, width, height = (_float(element, a) for a in ("HPOS", "VPOS", "WIDTH", "HEIGHT"))
        if None not in (hpos, vpos, width, height):
            box = (hpos * scale, vpos * scale, (hpos + width) * scale, (vpos + height) * scale)
    except ValueError:
        hpos = width = None
        layout.note(problems, "unparsable points", where, "HPOS/VPOS/WIDTH/HEIGHT are not numbers; box ignored")
    baseline: tuple = ()
    raw = (element.get("BASELINE") or "").strip()
    if raw:
        try:
            if len(raw.split()) == 1 and "," not in raw:  # ALTO 2/3: the baseline's y only
                y = geometry.number(raw)
                if hpos is not None and width is not None:
                    baseline = ((hpos * scale, y * scale), ((hpos + width) * scale, y * scale))
            else:
                baseline = geometry.scale_points(geometry.parse_points(raw), scale)
        except (geometry.PointsError, ValueError) as err:
            layout.note(problems, "unparsable points", where,
                        f"unparsable BASELINE {raw!r} ({err}); line used without a baseline")
    block = next((a for a in element.iterancestors() if local(a.tag) == "TextBlock"), None)
    return PageLine(
        id=element.get("ID", ""), index=index, source=where, element=element, text=_text(element),
        polygon=polygon, baseline=baseline, box=box, types=_labels(element, tags),
        region_id=block.get("ID", "") if block is not None else "", region_types=_labels(block, tags),
        polygon_error=polygon_error)
