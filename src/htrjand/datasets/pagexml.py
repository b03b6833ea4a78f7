"""PAGE XML (PRImA; Transkribus and eScriptorium exports): text lines cut from page images.

Any `pagecontent/YYYY-MM-DD` namespace (2013-07-15 and 2019-07-15 tested). A TextLine's polygon is
`Coords/@points` (or the old `Coords/Point` children), with its `Baseline` grown to a box, then the
parent region's box as fallbacks. Text: the TextLine's `TextEquiv/Unicode` with the lowest `index`
(else the first), else its Words' texts joined by spaces. Reading order: `ReadingOrder` groups
(nested, indexed children by `@index`), then unlisted regions in document order; lines of a region
in document order, or by their `@index` (2019) / Transkribus `readingOrder {index:N;}` when every
line of the region has one. Line types: the `structure {type:...}` of the line's `@custom`, then
the region's `@type` and `@custom` structure type.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from lxml import etree

from . import geometry, layout
from .layout import PageDoc, PageLine
from .paths import Confinement
from .sample import Problems, Sample
from .spec import DatasetSpec
from .xml import local, parse_xml

FORMAT = "page"
log = logging.getLogger("htrjand")

_CUSTOM = re.compile(r"([\w-]+)\s*\{([^}]*)\}")
_GROUPS = ("OrderedGroup", "UnorderedGroup", "OrderedGroupIndexed", "UnorderedGroupIndexed")
_REFS = ("RegionRef", "RegionRefIndexed")


def detect(path: Path) -> bool:
    """An .xml file (or a folder/glob holding .xml files) whose root element is PcGts."""
    return layout.holds_format(path, FORMAT)


def read(spec: DatasetSpec, problems: Problems) -> list[Sample]:
    return layout.read_pages(spec, problems, FORMAT)


def page_lines(path: Path, problems: Problems | None = None) -> list[PageLine]:
    """The TextLines of one PAGE file in reading order (geometry, text, types and elements)."""
    return parse_page(parse_xml(path), path, problems).lines


def parse_custom(value: str | None) -> dict[str, dict[str, str]]:
    """`"readingOrder {index:0;} structure {type:heading;}"` -> {'readingOrder': {'index': '0'}, ...}."""
    out: dict[str, dict[str, str]] = {}
    for name, body in _CUSTOM.findall(value or ""):
        pairs = (item.split(":", 1) for item in body.split(";") if ":" in item)
        out.setdefault(name, {}).update({k.strip(): v.strip() for k, v in pairs})
    return out


def _children(element: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in element if local(c.tag) == name]


def _text_equiv(element: etree._Element) -> str | None:
    """Unicode of the element's main TextEquiv (lowest @index, else the first); None without one."""
    equivs = _children(element, "TextEquiv")
    if not equivs:
        return None

    def rank(pair: tuple[int, etree._Element]) -> tuple[int, int]:
        return (_int(pair[1].get("index"), 1 << 30), pair[0])

    best = min(enumerate(equivs), key=rank)[1]
    unicode = _children(best, "Unicode")
    return (unicode[0].text or "") if unicode else ""


def _line_text(line: etree._Element) -> str:
    text = _text_equiv(line)
    if text and text.strip():
        return text
    words = [t for t in (_text_equiv(w) for w in _children(line, "Word")) if t and t.strip()]
    return " ".join(w.strip() for w in words) if words else (text or "")


def _points(element: etree._Element | None, what: str) -> tuple[tuple, str]:
    """(points, error) of a Coords or Baseline element (`@points`, or PAGE 2010 `Point` children)."""
    if element is None:
        return (), ""
    try:
        if element.get("points") is not None:
            return geometry.parse_points(element.get("points")), ""
        points = _children(element, "Point")
        if len(points) > geometry.MAX_POINTS:
            raise geometry.PointsError(f"{len(points)} Point elements, more than {geometry.MAX_POINTS}")
        return tuple((geometry.number(p.get("x")), geometry.number(p.get("y"))) for p in points), ""
    except (geometry.PointsError, TypeError, ValueError) as err:
        return (), f"unparsable {what} points: {err}"


def _types(element: etree._Element, with_type_attr: bool) -> tuple[str, ...]:
    labels = [element.get("type", "")] if with_type_attr else []
    labels.append(parse_custom(element.get("custom")).get("structure", {}).get("type", ""))
    return tuple(dict.fromkeys(label.strip() for label in labels if label and label.strip()))


