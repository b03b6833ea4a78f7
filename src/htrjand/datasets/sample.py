"""The one sample type all readers yield, and the record of skipped input."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("htrjand")


class DataError(ValueError):
    """Input data that cannot be used at all (the message names the file)."""


@dataclass
class Sample:
    """One text line: its image file, transcription, dataset name, writer/page group and origin."""

    image: Path
    text: str
    dataset: str
    group: str = ""
    source: str = ""  # "file:line" of the record that produced it


@dataclass
class Problems:
    """Skipped samples with the reason, counted by kind for the run summary."""

    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, where, message)

    def add(self, kind: str, where: str, message: str) -> None:
        self.entries.append((kind, where, message))
        log.warning("%s: %s (skipped)", where, message)

    def counts(self) -> Counter:
        return Counter(kind for kind, _, _ in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def summary(self) -> str:
        if not self.entries:
            return "no samples skipped"
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts().items()))
        return f"{len(self.entries)} samples skipped: {parts}"
