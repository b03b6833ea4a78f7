"""Corpus-level CER and WER (spec 2.8) with rapidfuzz edit distances, and where the character
errors come from: substitutions, deletions, insertions and the most frequent confusions."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

from .charset import normalize_text


CONFUSIONS = 20  # most frequent character errors kept per dataset in a report


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
    substitutions: int = 0
    deletions: int = 0  # reference characters the output lacks
    insertions: int = 0  # output characters the reference lacks
    confusions: Counter = field(default_factory=Counter)  # (reference char, output char) -> count, "" = none

    def add(self, reference: str, hypothesis: str) -> None:
        ref, hyp = normalize_text(reference), normalize_text(hypothesis)
        ops = Levenshtein.editops(ref, hyp)
        self.char_errors += len(ops)
        for op in ops:
            if op.tag == "replace":
                self.substitutions += 1
                self.confusions[ref[op.src_pos], hyp[op.dest_pos]] += 1
            elif op.tag == "delete":
                self.deletions += 1
                self.confusions[ref[op.src_pos], ""] += 1
            else:
                self.insertions += 1
                self.confusions["", hyp[op.dest_pos]] += 1
        self.chars += len(ref)
        self.word_errors += word_errors(ref, hyp)
        self.words += len(ref.split())
        self.lines += 1

    @property
    def cer(self) -> float:
        """Sum of character edit distances over sum of reference lengths."""
        return self.char_errors / max(self.chars, 1)

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    def as_dict(self, confusions: int = 0) -> dict:
        """Rates and counts; with `confusions`, also that many most frequent character errors as
        [reference char, output char, count] ("" for a deleted or inserted character)."""
        d = {"cer": self.cer, "wer": self.wer, "lines": self.lines, "chars": self.chars,
             "char_errors": self.char_errors, "words": self.words, "word_errors": self.word_errors,
             "substitutions": self.substitutions, "deletions": self.deletions, "insertions": self.insertions}
        if confusions:
            d["confusions"] = [[r, h, n] for (r, h), n in self.confusions.most_common(confusions)]
        return d


class ErrorCounter:
    """Accumulates errors per dataset and over all datasets."""

    def __init__(self) -> None:
        self.per_dataset: dict[str, ErrorTotals] = defaultdict(ErrorTotals)
        self.total = ErrorTotals()

    def add(self, reference: str, hypothesis: str, dataset: str = "") -> None:
        self.total.add(reference, hypothesis)
        if dataset:
            self.per_dataset[dataset].add(reference, hypothesis)

    def as_dict(self, confusions: int = CONFUSIONS) -> dict:
        """A report's `overall` and `datasets` sections, each with its most frequent confusions."""
        return {"overall": self.total.as_dict(confusions),
                "datasets": {name: t.as_dict(confusions) for name, t in sorted(self.per_dataset.items())}}


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
