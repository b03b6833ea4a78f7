"""Corpus-level CER and WER (spec 2.8) with rapidfuzz edit distances."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from .charset import normalize_text


def char_errors(reference: str, hypothesis: str) -> int:
    return Levenshtein.distance(normalize_text(reference), normalize_text(hypothesis))


def word_errors(reference: str, hypothesis: str) -> int:
    return Levenshtein.distance(normalize_text(reference).split(), normalize_text(hypothesis).split())


@dataclass
class ErrorTotals:
    char_errors: int = 0
    chars: int = 0
    word_errors: int = 0
    words: int = 0
    lines: int = 0

    def add(self, reference: str, hypothesis: str) -> None:
        ref = normalize_text(reference)
        self.char_errors += char_errors(ref, hypothesis)
        self.chars += len(ref)
        self.word_errors += word_errors(ref, hypothesis)
        self.words += len(ref.split())
        self.lines += 1

    @property
    def cer(self) -> float:
        """Sum of character edit distances over sum of reference lengths."""
        return self.char_errors / max(self.chars, 1)

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    def as_dict(self) -> dict:
        return {"cer": self.cer, "wer": self.wer, "lines": self.lines, "chars": self.chars,
                "char_errors": self.char_errors, "words": self.words, "word_errors": self.word_errors}


class ErrorCounter:
    """Accumulates errors per dataset and over all datasets."""

    def __init__(self) -> None:
        self.per_dataset: dict[str, ErrorTotals] = defaultdict(ErrorTotals)
        self.total = ErrorTotals()

    def add(self, reference: str, hypothesis: str, dataset: str = "") -> None:
        self.total.add(reference, hypothesis)
        if dataset:
            self.per_dataset[dataset].add(reference, hypothesis)


def corpus_totals(references: list[str], hypotheses: list[str]) -> ErrorTotals:
    totals = ErrorTotals()
    for r, h in zip(references, hypotheses, strict=True):
        totals.add(r, h)
    return totals


def cer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus CER: summed edit distances over summed reference lengths."""
    return corpus_totals(references, hypotheses).cer


def wer(references: list[str], hypotheses: list[str]) -> float:
    return corpus_totals(references, hypotheses).wer
