"""Helpers shared by the benchmark readers: split lists of line ids, one-text-file-per-line layouts,
and the few XML entities their plain-text transcriptions carry."""
from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from .paths import Confinement, is_file
from .sample import DataError, Problems

_ENTITY = re.compile(r"&(?:quot|amp|apos|lt|gt|#[0-9]+|#x[0-9a-fA-F]+);")


def unescape_entities(text: str) -> str:
    """Decode the XML entities (`&quot;`, `&amp;`, `&#39;`...) that exports from XML left in plain
    text; anything else with an ampersand (Bentham's `&c.`) is kept as written."""
    return _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)


def read_id_list(path: Path) -> list[tuple[str, int]]:
    """(id, line number) of every non-blank, non-comment line of a split list (first token of each
    line). An unreadable or undecodable list cannot be used at all: `DataError` naming the file."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise DataError(f"{path}: cannot read split list ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: split list is not UTF-8 (byte {err.start})") from None
    ids = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            ids.append((fields[0], lineno))
    return ids


def text_lines(path: Path, problems: Problems, what: str) -> Iterator[tuple[int, str, str]]:
    """(line number, "file:line", text) of each line of a UTF-8 text file (BOM dropped); a line that is not UTF-8
    goes to `problems` and is skipped. An unreadable file raises `DataError` naming `what` it is."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read {what} ({err.strerror})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for lineno, raw_line in enumerate(raw.splitlines(), 1):
        where = f"{path}:{lineno}"
        try:
            yield lineno, where, raw_line.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.add("undecodable line", where, f"not UTF-8 (byte {err.start})")


Record = TypeVar("Record")


def select_listed(records: dict[str, Record], group_of: Callable[[Record], str], list_path: Path,
                  problems: Problems, group_name: str) -> list[Record]:
    """Records named by a split list, in its order. An entry is a record id or a group id (a form or
    page: all its records); one naming neither goes to `problems` with the list's file:line."""
    if not list_path.is_file():
        raise DataError(f"{list_path}: split list not found")
    groups: dict[str, list[Record]] = {}
    for key, record in records.items():
        groups.setdefault(group_of(record), []).append((key, record))
    chosen: dict[str, Record] = {}
    for entry, lineno in read_id_list(list_path):
        if entry in records:
            chosen.setdefault(entry, records[entry])
        elif entry in groups:
            for key, record in groups[entry]:
                chosen.setdefault(key, record)
        else:
            problems.add("unknown split id", f"{list_path}:{lineno}", f"{entry!r} names no line or {group_name}")
    return list(chosen.values())


def first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` that is a file in `folder`."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def image_index(folder: Path, suffixes: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")) -> dict[str, Path]:
    """Image files directly in `folder` by stem (one directory listing instead of a stat per line)."""
    index: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.suffix.lower() in suffixes and entry.stem not in index:
            index[entry.stem] = entry
    return index


def read_pairs(entries: list[tuple[str, str]], texts: Path, images: dict[str, Path], problems: Problems,
               decode: Callable[[str], str], confine: Confinement | None = None) -> list[tuple[str, Path, str, Path]]:
    """(line id, image, decoded text, transcription file) for each `(line id, where listed)` of a
    layout with one `<id>.txt` per line image; lines without both files, or (with `confine`) with
    either outside the dataset folder, go to `problems`."""
    pairs = []
    for line_id, listed in entries:
        text_file = texts / f"{line_id}.txt"
        if confine is not None and confine.refuse(text_file, problems, listed, f"transcription of line {line_id!r}"):
            continue
        if not is_file(text_file):
            kind = "missing transcription" if line_id in images else "unknown split id"
            problems.add(kind, listed, f"no transcription {text_file.name} for line {line_id}")
            continue
        if line_id not in images:
            problems.add("missing image", str(text_file), f"no image for line {line_id}")
            continue
        if confine is not None and confine.refuse(images[line_id], problems, str(text_file)):
            continue
        try:
            text = decode(text_file.read_bytes().decode("utf-8-sig"))
        except UnicodeDecodeError as err:
            problems.add("undecodable transcription", str(text_file), f"not UTF-8 (byte {err.start})")
            continue
        except OSError as err:
            problems.add("unreadable transcription", str(text_file), f"cannot read it ({err.strerror or err})")
            continue
        pairs.append((line_id, images[line_id], text, text_file))
    return pairs


def listed_or_all(list_path: Path | None, texts: Path) -> list[tuple[str, str]]:
    """(line id, where listed) from a split list, or of every transcription file when no list."""
    if list_path is None:
        return [(p.stem, str(p)) for p in sorted(texts.glob("*.txt"))]
    return [(line_id, f"{list_path}:{lineno}") for line_id, lineno in read_id_list(list_path)]
