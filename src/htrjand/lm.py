"""N-gram language models and lexicons for beam search (spec 2.7).

* `build_lm` trains an interpolated modified Kneser-Ney n-gram model (Chen & Goodman 1998, the
  smoothing of KenLM's lmplz) over characters or words; `NGramLM.write_arpa` / `read_arpa` store it
  in the ARPA format that KenLM, SRILM and pyctcdecode read.
* `load_lm` opens an ARPA file with the pure-Python reader, or with KenLM (ARPA or KenLM binary)
  when the `kenlm` module is importable; both answer `begin / score / end` in log10.
* `load_lm_header` reads only an LM's unit and unigrams, for a decoder that loads the file itself
  (the flashlight beam engine).
* A sidecar `LM.arpa.json` records the unit, order and the tuned weights (alpha, beta).
* `Lexicon`: a word list for constraining beam search.

Character LMs write the space as the token `<space>`; every other character is its own token.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from .charset import Charset, normalize_text

log = logging.getLogger("htrjand")

BOS, EOS, UNK, SPACE = "<s>", "</s>", "<unk>", "<space>"
SPECIAL = (BOS, EOS, UNK)
UNITS = ("char", "word")
UNK_FLOOR = -10.0  # log10 probability of an unknown token when the ARPA file has no <unk>
KENLM_MAGIC = b"mmap lm "  # start of every KenLM binary file


class LMError(ValueError):
    """A language model or lexicon that cannot be used (the message names the file and line)."""


def tokenize(text: str, unit: str) -> list[str]:
    """LM tokens of a normalised line: characters (space = `<space>`) or whitespace-separated words."""
    if unit == "char":
        return [SPACE if ch == " " else ch for ch in text]
    return text.split()


def token_text(token: str) -> str:
    return " " if token == SPACE else token


# ---- the model ------------------------------------------------------------------------------------

class LanguageModel(Protocol):
    """What beam search needs from an LM (log10 probabilities; states are hashable)."""

    order: int
    unit: str

    def begin(self) -> object: ...
    def score(self, state: object, token: str) -> tuple[float, object]: ...
    def end(self, state: object) -> float: ...


@dataclass
class NGramLM:
    """A back-off n-gram model: `table[ngram] = (log10 prob, log10 backoff)` for every order."""

    order: int
    unit: str = "word"
    table: dict[tuple[str, ...], tuple[float, float]] = field(default_factory=dict)
    path: str = ""

    @property
    def vocab(self) -> set[str]:
        return {g[0] for g in self.table if len(g) == 1}

    def begin(self) -> tuple[str, ...]:
        return (BOS,) if self.order > 1 else ()

    def score(self, state: tuple[str, ...], token: str) -> tuple[float, tuple[str, ...]]:
        """log10 P(token | state) with back-off, and the state after it."""
        if (token,) not in self.table:
            token = UNK
        backoff = 0.0
        for start in range(len(state) + 1):
            context = state[start:]
            entry = self.table.get(context + (token,))
            if entry is not None:
                logp = backoff + entry[0]
                break
            if context:
                backoff += self.table.get(context, (0.0, 0.0))[1]
        else:
            logp = backoff + UNK_FLOOR
        new = (state + (token,))[-(self.order - 1):] if self.order > 1 else ()
        while new and new not in self.table:  # shortest state that still predicts the same
            new = new[1:]
        return logp, new

    def end(self, state: tuple[str, ...]) -> float:
        return self.score(state, EOS)[0]

    def sentence_logprob(self, tokens: Sequence[str]) -> float:
        """log10 P(tokens </s> | <s>)."""
        state, total = self.begin(), 0.0
        for tok in tokens:
            logp, state = self.score(state, tok)
            total += logp
        return total + self.end(state)

    def write_arpa(self, path: str | Path) -> None:
        """Write in ARPA format (orders ascending, entries sorted; backoff only where non-zero)."""
        by_order: dict[int, list[tuple[str, ...]]] = defaultdict(list)
        for g in self.table:
            by_order[len(g)].append(g)
        lines = ["\\data\\"] + [f"ngram {n}={len(by_order[n])}" for n in range(1, self.order + 1)]
        contexts = {g[:-1] for g in self.table if len(g) > 1}
        for n in range(1, self.order + 1):
            lines += ["", f"\\{n}-grams:"]
            for g in sorted(by_order[n]):
                logp, bo = self.table[g]
                row = f"{logp:.7g}\t{' '.join(g)}"
                if g in contexts:
                    row += f"\t{bo:.7g}"
                lines.append(row)
        lines += ["", "\\end\\", ""]
        Path(path).write_text("\n".join(lines), encoding="utf-8")


def read_arpa(path: str | Path, unit: str | None = None) -> NGramLM:
    """Parse an ARPA file; a malformed or truncated file raises `LMError` naming file:line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise LMError(f"{path}: cannot read language model ({err.strerror or err})") from None
    if raw.startswith(KENLM_MAGIC):
        raise LMError(f"{path}: this is a KenLM binary file; install the kenlm module "
                      "(pip install 'htrjand[kenlm]') or give the ARPA file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise LMError(f"{path}:{line}: not UTF-8 text (not an ARPA file?)") from None
    lines = text.splitlines()
    i = 0
    while i < len(lines) and lines[i].strip() != "\\data\\":
        i += 1
    if i == len(lines):
        raise LMError(f"{path}: no \\data\\ header: not an ARPA language model")
    counts: dict[int, int] = {}
    i += 1
    while i < len(lines) and lines[i].strip().startswith("ngram "):
        key, _, value = lines[i].strip()[6:].partition("=")
        try:
            counts[int(key)] = int(value)
        except ValueError:
            raise LMError(f"{path}:{i + 1}: bad count line {lines[i].strip()!r} (expected 'ngram N=COUNT')") from None
        i += 1
    if not counts or sorted(counts) != list(range(1, len(counts) + 1)):  # not max(): `ngram 99999999=1`
        raise LMError(f"{path}:{i + 1}: the \\data\\ section must list 'ngram 1=..' up to the model's order")
    order = max(counts)
    table: dict[tuple[str, ...], tuple[float, float]] = {}
    for n in range(1, order + 1):
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines):
            raise LMError(f"{path}:{i}: file ends before the \\{n}-grams: section (truncated?)")
        if lines[i].strip() != f"\\{n}-grams:":
            raise LMError(f"{path}:{i + 1}: expected \\{n}-grams:, found {lines[i].strip()[:40]!r}")
        i += 1
        seen = 0
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("\\"):
            parts = lines[i].split()
            if len(parts) not in (n + 1, n + 2):
                raise LMError(f"{path}:{i + 1}: a {n}-gram line needs a probability, {n} token(s) and an "
                              f"optional backoff, found {len(parts)} fields")
            try:
                logp = float(parts[0])
                bo = float(parts[n + 1]) if len(parts) == n + 2 else 0.0
            except ValueError:
                raise LMError(f"{path}:{i + 1}: probability or backoff is not a number") from None
            if logp > 0 or not math.isfinite(logp) or not math.isfinite(bo):
                raise LMError(f"{path}:{i + 1}: log10 probability must be a finite number <= 0 and the backoff "
                              f"finite, found {' '.join(parts[:1] + parts[n + 1:])}")
            table[tuple(parts[1:n + 1])] = (logp, bo)
            seen += 1
            i += 1
        if seen != counts[n]:
            where = "the file ends" if i >= len(lines) else "the section ends"
            raise LMError(f"{path}:{i}: {where} after {seen} {n}-grams, the header announces {counts[n]} "
                          "(truncated or edited file?)")
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines) or lines[i].strip() != "\\end\\":
        raise LMError(f"{path}:{i + 1}: missing \\end\\ after the {order}-grams (truncated file?)")
    lm = NGramLM(order, "word", table, str(path))
    lm.unit = unit or detect_unit(lm.vocab)
    return lm


