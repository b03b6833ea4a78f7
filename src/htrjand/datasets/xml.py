"""Safe XML parsing for dataset readers: no entity expansion, no network, no DTD, no huge trees."""
from __future__ import annotations

from pathlib import Path

from lxml import etree

from .sample import DataError


class _NoResolver(etree.Resolver):
    """Refuses every external resource (DTD, entity, XInclude): nothing outside the file is read."""

    def resolve(self, url, public_id, context):  # noqa: ANN001 - lxml's signature
        raise DataError(f"refusing to load external resource {url!r}")


def _parser() -> etree.XMLParser:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=False, remove_comments=True, remove_pis=True)
    parser.resolvers.add(_NoResolver())
    return parser


def parse_xml(path: Path) -> etree._Element:
    """The root element of `path`; malformed or unreadable files raise `DataError` naming the file
    and line. Files that declare entities are refused (in any encoding), entities are never
    expanded, no DTD or other external resource is loaded and nothing is fetched, so XXE and
    billion-laughs files fail safely and quickly; `huge_tree` stays off (libxml2's limits on depth
    and on text size apply)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read XML file ({err.strerror})") from None
    if b"<!ENTITY" in data:
        raise DataError(f"{path}: XML declares entities, which htrjand does not expand (refused)")
    try:
        root = etree.fromstring(data, _parser(), base_url=str(path))
    except etree.XMLSyntaxError as err:
        line = getattr(err, "lineno", None) or (err.position[0] if getattr(err, "position", None) else "?")
        raise DataError(f"{path}:{line}: malformed XML ({err.msg})") from None
    except (etree.LxmlError, ValueError) as err:
        raise DataError(f"{path}: cannot parse XML ({str(err) or type(err).__name__})") from None
    if root is None:
        raise DataError(f"{path}: empty XML document")
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):  # e.g. UTF-16, where the check above is blind
        raise DataError(f"{path}: XML declares entities, which htrjand does not expand (refused)")
    return root


def local(tag: object) -> str:
    """Tag name without its namespace (`{ns}TextLine` -> `TextLine`); '' for comments and PIs."""
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def namespace(element: etree._Element) -> str:
    """The namespace URI of an element's tag ('' when none)."""
    return etree.QName(element).namespace or ""
