"""The one sample type all readers yield, where a line lies on its page, and the record of skipped input."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("htrjand")

Point = tuple[float, float]


class DataError(ValueError):
    """Input data that cannot be used at all (the message names the file)."""


@dataclass(frozen=True)
class LineCrop:
    """Where a text line lies on a page image, in page pixels.

    `polygon` outlines the line (at least 3 points; a box is 4); pixels outside it (dilated by a
    few pixels) are painted white when `mask` is set. `baseline` is kept when the source has one.
    """

    polygon: tuple[Point, ...]
    baseline: tuple[Point, ...] = ()
    mask: bool = True

    @classmethod
    def box(cls, left: float, top: float, right: float, bottom: float) -> "LineCrop":
        """An axis-aligned box (no masking needed)."""
        return cls(((left, top), (right, top), (right, bottom), (left, bottom)), mask=False)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of the polygon."""
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass
class Sample:
    """One text line: its image file, transcription, dataset name, writer/page group and origin.

    `image` is a line image file (or its encoded bytes, for datasets stored in Arrow/Parquet), or
    with `crop` set the page image the line is cut from. `source` is
    the "file:line" (or "file#line-id") of the record that produced it, for messages. `text` may
    be empty only for lines kept for recognition (a page line without transcription).
    """

    image: Path | bytes
    text: str
    dataset: str
    group: str = ""
    source: str = ""
    crop: LineCrop | None = None
    line_id: str = ""


@dataclass
class Problems:
    """Input problems, counted by kind for the run summary: `add` records a skipped sample, `warn`
    a repaired one that was kept (e.g. a self-intersecting polygon replaced by its hull)."""

    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, where, message): skipped
    warnings: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, where, message): kept

    def add(self, kind: str, where: str, message: str) -> None:
        self.entries.append((kind, where, message))
        log.warning("%s: %s (skipped)", where, message)

    def warn(self, kind: str, where: str, message: str) -> None:
        self.warnings.append((kind, where, message))
        log.warning("%s: %s (kept)", where, message)

    def counts(self) -> Counter:
        return Counter(kind for kind, _, _ in self.entries)

    def warning_counts(self) -> Counter:
        return Counter(kind for kind, _, _ in self.warnings)

    def __len__(self) -> int:
        return len(self.entries)

    def summary(self) -> str:
        parts = []
        if self.entries:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts().items()))
            parts.append(f"{len(self.entries)} samples skipped: {kinds}")
        if self.warnings:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.warning_counts().items()))
            parts.append(f"{len(self.warnings)} samples repaired and kept: {kinds}")
        return "; ".join(parts) or "no samples skipped"
