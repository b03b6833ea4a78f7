"""Safe XML parsing for dataset readers: no entity expansion, no network, no huge trees."""
from __future__ import annotations

from pathlib import Path

from lxml import etree

from .sample import DataError


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           remove_comments=True, remove_pis=True)


def parse_xml(path: Path) -> etree._Element:
    """The root element of `path`; malformed or unreadable files raise `DataError` naming the file
    and line (entities are never expanded and nothing is fetched, so XXE and billion-laughs files fail
    safely)."""
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
    if root is None:
        raise DataError(f"{path}: empty XML document")
    return root


def local(tag: object) -> str:
    """Tag name without its namespace (`{ns}TextLine` -> `TextLine`); '' for comments and PIs."""
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def namespace(element: etree._Element) -> str:
    """The namespace URI of an element's tag ('' when none)."""
    return etree.QName(element).namespace or ""
