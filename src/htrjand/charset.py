"""Character set: text normalisation and CTC encoding/decoding (blank = 0)."""
from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

BLANK = 0  # CTC blank index


def normalize_text(text: str) -> str:
    """NFC-normalise and collapse whitespace runs to one space (spec 2.1, 2.8)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def ctc_frames_needed(labels: Sequence) -> int:
    """Frames CTC needs for a label (indices or text): its length plus a blank between each repeated pair."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


class Charset:
    """An ordered set of characters; index 0 is reserved for the CTC blank."""

    def __init__(self, chars: Sequence[str]):
        if len(set(chars)) != len(chars):
            raise ValueError("charset has duplicate characters")
        if any(len(c) != 1 for c in chars):
            raise ValueError("charset entries must be single characters")
        self.chars: list[str] = list(chars)
        self._index = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1) -> "Charset":
        """Build from training transcriptions, most frequent first (ties by code point)."""
        counts = Counter(ch for t in texts for ch in normalize_text(t))
        kept = [c for c, n in counts.items() if n >= min_count]
        kept.sort(key=lambda c: (-counts[c], c))
        return cls(kept)

    @property
    def num_classes(self) -> int:
        """Output size of the CTC head (characters + blank)."""
        return len(self.chars) + 1

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: str) -> bool:
        return ch in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Charset) and self.chars == other.chars

    def unknown(self, text: str) -> Counter:
        """Characters of `text` that this charset cannot encode, with counts."""
        return Counter(ch for ch in normalize_text(text) if ch not in self._index)

    def encode(self, text: str, skip_unknown: bool = False) -> list[int]:
        """Label indices for `text`; raises KeyError naming the first unknown character
        (or leaves unknown characters out with `skip_unknown`, for validation losses)."""
        text = normalize_text(text)
        if skip_unknown:
            return [self._index[ch] for ch in text if ch in self._index]
        try:
            return [self._index[ch] for ch in text]
        except KeyError as err:
            raise KeyError(f"character {err.args[0]!r} is not in the charset") from None

    def decode(self, labels: Iterable[int]) -> str:
        """Label indices (no blanks, already collapsed) to text."""
        return "".join(self.chars[i - 1] for i in labels if i != BLANK)

    def to_list(self) -> list[str]:
        return list(self.chars)
