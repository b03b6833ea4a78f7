"""Dataset specifications: which files, in which format, which split, under which name and weight.

On the command line and in YAML lists a dataset is a string `[FORMAT:]PATH[?key=value&...]`, e.g.
`copiste/train.tsv`, `iam:/data/IAM?split=train&scheme=aachen`, `washington:/data/gw?split=val&fold=cv2`,
`pages/*.xml?name=archive&weight=2`. In YAML it may also be a mapping with the same keys
(`{path: ..., format: iam, split: train, weight: 2, scheme: aachen}`). `split`, `name`, `weight` and
`keep_empty` are common to all formats, and so is `allow_outside` (read files that a dataset's own files
name outside its folder; see `htrjand.datasets.paths`); every other key is an option of the format's reader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from .sample import DataError

COMMON_KEYS = ("path", "format", "split", "name", "weight", "weight_end", "keep_empty", "allow_outside")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass
class DatasetSpec:
    path: Path
    format: str = "auto"
    split: str = ""
    name: str = ""
    weight: float | None = None  # sampling weight; None everywhere = every line once per epoch
    keep_empty: bool = False  # keep lines without transcription (recognition of PAGE/ALTO pages)
    options: dict[str, str] = field(default_factory=dict)
    allow_outside: bool | None = None  # None: the format's default (`paths.OPEN_FORMATS`)
    weight_end: float | None = None  # the weight at the last epoch (linear from `weight`): e.g. decaying synthetic data

    def option(self, key: str, default: str = "") -> str:
        return str(self.options.get(key, default))

    def __str__(self) -> str:
        query = {k: v for k, v in (("split", self.split), ("name", self.name)) if v}
        if self.weight is not None:
            query["weight"] = f"{self.weight:g}"
        if self.weight_end is not None:
            query["weight_end"] = f"{self.weight_end:g}"
        if self.allow_outside is not None:
            query["allow_outside"] = str(self.allow_outside).lower()
        query.update({k: str(v) for k, v in self.options.items()})
        text = str(self.path) if self.format == "auto" else f"{self.format}:{self.path}"
        return text + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def parse_spec(value: str | Path | dict | DatasetSpec, formats: tuple[str, ...] = ()) -> DatasetSpec:
    """A `DatasetSpec` from its string or mapping form (`formats`: the known format names)."""
    if isinstance(value, DatasetSpec):
        return value
    if isinstance(value, Path):
        return DatasetSpec(value)
    if isinstance(value, dict):
        raw = {str(k): v for k, v in value.items()}
        if "path" not in raw:
            raise DataError(f"dataset entry {value!r} has no 'path'")
    elif isinstance(value, str):
        text, raw = value, {}
        if "?" in text:
            text, query = text.split("?", 1)
            raw.update(parse_qsl(query, keep_blank_values=True))
        prefix, sep, rest = text.partition(":")
        if sep and prefix.lower() in formats:
            raw["format"], text = prefix.lower(), rest
        raw["path"] = text
    else:
        raise DataError(f"cannot use {value!r} as a dataset (give a path or a mapping)")
    fmt = str(raw.get("format", "auto")).lower()
    if formats and fmt != "auto" and fmt not in formats:
        raise DataError(f"{raw['path']}: unknown dataset format {fmt!r} (known: {', '.join(formats)})")
    weight, weight_end = (_weight(raw, key) for key in ("weight", "weight_end"))
    if weight_end is not None and weight is None:
        raise DataError(f"{raw['path']}: weight_end needs a (start) weight")
    keep_empty = str(raw.get("keep_empty", "false")).lower() in TRUE
    allow_outside = raw.get("allow_outside")
    if allow_outside is not None:
        if str(allow_outside).lower() not in TRUE + FALSE:
            raise DataError(f"{raw['path']}: allow_outside must be true or false, got {allow_outside!r}")
        allow_outside = str(allow_outside).lower() in TRUE
    options = {k: v for k, v in raw.items() if k not in COMMON_KEYS}
    return DatasetSpec(Path(str(raw["path"])).expanduser(), fmt, str(raw.get("split", "") or ""),
                       str(raw.get("name", "") or ""), weight, keep_empty, options, allow_outside, weight_end)


def _weight(raw: dict, key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{raw['path']}: dataset {key.replace('_', ' ')} {value!r} is not a number") from None
    if not value > 0:
        raise DataError(f"{raw['path']}: dataset {key.replace('_', ' ')} must be positive, got {value}")
    return value