def detect_unit(vocab: Iterable[str]) -> str:
    """`char` when every token is one character (or `<space>`), else `word`."""
    tokens = [t for t in vocab if t not in SPECIAL]
    return "char" if tokens and all(len(t) == 1 or t == SPACE for t in tokens) else "word"


# ---- training -------------------------------------------------------------------------------------

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # used for an order whose counts-of-counts cannot give valid ones


def _discounts(adjusted: Counter) -> tuple[tuple[float, float, float], bool]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the counts of counts (Chen & Goodman eq. 26)."""
    n = Counter(c for c in adjusted.values() if c <= 4)
    n1, n2, n3, n4 = (n.get(r, 0) for r in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) > 0:
        y = n1 / (n1 + 2 * n2)
        d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
        if 0 < d[0] < 1 and 0 < d[1] < 2 and 0 < d[2] < 3:
            return d, True
    return FALLBACK_DISCOUNTS, False


def build_lm(lines: Iterable[str], order: int, unit: str) -> tuple[NGramLM, dict]:
    """Interpolated modified Kneser-Ney n-gram model of normalised `lines` (one sentence each).

    The highest order uses raw counts, lower orders continuation counts (the number of distinct
    left neighbours), except n-grams that start with <s>, which have none and keep raw counts.
    Unigrams interpolate with the uniform distribution over the vocabulary (with <unk>), so every
    context's probabilities sum to one. Returns the model and statistics for the sidecar file.
    """
    if unit not in UNITS:
        raise LMError(f"LM unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if order < 1:
        raise LMError(f"LM order must be at least 1, got {order}")
    raw: list[Counter] = [Counter() for _ in range(order + 1)]  # raw[n][ngram]
    sentences = tokens_total = 0
    for line in lines:
        tokens = tokenize(line, unit)
        if not tokens:
            continue
        sentences += 1
        tokens_total += len(tokens)
        padded = [BOS, *tokens, EOS]
        for n in range(1, order + 1):
            counter = raw[n]
            for i in range(len(padded) - n + 1):
                counter[tuple(padded[i:i + n])] += 1
    if not sentences:
        raise LMError("no text to train a language model on (all inputs empty?)")
    adjusted: list[Counter] = [Counter() for _ in range(order + 1)]
    adjusted[order] = raw[order]
    for n in range(order - 1, 0, -1):
        cont = Counter(g[1:] for g in raw[n + 1])
        adjusted[n] = Counter({g: (c if g[0] == BOS else cont[g]) for g, c in raw[n].items()})
    vocab = {g[0] for g in raw[1]} - {BOS}
    uniform = 1.0 / (len(vocab | {UNK}))
    prob: dict[tuple[str, ...], float] = {}
    backoff: dict[tuple[str, ...], float] = {}
    discounts, valid = {}, {}
    for n in range(1, order + 1):
        counts = {g: c for g, c in adjusted[n].items() if g[-1] != BOS}
        d, valid[n] = _discounts(Counter(counts))
        discounts[n] = d
        total: dict[tuple[str, ...], float] = defaultdict(float)
        mass: dict[tuple[str, ...], float] = defaultdict(float)
        for g, c in counts.items():
            total[g[:-1]] += c
            mass[g[:-1]] += d[min(c, 3) - 1]
        gamma = {h: mass[h] / total[h] for h in total}
        for g, c in counts.items():
            h = g[:-1]
            lower = prob[g[1:]] if n > 1 else uniform
            prob[g] = (c - d[min(c, 3) - 1]) / total[h] + gamma[h] * lower
        if n == 1 and (UNK,) not in prob:  # <unk> gets its share of the uniform distribution only
            prob[(UNK,)] = gamma[()] * uniform
        backoff.update((h, gamma[h]) for h in gamma if h)
    table: dict[tuple[str, ...], tuple[float, float]] = {}
    for g, p in prob.items():
        bo = backoff.get(g)
        table[g] = (math.log10(p), math.log10(bo) if bo else 0.0)
    if order > 1:
        bo = backoff.get((BOS,))
        table[(BOS,)] = (-99.0, math.log10(bo) if bo else 0.0)
    lm = NGramLM(order, unit, table)
    stats = {"unit": unit, "order": order, "smoothing": "interpolated modified Kneser-Ney",
             "sentences": sentences, "tokens": tokens_total, "vocabulary": len(vocab),
             "ngrams": {str(n): sum(1 for g in table if len(g) == n) for n in range(1, order + 1)},
             "discounts": {str(n): [round(x, 4) for x in d] for n, d in discounts.items()},
             "fallback_discounts": [n for n, ok in valid.items() if not ok]}
    return lm, stats


# ---- sidecar and loading --------------------------------------------------------------------------

def sidecar_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def read_sidecar(path: str | Path) -> dict:
    """The JSON next to an LM (`LM.arpa.json`), or {} when there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:  # ValueError: JSON errors, huge ints
        raise LMError(f"{side}: cannot read the LM's settings ({str(err) or 'nested too deeply'})".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise LMError(f"{side}: LM settings must be a JSON object")
    return data


def write_sidecar(path: str | Path, data: dict) -> Path:
    side = sidecar_path(path)
    side.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return side


@contextlib.contextmanager
def quiet_stderr():
    """Silence output that C++ code writes to file descriptor 2."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class KenLMModel:
    """A KenLM model (ARPA or binary) behind the same interface as `NGramLM`."""

    def __init__(self, path: str | Path, unit: str | None = None):
        import kenlm

        self._kenlm = kenlm
        self.path = str(path)
        try:
            with quiet_stderr():  # KenLM draws a progress bar on stderr while it loads
                self.model = kenlm.Model(str(path))
        except (OSError, RuntimeError, ValueError) as err:
            raise LMError(f"{path}: KenLM cannot load this model ({str(err).splitlines()[0]})") from None
        self.order = self.model.order
        self.unit = unit or ("char" if SPACE in self.model else "word")
        self._states: dict[tuple[str, ...], object] = {}

    def __contains__(self, token: str) -> bool:
        return token in self.model

    def begin(self) -> tuple[str, ...]:
        state = self._kenlm.State()
        self.model.BeginSentenceWrite(state)
        self._states[(BOS,)] = state
        return (BOS,)

    def score(self, state: tuple[str, ...], token: str) -> tuple[float, tuple[str, ...]]:
        out = self._kenlm.State()
        logp = self.model.BaseScore(self._states[state], token, out)
        key = (state + (token,))[-(self.order - 1):] if self.order > 1 else ()
        self._states.setdefault(key, out)
        return logp, key

    def end(self, state: tuple[str, ...]) -> float:
        return self.model.BaseScore(self._states[state], EOS, self._kenlm.State())

    @property
    def vocab(self) -> set[str] | None:
        return _arpa_unigrams(Path(self.path))


def _arpa_unigrams(path: Path) -> set[str] | None:
    """The unigram tokens of an ARPA file (read up to the 2-grams), or None for a binary file."""
    with path.open("rb") as f:
        if f.read(len(KENLM_MAGIC)) == KENLM_MAGIC:
            return None
        f.seek(0)
        tokens, inside = set(), False
        for raw in f:
            line = raw.decode("utf-8", "replace").strip()
            if line == "\\1-grams:":
                inside = True
            elif inside and (line.startswith("\\") or not line):
                if tokens:
                    break
            elif inside:
                parts = line.split()
                if len(parts) >= 2:
                    tokens.add(parts[1])
        return tokens


def kenlm_available() -> bool:
    try:
        import kenlm  # noqa: F401
    except ImportError:
        return False
    return True


def _lm_settings(path: Path) -> tuple[dict, str | None]:
    """The sidecar settings of an LM file and its unit (None when the sidecar does not say)."""
    if not path.is_file():
        raise LMError(f"{path}: language model not found")
    settings = read_sidecar(path)
    unit = settings.get("unit")
    if unit is not None and unit not in UNITS:
        raise LMError(f"{sidecar_path(path)}: unit must be char or word, found {unit!r}")
    return settings, unit


def _check_unit(path: Path, unit: str | None, vocab: set[str] | None) -> None:
    if unit == "char" and vocab is not None and detect_unit(vocab) == "word":
        sample = sorted(t for t in vocab if t not in SPECIAL and len(t) > 1 and t != SPACE)[:3]
        raise LMError(f"{path}: unit mismatch: {sidecar_path(path).name} says char but the LM holds "
                      f"multi-character tokens such as {', '.join(map(repr, sample))}")


@dataclass
class LMHeader:
    """An LM's unit and unigrams, read without loading it (for a decoder that loads it itself).
    `vocab` is None for a KenLM binary file, whose tokens cannot be read without KenLM."""

    path: str
    unit: str
    vocab: set[str] | None

    def __contains__(self, token: str) -> bool:
        return self.vocab is None or token in self.vocab


def load_lm_header(path: str | Path) -> tuple[LMHeader, dict]:
    """An LM file's `LMHeader` and sidecar settings; the unit is the sidecar's, else read from the
    unigrams (a binary file without a sidecar unit is taken as a character LM)."""
    path = Path(path)
    settings, unit = _lm_settings(path)
    vocab = _arpa_unigrams(path)
    _check_unit(path, unit, vocab)
    return LMHeader(str(path), unit or (detect_unit(vocab) if vocab else "char"), vocab), settings


def load_lm(path: str | Path, backend: str = "auto") -> tuple[LanguageModel, dict]:
    """An LM and its sidecar settings. `backend`: auto (KenLM when importable, else Python),
    kenlm or python. KenLM binary files need the kenlm module."""
    path = Path(path)
    settings, unit = _lm_settings(path)
    if backend not in ("auto", "kenlm", "python"):
        raise LMError(f"unknown LM backend {backend!r} (auto, kenlm or python)")
    with path.open("rb") as f:
        binary = f.read(len(KENLM_MAGIC)) == KENLM_MAGIC
    use_kenlm = backend == "kenlm" or (backend == "auto" and kenlm_available())
    if use_kenlm and not kenlm_available():
        raise LMError(f"{path}: the kenlm module is not installed (pip install 'htrjand[kenlm]')")
    if use_kenlm:
        try:
            model: LanguageModel = KenLMModel(path, unit)
        except LMError:
            if not binary:
                read_arpa(path, unit)  # names the file and line of what is wrong, where it can
            raise
    else:
        model = read_arpa(path, unit)
    _check_unit(path, unit, getattr(model, "vocab", None))
    return model, settings


def check_alphabet(lm: LanguageModel, charset: Charset, where: str) -> list[str]:
    """Refuse an LM whose tokens the model mostly cannot produce; returns warnings for smaller gaps."""
    vocab = getattr(lm, "vocab", None)
    warnings = []
    if vocab is None:  # KenLM binary: probe the model's characters instead
        probe = [SPACE if c == " " else c for c in charset.chars]
        known = [c for c in probe if c in lm]  # type: ignore[operator]
        if lm.unit == "char" and len(known) < len(probe) / 2:
            raise LMError(f"{where}: the LM's alphabet does not match the model: {len(probe) - len(known)} of "
                          f"{len(probe)} model characters are unknown to the LM")
        return warnings
    tokens = [t for t in vocab if t not in SPECIAL]
    if not tokens:
        raise LMError(f"{where}: the LM has no tokens besides {', '.join(SPECIAL)}")
    if lm.unit == "char":
        chars = {token_text(t) for t in tokens}
        if any(len(c) != 1 for c in chars):
            raise LMError(f"{where}: unit mismatch: a character LM cannot hold tokens like "
                          f"{next(c for c in chars if len(c) != 1)!r}")
        foreign = sorted(c for c in chars if c not in charset)
        if len(foreign) > len(chars) / 2:
            raise LMError(f"{where}: the LM's alphabet does not match the model: {len(foreign)} of {len(chars)} LM "
                          f"characters cannot be produced by the model (e.g. {''.join(foreign[:10])!r})")
        missing = [c for c in charset.chars if c not in chars]
        if len(missing) > len(charset.chars) / 2:
            raise LMError(f"{where}: the LM's alphabet does not match the model: {len(missing)} of "
                          f"{len(charset.chars)} model characters never occur in the LM")
        if missing:
            warnings.append(f"{where}: {len(missing)} model characters are unknown to the LM and get its <unk> "
                            f"probability: {''.join(missing[:20])!r}")
    else:
        if detect_unit(tokens) == "char" and len(tokens) > 20 and SPACE in tokens:
            raise LMError(f"{where}: unit mismatch: this looks like a character LM (its tokens are single "
                          "characters and <space>) but is used as a word LM")
        foreign = [t for t in tokens if any(c not in charset for c in t)]
        if len(foreign) > len(tokens) / 2:
            raise LMError(f"{where}: the LM's alphabet does not match the model: {len(foreign)} of {len(tokens)} "
                          f"LM words contain characters the model cannot produce (e.g. {foreign[0]!r})")
        if foreign:
            warnings.append(f"{where}: {len(foreign)} of {len(tokens)} LM words contain characters the model "
                            "cannot produce")
    return warnings


# ---- lexicon --------------------------------------------------------------------------------------

def _edge(ch: str) -> bool:
    """Punctuation or symbol: stripped from both ends of a word before a lexicon look-up."""
    return unicodedata.category(ch)[0] in "PS"


def _has_letters(text: str) -> bool:
    """Whether a token is a word for the lexicon (numbers and punctuation always match)."""
    return any(c.isalpha() for c in text)


JOINS = re.compile(r"(?<=['’])|-")  # where a written word joins words: after an elision's apostrophe, at a hyphen


class Lexicon:
    """A word list. Matching is case-insensitive and ignores punctuation at either end of a word;
    a token without letters (numbers, punctuation) always matches. A word the list lacks also
    matches when its parts do: elisions and hyphenated compounds ("l'homme" from "l" and "homme",
    "peut-être" from "peut" and "être"), as word lists split by a tokenizer hold them."""

    def __init__(self, words: Iterable[str], path: str = ""):
        self.path = path
        # stored as they are matched: without punctuation at either end, in lower case, letters only
        self.words = {core for core in (self._core(w).lower() for w in words) if _has_letters(core)}
        self.prefixes = {w[:i] for w in self.words for i in range(1, len(w) + 1)}
        self.word_ok = lru_cache(maxsize=65536)(self._word_ok)
        self.prefix_ok = lru_cache(maxsize=65536)(self._prefix_ok)

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def load(cls, path: str | Path, normalize=normalize_text) -> "Lexicon":
        """One word per line (the first whitespace-separated field; later fields such as counts are
        ignored), UTF-8. Words are normalised like transcriptions."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LMError(f"{path}: lexicon not found") from None
        except UnicodeDecodeError as err:
            raise LMError(f"{path}: lexicon is not UTF-8 (byte {err.start})") from None
        except OSError as err:
            raise LMError(f"{path}: cannot read lexicon ({err.strerror})") from None
        words = []
        for line in text.splitlines():
            fields = normalize(line).split()
            if fields:
                words.append(fields[0])
        lexicon = cls(words, str(path))
        if not lexicon.words:
            raise LMError(f"{path}: lexicon is empty (expected one word with letters per line)")
        return lexicon

    @staticmethod
    def _core(word: str) -> str:
        start, end = 0, len(word)
        while start < end and _edge(word[start]):
            start += 1
        while end > start and _edge(word[end - 1]):
            end -= 1
        return word[start:end]

    def _word_ok(self, word: str) -> bool:
        core = self._core(word).lower()
        return not _has_letters(core) or core in self.words or self._parts_ok(core)

    def _parts_ok(self, core: str) -> bool:
        """Whether a joined word's parts (`JOINS`) are all words."""
        parts = JOINS.split(core)
        return len(parts) > 1 and self._words(parts)

    def _words(self, parts: list[str]) -> bool:
        return all(not _has_letters(c) or c in self.words for c in map(self._core, parts))

    def _prefix_ok(self, partial: str) -> bool:
        """Can `partial` still grow into a matching word (a lexicon prefix, maybe with trailing punctuation)?"""
        start = 0
        while start < len(partial) and _edge(partial[start]):
            start += 1
        body = partial[start:].lower()
        if not _has_letters(body):
            return True
        if body in self.prefixes:
            return True
        parts = JOINS.split(body)  # "l'hom": the finished parts are words, the last can still grow into one
        if len(parts) > 1 and self._words(parts[:-1]) and (not _has_letters(parts[-1]) or parts[-1] in self.prefixes):
            return True
        end = len(body)
        while end > 0 and _edge(body[end - 1]):  # "word," : a full word followed by punctuation
            end -= 1
            if self._word_ok(body[:end]):
                return True
        return False

    def check(self, charset: Charset) -> list[str]:
        """Refuse a lexicon the model cannot write at all; warn about words it cannot write."""
        chars = {c.lower() for c in charset.chars} | set(charset.chars)
        foreign = [w for w in self.words if any(c not in chars for c in w)]
        if len(foreign) == len(self.words):
            raise LMError(f"{self.path}: none of the lexicon's {len(self.words)} words can be written with the "
                          f"model's characters (e.g. {foreign[0]!r})")
        if foreign:
            return [f"{self.path}: {len(foreign)} of {len(self.words)} lexicon words contain characters the "
                    "model cannot produce"]
        return []


# ---- training text --------------------------------------------------------------------------------

def lexicon_words(lines: Iterable[str], min_count: int = 1) -> tuple[list[str], int]:
    """The words of `lines` as a `Lexicon` matches them (split at spaces, without punctuation at either end,
    with letters) seen at least `min_count` times, most frequent first, and the number of distinct words."""
    cores = (Lexicon._core(token) for line in lines for token in line.split())
    counts = Counter(core for core in cores if _has_letters(core))
    return sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)), len(counts)


