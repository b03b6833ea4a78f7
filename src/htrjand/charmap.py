"""Character standardisation: one documented, configurable mapping applied to every transcription.

Datasets write the same character in different ways (curly or straight quotes, en dashes for
hyphens, the long s, ligatures). `CharMapping` folds them into one standard set, identically in
training (labels), evaluation (references and hypotheses) and recognition (output, lexicons, LMs).
The mapping a model was trained with is stored in its checkpoint.

A mapping file (YAML or JSON) looks like::

    base: default            # start from DEFAULT_TABLE ("none" to start empty)
    map: {"ſ": "s", "&": "et"}   # added or changed entries ("" deletes the character)
    keep: ["—"]              # entries of the base to drop (the character stays as it is)
    datasets:                # applied first, to that dataset's lines only (by dataset name)
      hooker: {"^": ""}

Keys may be one character or a longer string (replaced left to right, longest first).
"""
from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .charset import normalize_text

# The built-in table (docs/charset.md lists it with the reasons).
DEFAULT_TABLE: dict[str, str] = {
    # quotes and apostrophes -> ASCII
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u02bc": "'", "\u00b4": "'",
    "\u0060": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00a8": '"',
    # dashes and minus -> hyphen-minus
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u00ad": "",  # soft hyphen is invisible
    # ligatures that are typographic, not letters of a language
    "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st",
    # historical letter forms
    "\u017f": "s",  # long s
    # punctuation composites
    "\u2026": "...",
    # zero-width characters
    "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "",
}

BUILTIN = {"default": DEFAULT_TABLE, "none": {}}


class MappingError(ValueError):
    """A mapping file or value that cannot be used (the message names the file)."""


def _check_table(table: object, where: str) -> dict[str, str]:
    if not isinstance(table, Mapping):
        raise MappingError(f"{where}: a mapping table must map characters to replacements")
    out = {}
    for key, value in table.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise MappingError(f"{where}: entry {reprlib.repr(key)}: {reprlib.repr(value)} must map a "
                               "non-empty string to a string")
        out[key] = value
    return out


MAX_FLOW_DEPTH = 100  # `[`/`{` nesting a YAML file may have


def safe_yaml(text: str):
    """`yaml.safe_load(text)`, refusing first a text whose `[`/`{` nest deeper than MAX_FLOW_DEPTH
    (PyYAML's scanner is quadratic in that nesting: 5,000 `[` take 4.5 s before its RecursionError).
    Brackets in quoted strings count too; real files come nowhere near the limit."""
    depth = 0
    for bracket in re.findall(r"[\[\]{}]", text):
        depth = depth + 1 if bracket in "[{" else max(depth - 1, 0)
        if depth > MAX_FLOW_DEPTH:
            raise RecursionError(f"brackets nested more than {MAX_FLOW_DEPTH} levels deep")
    return yaml.safe_load(text)


@dataclass
class CharMapping:
    """Global and per-dataset replacement tables (see the module docstring)."""

    table: dict[str, str] = field(default_factory=dict)
    datasets: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._keys = sorted(self.table, key=len, reverse=True)
        self._dataset_keys = {d: sorted(t, key=len, reverse=True) for d, t in self.datasets.items()}

    @staticmethod
    def _scan(text: str, table: dict[str, str], keys: list[str]) -> tuple[str, list[tuple[str, str]]]:
        """`text` with the table's keys replaced left to right (longest first), and the replacements."""
        if not table or not any(k in text for k in keys):
            return text, []
        out, changes, i = [], [], 0
        while i < len(text):
            for k in keys:
                if text.startswith(k, i):
                    out.append(table[k])
                    changes.append((k, table[k]))
                    i += len(k)
                    break
            else:
                out.append(text[i])
                i += 1
        return "".join(out), changes

    def _tables(self, dataset: str) -> list[tuple[dict[str, str], list[str]]]:
        first = [(self.datasets[dataset], self._dataset_keys[dataset])] if dataset in self.datasets else []
        return first + [(self.table, self._keys)]

    def apply_with_changes(self, text: str, dataset: str = "") -> tuple[str, list[tuple[str, str]]]:
        """NFC text with this dataset's table, then the global table, applied (whitespace collapsed),
        and the (from, to) replacements made, in order."""
        text, changes = normalize_text(text), []
        for table, keys in self._tables(dataset):
            text, found = self._scan(text, table, keys)
            changes += found
        return normalize_text(text), changes

    def apply(self, text: str, dataset: str = "") -> str:
        return self.apply_with_changes(text, dataset)[0]

    def to_dict(self) -> dict:
        return {"table": dict(self.table), "datasets": {d: dict(t) for d, t in self.datasets.items()}}

    @classmethod
    def from_dict(cls, data: dict | None) -> "CharMapping":
        """From `to_dict()` output (as stored in checkpoints); None or {} is the identity mapping."""
        data = data or {}
        return cls(_check_table(data.get("table", {}), "stored mapping"),
                   {d: _check_table(t, f"stored mapping for {d}") for d, t in data.get("datasets", {}).items()})

    @classmethod
    def load(cls, value: str | Path | None) -> "CharMapping":
        """`default`, `none` (or empty) or the path of a YAML/JSON mapping file."""
        if value is None or str(value).strip() in ("", "none"):
            return cls()
        if str(value) in BUILTIN:
            return cls(dict(BUILTIN[str(value)]))
        path = Path(value)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MappingError(f"{path}: character mapping file not found (or use 'default' / 'none')") from None
        except (OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: a NUL in the path
            raise MappingError(f"{path}: cannot read character mapping ({err})") from None
        try:
            raw = json.loads(text) if path.suffix.lower() == ".json" else safe_yaml(text)
        except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: JSON errors, bad dates, huge ints
            raise MappingError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} "
                               f"({str(err) or 'nested too deeply'})".splitlines()[0]) from None
        if not isinstance(raw, dict):
            raise MappingError(f"{path}: a mapping file must be a mapping with base/map/keep/datasets")
        unknown = set(map(str, raw)) - {"base", "map", "keep", "datasets"}
        if unknown:
            raise MappingError(f"{path}: unknown keys {', '.join(sorted(unknown))} (known: base, map, keep, datasets)")
        base = raw.get("base", "default")
        if not isinstance(base, str) or base not in BUILTIN:
            raise MappingError(f"{path}: base must be one of {', '.join(BUILTIN)}, got {reprlib.repr(base)}")
        table = dict(BUILTIN[base])
        table.update(_check_table(raw.get("map") or {}, f"{path}: map"))
        keep = raw.get("keep") or []
        if not isinstance(keep, list) or not all(isinstance(key, (str, int, float)) for key in keep):
            raise MappingError(f"{path}: keep must be a list of characters, got {reprlib.repr(keep)}")
        for key in keep:
            table.pop(str(key), None)
        datasets = raw.get("datasets") or {}
        if not isinstance(datasets, dict):
            raise MappingError(f"{path}: datasets must map dataset names to tables")
        return cls(table, {str(d): _check_table(t, f"{path}: datasets.{d}") for d, t in datasets.items()})