def _reading_order(page: etree._Element) -> list[str]:
    """Region ids in the order of the page's ReadingOrder (empty without one)."""
    order = next((c for c in page if local(c.tag) == "ReadingOrder"), None)
    ids: list[str] = []

    def walk(group: etree._Element) -> None:
        if group.get("regionRef"):
            ids.append(group.get("regionRef"))
        members = [c for c in group if local(c.tag) in _GROUPS + _REFS]
        if local(group.tag).startswith("OrderedGroup"):
            members.sort(key=lambda c: _int(c.get("index"), 1 << 30))  # stable: ties keep document order
        for member in members:
            if local(member.tag) in _REFS:
                ids.append(member.get("regionRef", ""))
            else:
                walk(member)

    for group in order if order is not None else ():
        if local(group.tag) in _GROUPS:
            walk(group)
    return [i for i in ids if i]


def _int(value: str | None, default: int) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _line_order(lines: list[etree._Element]) -> list[etree._Element]:
    """A region's lines by their @index (or Transkribus readingOrder index) when all have one."""
    for key in (lambda l: l.get("index"), lambda l: parse_custom(l.get("custom")).get("readingOrder", {}).get("index")):
        values = [_int(key(l), -1) for l in lines]
        if lines and all(v >= 0 for v in values):
            return [l for _, l in sorted(zip(values, lines), key=lambda p: p[0])]
    return lines


def parse_page(root: etree._Element, path: Path, problems: Problems | None = None,
               confine: Confinement | None = None) -> PageDoc:
    """A `PageDoc` of a parsed PAGE file (geometry problems are reported when lines are cut; the
    image is looked for within `confine`, see `layout.page_confinement`)."""
    page = next((c for c in root if local(c.tag) == "Page"), None)
    if page is None:
        page = root  # tolerate a missing Page wrapper: lines are found anyway
    image_ref = page.get("imageFilename", "")
    image, tried, refused = layout.locate_image(path, image_ref, confine)
    width, height = _int(page.get("imageWidth"), 0), _int(page.get("imageHeight"), 0)
    doc = PageDoc(path, FORMAT, root, image, image_ref, f"{path}:{page.sourceline}",
                  size=(width, height) if width > 0 and height > 0 else None,
                  fallbacks=("baseline", "box"), images_tried=tried, image_refused=refused)

    lines: dict[etree._Element, PageLine] = {}
    by_region: dict[etree._Element, list[etree._Element]] = {}
    regions: list[etree._Element] = []
    for element in page.iter(etree.Element):
        name = local(element.tag)
        if name.endswith("Region"):
            regions.append(element)
        elif name == "TextLine":
            region = element.getparent()
            by_region.setdefault(region, []).append(element)
            lines[element] = _page_line(element, region, len(lines), path, problems)

    listed = _reading_order(page)
    ids = {r.get("id"): r for r in regions if r.get("id")}
    for rid in listed:
        if rid not in ids:
            log.warning("%s: ReadingOrder names region %r, which the page does not have", path, rid)
    listed_set = set(listed)
    placed: set[etree._Element] = set()

    def place(region: etree._Element) -> None:
        if region in placed:
            return
        placed.add(region)
        doc.lines.extend(lines[l] for l in _line_order(by_region.get(region, [])))
        for inner in region.iter(etree.Element):  # unlisted regions nested in this one follow it
            if inner is not region and local(inner.tag).endswith("Region") and inner.get("id") not in listed_set:
                place(inner)

    for rid in listed:
        if rid in ids:
            place(ids[rid])
    for region in regions:
        place(region)
    for parent, members in by_region.items():  # lines outside any region (not valid PAGE, kept)
        if parent not in placed:
            doc.lines.extend(lines[l] for l in members)
    return doc


def _page_line(element: etree._Element, region: etree._Element, index: int, path: Path,
               problems: Problems | None) -> PageLine:
    where = f"{path}:{element.sourceline}"
    coords = next((c for c in element if local(c.tag) == "Coords"), None)
    polygon, polygon_error = _points(coords, "Coords")
    if coords is None:
        polygon_error = "line has no Coords"
    elif not polygon and not polygon_error:
        polygon_error = "degenerate polygon (Coords has no points)"
    baseline, baseline_error = _points(next((c for c in element if local(c.tag) == "Baseline"), None),
                                       "Baseline")
    if baseline_error:
        layout.note(problems, "unparsable points", where, baseline_error + "; line used without a baseline")
    region_box = None
    region_coords = next((c for c in region if local(c.tag) == "Coords"), None)
    region_points, _ = _points(region_coords, "Coords")
    if len(region_points) >= 2:
        region_box = geometry.bounds(region_points)
    is_region = local(region.tag).endswith("Region")
    return PageLine(
        id=element.get("id", ""), index=index, source=where, element=element, text=_line_text(element),
        polygon=polygon, baseline=baseline, box=region_box, types=_types(element, with_type_attr=False),
        region_id=region.get("id", "") if is_region else "",
        region_types=_types(region, with_type_attr=True) if is_region else (),
        polygon_error=polygon_error)