WORDFREQ_WORDS = 20_000  # words per language `--wordfreq LANG` adds (validation: 20k and 50k equal, docs/decoding.md)


def wordfreq_words(spec: str) -> list[str]:
    """The most frequent words of a language from the `wordfreq` package's bundled lists (no download),
    as a `Lexicon` matches them: `spec` is `LANG` or `LANG:N` (default N: WORDFREQ_WORDS), e.g. `fr:50000`."""
    lang, _, count = spec.partition(":")
    try:
        n = int(count) if count else WORDFREQ_WORDS
    except ValueError:
        n = 0
    if not lang or n < 1:
        raise LMError(f"--wordfreq {spec!r}: expected LANG or LANG:N with N a positive number of words, e.g. en:20000")
    try:
        import wordfreq
    except ImportError:
        raise LMError("--wordfreq needs the wordfreq package: pip install 'htrjand[wordfreq]'") from None
    languages = wordfreq.available_languages("best")
    if lang not in languages:
        raise LMError(f"--wordfreq {spec!r}: wordfreq has no word list for {lang!r}; it has "
                      f"{', '.join(sorted(languages))}")
    cores = (Lexicon._core(normalize_text(w)) for w in wordfreq.top_n_list(lang, n, wordlist="best"))
    return list(dict.fromkeys(c for c in cores if _has_letters(c)))


def corpus_lines(inputs: Iterable[str], problems, normalize=None) -> list[str]:
    """Lines of text for `build_lm`: `text:PATH` or a `.txt` file is plain text (one line per line);
    anything else is a dataset (TSV manifest, folder, `FORMAT:PATH?...`) whose transcriptions are used.
    `normalize(text, dataset)` standardises each line (default: `normalize_text`)."""
    from .datasets import DataError, read_dataset

    normalize = normalize or (lambda text, dataset="": normalize_text(text))
    lines: list[str] = []
    for item in inputs:
        plain = item.startswith("text:")
        path = Path(item[5:] if plain else item)
        if plain or (path.suffix.lower() == ".txt" and "?" not in item and path.is_file()):
            try:
                raw = path.read_bytes()
            except OSError as err:
                raise DataError(f"{path}: cannot read text ({err.strerror or err})") from None
            for lineno, data in enumerate(raw.splitlines(), 1):
                try:
                    text = data.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    problems.add("undecodable line", f"{path}:{lineno}", f"not UTF-8 (byte {err.start})")
                    continue
                text = normalize(text, "")
                if text:
                    lines.append(text)
        else:
            lines += [normalize(s.text, s.dataset) for s in read_dataset(item, problems)]
    return [line for line in lines if line]
