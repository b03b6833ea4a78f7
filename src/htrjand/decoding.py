"""CTC decoding (spec 2.7): greedy best path or prefix beam search with an optional n-gram LM and
lexicon; confidences per character, word and line; character and word positions; n-best lists.

A `Decoder` turns one line's frame logits `[T, C]` into a `Decoded`. Beam search ranks prefixes by
    log P_ctc(prefix) + alpha * ln P_lm(prefix) + beta * tokens - oov_penalty * OOV words
(tokens = characters for a character LM, words for a word LM). A blank penalty lowers the blank's
logit before either search, so fewer characters are dropped (fitted per model by `htrjand calibrate`).
The best text is then aligned to the frames with a forced (Viterbi) CTC alignment, so greedy and beam
results carry the same per-character frame spans, confidences and positions.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .charset import BLANK, Charset, normalize_text
from .lm import SPACE, LanguageModel, Lexicon, LMError, check_alphabet, load_lm, load_lm_header

if TYPE_CHECKING:  # torch is not needed to decode (the ONNX runtime decodes numpy arrays)
    from torch import Tensor

    from .flashlight_search import FlashlightSearch

log = logging.getLogger("htrjand")

NEG_INF = -math.inf
LN10 = math.log(10.0)
DEFAULT_BEAM = 16
DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 1.0
DEFAULT_OOV_PENALTY = 2.0  # measured on copiste + hooker validation: 1 and 2 best, 4 worse (docs/decisions.md)
TOKEN_MIN_LOGP = -5.0  # characters below this log posterior in a frame are not tried by beam search
PRUNE_LOGP = 20.0  # prefixes scoring this much below the frame's best are dropped
ENGINES = ("python", "flashlight")  # who runs beam search (docs/decoding.md, "Beam engines")


class DecodingError(ValueError):
    """Decoding options that cannot be used together (the message says why)."""


@dataclass
class Word:
    """A whitespace-separated word of a decoded line."""

    text: str
    confidence: float  # product of its characters' confidences
    start: int  # index of its first character in the line text
    end: int  # one past its last character
    frames: tuple[int, int]  # [first, last + 1) output frames
    x: tuple[int, int] | None = None  # [x0, x1) in the original line image's pixels


@dataclass
class Candidate:
    """One entry of an n-best list (scores are natural logarithms)."""

    text: str
    score: float  # what the decoder ranks by (acoustic + alpha * lm + beta * tokens - penalties)
    acoustic: float  # log P(text | frames), summed over the alignments the beam kept (greedy: best path)
    lm: float = 0.0  # log P_lm(text) (0 without an LM)


@dataclass
class Decoded:
    """A decoded line: text, confidences, frame spans, pixel positions, words and n-best list."""

    text: str
    confidence: float  # mean of the character confidences (empty line: mean blank posterior)
    char_confidences: list[float] = field(default_factory=list)
    char_frames: list[tuple[int, int]] = field(default_factory=list)  # [start, end) output frames
    char_x: list[tuple[int, int]] = field(default_factory=list)  # [x0, x1) original image pixels
    words: list[Word] = field(default_factory=list)
    nbest: list[Candidate] = field(default_factory=list)


# ---- frame-level helpers --------------------------------------------------------------------------

def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def penalize_blank(logits: np.ndarray, penalty: float) -> np.ndarray:
    """`[T, C]` logits with `penalty` subtracted from the blank's (a copy; the same array when 0)."""
    if not penalty:
        return logits
    out = np.array(logits, dtype=np.float64)
    out[:, BLANK] -= penalty
    return out


def collapse(path: Sequence[int], previous: int = BLANK) -> tuple[list[int], list[tuple[int, int]]]:
    """A CTC frame path's labels (repeats merged, blanks dropped) with each label's frame span.
    `previous` is the token before the first frame: frames repeating it start no label."""
    labels: list[int] = []
    spans: list[tuple[int, int]] = []
    for t, f in enumerate(path):
        if f != BLANK and f != previous:
            labels.append(f)
            spans.append((t, t + 1))
        elif f != BLANK and spans:  # repeat of the same character: extend it
            spans[-1] = (spans[-1][0], t + 1)
        previous = f
    return labels, spans


def greedy_path(log_probs: np.ndarray) -> tuple[list[int], list[tuple[int, int]]]:
    """Best path: labels after merging repeats and dropping blanks, with each label's frame span."""
    return collapse(log_probs.argmax(-1).tolist())


def align(log_probs: np.ndarray, labels: Sequence[int]) -> list[tuple[int, int]]:
    """Forced CTC alignment (Viterbi): the frame span `[start, end)` of each label on the most
    probable path that reads `labels`. Raises DecodingError when the frames are too few."""
    n = len(labels)
    if n == 0:
        return []
    frames = log_probs.shape[0]
    states = 2 * n + 1
    ext = np.zeros(states, dtype=np.int64)
    ext[1::2] = labels
    emit = log_probs[:, ext]
    skip = np.zeros(states, dtype=bool)  # may come from two states back (a different label)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    delta = np.full(states, NEG_INF)
    delta[0] = emit[0, 0]
    delta[1] = emit[0, 1]
    back = np.zeros((frames, states), dtype=np.int8)
    pad1, pad2 = np.full(1, NEG_INF), np.full(2, NEG_INF)
    idx = np.arange(states)
    for t in range(1, frames):
        two = np.concatenate([pad2, delta[:-2]])
        two[~skip] = NEG_INF
        stacked = np.stack([delta, np.concatenate([pad1, delta[:-1]]), two])
        arg = stacked.argmax(0)
        back[t] = arg
        delta = stacked[arg, idx] + emit[t]
    end = states - 1 if states == 1 or delta[-1] >= delta[-2] else states - 2
    if not np.isfinite(delta[end]):
        raise DecodingError(f"{n} characters do not fit in {frames} frames")
    starts, ends = [frames] * n, [0] * n
    s = end
    for t in range(frames - 1, -1, -1):
        if s % 2 == 1:
            k = s // 2
            starts[k], ends[k] = min(starts[k], t), max(ends[k], t + 1)
        s -= int(back[t, s])
    return list(zip(starts, ends))


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


# ---- language scoring -----------------------------------------------------------------------------

_MISSING = object()
_first = itemgetter(0)


class LanguageScorer:
    """LM and lexicon scores of growing prefixes (states are hashable; results are cached).

    A state is `(lm_state, partial_word, flagged)`: `flagged` marks a partial word that has
    already paid the out-of-lexicon penalty. The cache holds LM log-probabilities, penalties and
    token counts apart from alpha and beta, so that `lm tune` can change the weights and keep it.
    """

    def __init__(self, charset: Charset, lm: LanguageModel | None = None, lexicon: Lexicon | None = None,
                 alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA, strict: bool = False,
                 oov_penalty: float = DEFAULT_OOV_PENALTY):
        self.chars = charset.chars
        self.lm, self.lexicon = lm, lexicon
        self.alpha, self.beta, self.strict, self.oov_penalty = alpha, beta, strict, oov_penalty
        self.unit = lm.unit if lm is not None else ""
        self.track_words = lexicon is not None or self.unit == "word"
        self._cache: dict[tuple, tuple | None] = {}

    def initial(self) -> tuple:
        return (self.lm.begin() if self.lm is not None else None, "", False)

    def _word_end(self, lm_state, word: str, flagged: bool) -> tuple | None:
        """(lm_state, penalty, lm_logp, tokens) for completing `word`, or None when it is forbidden."""
        penalty, lm_logp, tokens = 0.0, 0.0, 0
        if self.lexicon is not None and not flagged and not self.lexicon.word_ok(word):
            if self.strict:
                return None
            penalty -= self.oov_penalty
        if self.unit == "word":
            logp, lm_state = self.lm.score(lm_state, word)
            lm_logp, tokens = logp * LN10, 1
        return lm_state, penalty, lm_logp, tokens

    def _extend(self, state: tuple, label: int) -> tuple | None:
        lm_state, partial, flagged = state
        ch = self.chars[label - 1]
        penalty, lm_logp, tokens = 0.0, 0.0, 0
        if self.unit == "char":
            logp, lm_state = self.lm.score(lm_state, SPACE if ch == " " else ch)
            lm_logp, tokens = logp * LN10, 1
        if self.track_words:
            if ch == " ":
                if partial:
                    done = self._word_end(lm_state, partial, flagged)
                    if done is None:
                        return None
                    lm_state, penalty, lp, n = done
                    lm_logp, tokens = lm_logp + lp, tokens + n
                partial, flagged = "", False
            else:
                partial += ch
                if self.lexicon is not None and not flagged and not self.lexicon.prefix_ok(partial):
                    if self.strict:
                        return None
                    flagged = True
                    penalty -= self.oov_penalty
        return (lm_state, partial, flagged), penalty, lm_logp, tokens

    def extend(self, state: tuple, label: int) -> tuple | None:
        """(new state, score change, LM log-probability change) for appending `label`; None if forbidden."""
        key = (state, label)
        step = self._cache.get(key, _MISSING)
        if step is _MISSING:
            step = self._cache[key] = self._extend(state, label)
        if step is None:
            return None
        new, penalty, lm_logp, tokens = step
        return new, penalty + self.alpha * lm_logp + self.beta * tokens, lm_logp

    def finish(self, state: tuple) -> tuple[float, float] | None:
        """(score change, LM log-probability change) for ending the line here; None if forbidden."""
        lm_state, partial, flagged = state
        penalty, lm_logp, tokens = 0.0, 0.0, 0
        if self.track_words and partial:
            done = self._word_end(lm_state, partial, flagged)
            if done is None:
                return None
            lm_state, penalty, lm_logp, tokens = done
        if self.lm is not None:
            lm_logp += self.lm.end(lm_state) * LN10
        return penalty + self.alpha * lm_logp + self.beta * tokens, lm_logp


class _Node:
    """A prefix in the beam's prefix tree."""

    __slots__ = ("label", "parent", "children", "state", "bonus", "lm")

    def __init__(self, label: int, parent: "_Node | None", state, bonus: float, lm: float):
        self.label, self.parent, self.state, self.bonus, self.lm = label, parent, state, bonus, lm
        self.children: dict[int, _Node | None] = {}

    def labels(self) -> list[int]:
        out, node = [], self
        while node.parent is not None:
            out.append(node.label)
            node = node.parent
        return out[::-1]


@dataclass
class Hypothesis:
    labels: list[int]
    score: float
    acoustic: float
    lm: float
    spans: list[tuple[int, int]] | None = None  # each label's frames, where the search kept its alignment


def beam_search(log_probs: np.ndarray, beam_width: int = DEFAULT_BEAM, scorer: LanguageScorer | None = None,
                nbest: int = 1, token_min_logp: float = TOKEN_MIN_LOGP,
                prune_logp: float = PRUNE_LOGP) -> list[Hypothesis]:
    """CTC prefix beam search (Graves 2012; Hannun et al. 2014) over `[T, C]` log posteriors.

    Each prefix keeps the probability of its alignments ending in blank and in a character; the
    `beam_width` best prefixes by acoustic + language score survive each frame, minus those more
    than `prune_logp` below the best. Characters below `token_min_logp` in a frame are not tried.
    Returns up to `nbest` hypotheses, best first.
    """
    exp, log1p = math.exp, math.log1p
    rows = log_probs.tolist()
    mask = log_probs[:, 1:] >= token_min_logp
    candidates = [(np.flatnonzero(m) + 1).tolist() for m in mask]
    root = _Node(BLANK, None, scorer.initial() if scorer else None, 0.0, 0.0)
    beam: dict[_Node, list[float]] = {root: [0.0, NEG_INF]}  # node -> [log p ending blank, ending char]
    for t, row in enumerate(rows):
        blank, chars = row[0], candidates[t]
        nxt: dict[_Node, list[float]] = {}
        for node, (pb, pnb) in beam.items():
            if pb >= pnb:  # total = logaddexp(pb, pnb)
                total = pb if pnb == NEG_INF else pb + log1p(exp(pnb - pb))
            else:
                total = pnb if pb == NEG_INF else pnb + log1p(exp(pb - pnb))
            entry = nxt.get(node)
            if entry is None:
                entry = nxt[node] = [total + blank, pnb + row[node.label] if node.label else NEG_INF]
            else:
                entry[0] = _logaddexp(entry[0], total + blank)
                if node.label:
                    entry[1] = _logaddexp(entry[1], pnb + row[node.label])
            if not chars:
                continue
            children = node.children
            for c in chars:
                child = children.get(c, _MISSING)
                if child is _MISSING:
                    child = None
                    if scorer is None:
                        child = _Node(c, node, None, node.bonus, node.lm)
                    else:
                        step = scorer.extend(node.state, c)
                        if step is not None:
                            child = _Node(c, node, step[0], node.bonus + step[1], node.lm + step[2])
                    children[c] = child
                if child is None:
                    continue
                p = (pb if c == node.label else total) + row[c]
                centry = nxt.get(child)
                if centry is None:
                    nxt[child] = [NEG_INF, p]
                else:
                    centry[1] = _logaddexp(centry[1], p)
        scored = [(_logaddexp(v[0], v[1]) + n.bonus, n, v) for n, v in nxt.items()]
        scored.sort(key=_first, reverse=True)
        floor = scored[0][0] - prune_logp
        beam = {n: v for score, n, v in scored[:beam_width] if score >= floor}
    finished, unfinished = [], []
    for node, (pb, pnb) in beam.items():
        acoustic = _logaddexp(pb, pnb)
        end = scorer.finish(node.state) if scorer else (0.0, 0.0)
        if end is None:  # strict lexicon: the last word is not a word
            unfinished.append(Hypothesis(node.labels(), acoustic + node.bonus, acoustic, node.lm))
        else:
            finished.append(Hypothesis(node.labels(), acoustic + node.bonus + end[0], acoustic, node.lm + end[1]))
    results = finished or unfinished  # nothing in the lexicon survived: best effort
    results.sort(key=lambda h: h.score, reverse=True)
    return results[:max(nbest, 1)]


# ---- the decoder ----------------------------------------------------------------------------------

def _words(text: str, confs: list[float], spans: list[tuple[int, int]]) -> list[Word]:
    words, start = [], None
    for i, ch in enumerate(text + " "):
        if ch != " " and start is None:
            start = i
        elif ch == " " and start is not None:
            conf = math.prod(confs[start:i])
            words.append(Word(text[start:i], conf, start, i, (spans[start][0], spans[i - 1][1])))
            start = None
    return words


def _x_range(frames: tuple[int, int], px_per_frame: float, width: int | None) -> tuple[int, int]:
    x0 = math.floor(frames[0] * px_per_frame)
    x1 = math.ceil(frames[1] * px_per_frame)
    if width is not None:
        x0, x1 = min(x0, width), min(x1, width)
    return x0, x1


def _weights(lm, settings: dict, alpha: float | None, beta: float | None) -> tuple[float, float]:
    """Alpha and beta: as given, else the values stored beside the LM, else the defaults."""
    for key in ("alpha", "beta"):
        if not isinstance(settings.get(key, 0.0), (int, float)):
            raise LMError(f"{lm}.json: {key} must be a number, found {settings[key]!r}")
    return (settings.get("alpha", DEFAULT_ALPHA) if alpha is None else alpha,
            settings.get("beta", DEFAULT_BETA) if beta is None else beta)


class Decoder:
    """Greedy or beam decoding of CTC frame logits, with an optional LM and lexicon."""

    def __init__(self, charset: Charset, kind: str = "greedy", beam_width: int = DEFAULT_BEAM,
                 scorer: LanguageScorer | None = None, nbest: int = 5, token_min_logp: float = TOKEN_MIN_LOGP,
                 name: str = "", search: "FlashlightSearch | None" = None, blank_penalty: float = 0.0):
        if kind not in ("greedy", "beam"):
            raise DecodingError(f"decoder must be greedy or beam, got {kind!r}")
        if kind == "greedy" and (scorer is not None or search is not None):
            raise DecodingError("a language model or lexicon needs the beam decoder")
        if beam_width < 1:
            raise DecodingError(f"beam width must be at least 1, got {beam_width}")
        if not math.isfinite(blank_penalty):
            raise DecodingError(f"blank penalty must be a finite number, got {blank_penalty}")
        self.charset, self.kind, self.beam_width, self.scorer = charset, kind, beam_width, scorer
        self.blank_penalty = float(blank_penalty)  # subtracted from the blank's logit in every frame
        self.nbest, self.token_min_logp = nbest, token_min_logp
        self.search = search  # the C++ engine (flashlight_search) in place of `beam_search`
        self.name = name or self.describe()

    @classmethod
    def from_options(cls, charset: Charset, decoder: str | None = None, beam_width: int = DEFAULT_BEAM,
                     lm: str | Path | None = None, alpha: float | None = None, beta: float | None = None,
                     lexicon: str | Path | None = None, lexicon_mode: str = "penalty",
                     oov_penalty: float = DEFAULT_OOV_PENALTY, nbest: int = 5, lm_backend: str = "auto",
                     normalize=normalize_text, engine: str = "python", blank_penalty: float = 0.0) -> "Decoder":
        """A decoder from command-line style options; files are loaded and checked against the
        model's charset. `decoder` None means beam when an LM or lexicon is given, else greedy.
        Alpha and beta default to the values stored beside the LM (`lm tune`), else 0.5 and 1.
        `engine` runs beam search in Python (any LM, lexicons) or in flashlight-text's C++ decoder
        (character LMs, no lexicon; module flashlight_search). `blank_penalty` is subtracted from the
        blank's logit in every frame before the search."""
        kind = decoder or ("beam" if lm or lexicon else "greedy")
        if kind == "greedy" and (lm or lexicon):
            raise DecodingError("--lm and --lexicon need --decoder beam")
        if lexicon_mode not in ("penalty", "strict"):
            raise DecodingError(f"lexicon mode must be penalty or strict, got {lexicon_mode!r}")
        if engine not in ENGINES:
            raise DecodingError(f"beam engine must be {' or '.join(ENGINES)}, got {engine!r}")
        if engine == "flashlight" and kind == "beam":
            return cls._flashlight(charset, beam_width, lm, alpha, beta, lexicon, nbest, blank_penalty)
        model = words = None
        if lm:
            model, settings = load_lm(lm, lm_backend)
            for message in check_alphabet(model, charset, str(lm)):
                log.warning(message)
            alpha, beta = _weights(lm, settings, alpha, beta)
        if lexicon:
            words = Lexicon.load(lexicon, normalize)
            for message in words.check(charset):
                log.warning(message)
        scorer = None
        if model is not None or words is not None:
            scorer = LanguageScorer(charset, model, words, DEFAULT_ALPHA if alpha is None else float(alpha),
                                    DEFAULT_BETA if beta is None else float(beta), lexicon_mode == "strict",
                                    oov_penalty)
        return cls(charset, kind, beam_width, scorer, nbest, blank_penalty=blank_penalty)

    @classmethod
    def _flashlight(cls, charset: Charset, beam_width: int, lm: str | Path | None, alpha: float | None,
                    beta: float | None, lexicon: str | Path | None, nbest: int, blank_penalty: float) -> "Decoder":
        from .flashlight_search import FlashlightSearch, FlashlightUnavailable

        if lexicon:
            raise DecodingError("the flashlight beam engine has no lexicon: use --beam-engine python with --lexicon")
        if lm:
            model, settings = load_lm_header(lm)
            if model.unit != "char":
                raise DecodingError(f"{lm}: the flashlight beam engine takes character LMs only, this is a "
                                    f"{model.unit} LM (use --beam-engine python)")
            for message in check_alphabet(model, charset, str(lm)):
                log.warning(message)
            alpha, beta = _weights(lm, settings, alpha, beta)
        try:
            search = FlashlightSearch(charset, lm, float(alpha) if lm else 0.0, float(beta) if lm else 0.0, beam_width)
        except FlashlightUnavailable as err:
            raise DecodingError(str(err)) from None
        return cls(charset, "beam", beam_width, None, nbest, search=search, blank_penalty=blank_penalty)

    @property
    def weights(self) -> tuple[float, float] | None:
        """(alpha, beta) of the beam's LM, or None without an LM."""
        if self.search is not None:
            return (self.search.alpha, self.search.beta) if self.search.lm_path else None
        if self.scorer is None or self.scorer.lm is None:
            return None
        return self.scorer.alpha, self.scorer.beta

    def set_weights(self, alpha: float, beta: float) -> None:
        """Change the LM weight and insertion bonus (as `lm tune` does); the name follows."""
        if self.weights is None:
            raise DecodingError("only a beam decoder with a language model has LM weights")
        if self.search is not None:
            self.search.set_weights(float(alpha), float(beta))
        else:
            self.scorer.alpha, self.scorer.beta = float(alpha), float(beta)
        self.name = self.describe()

    def describe(self) -> str:
        penalty = f" (blank penalty {self.blank_penalty:g})" if self.blank_penalty else ""
        if self.kind == "greedy":
            return "greedy" + penalty
        if self.search is not None:
            return self.search.describe() + penalty
        parts = [f"beam {self.beam_width}" + (f" (characters above e^{self.token_min_logp:g})"
                                              if self.token_min_logp != TOKEN_MIN_LOGP else "")]
        s = self.scorer
        if s is not None and s.lm is not None:
            parts.append(f"{s.lm.unit} {s.lm.order}-gram LM (alpha {s.alpha:g}, beta {s.beta:g})")
        if s is not None and s.lexicon is not None:
            parts.append(f"lexicon {'strict' if s.strict else f'penalty {s.oov_penalty:g}'}")
        return " + ".join(parts) + penalty

    def decode_line(self, logits: np.ndarray, temperature: float = 1.0, px_per_frame: float | None = None,
                    width: int | None = None) -> Decoded:
        """Decode one line's `[T, C]` logits. Confidences use `softmax(logits / temperature)`;
        positions are given when `px_per_frame` (original pixels per output frame) is."""
        logits = np.asarray(logits, dtype=np.float64)
        log_probs = log_softmax(penalize_blank(logits, self.blank_penalty))
        if self.kind == "greedy":
            labels, spans = greedy_path(log_probs)
            text = self.charset.decode(labels)
            path = float(log_probs.max(-1).sum()) if len(log_probs) else 0.0
            nbest = [Candidate(text, path, path)]
        else:
            if self.search is not None:
                hyps = self.search(log_probs, self.nbest)
            else:
                hyps = beam_search(log_probs, self.beam_width, self.scorer, self.nbest, self.token_min_logp)
            labels, spans = hyps[0].labels, hyps[0].spans
            if spans is None:
                best_path, spans = greedy_path(log_probs)
                if best_path != labels:  # else the best path is also the text's best alignment
                    spans = align(log_probs, labels)
            text = self.charset.decode(labels)
            nbest = [Candidate(self.charset.decode(h.labels), h.score, h.acoustic, h.lm) for h in hyps]
        if temperature != 1.0 or self.blank_penalty:  # confidences from the model's own (tempered) posteriors
            probs = np.exp(log_softmax(logits / temperature))
        else:
            probs = np.exp(log_probs)
        confs = [float(probs[t0:t1, lab].max()) for lab, (t0, t1) in zip(labels, spans)]
        if confs:
            line_conf = sum(confs) / len(confs)
        else:
            line_conf = float(probs[:, BLANK].mean()) if len(probs) else 0.0
        words = _words(text, confs, spans)
        char_x: list[tuple[int, int]] = []
        if px_per_frame is not None:
            char_x = [_x_range(s, px_per_frame, width) for s in spans]
            for w in words:
                w.x = _x_range(w.frames, px_per_frame, width)
        return Decoded(text, line_conf, confs, spans, char_x, words, nbest)

    def decode(self, logits: Tensor, lengths: Tensor, temperature: float = 1.0,
               px_per_frame: Sequence[float] | None = None, widths: Sequence[int] | None = None) -> list[Decoded]:
        """Decode a batch of `[B, T, C]` logits with per-line frame counts."""
        array = logits.detach().float().cpu().numpy()
        out = []
        for i, n in enumerate(lengths.tolist()):
            out.append(self.decode_line(array[i, :n], temperature,
                                        px_per_frame[i] if px_per_frame is not None else None,
                                        widths[i] if widths is not None else None))
        return out


def greedy_decode(logits: Tensor, lengths: Tensor, charset: Charset) -> list[Decoded]:
    """Best-path decoding of `[B, T, C]` logits (used by training's validation)."""
    return Decoder(charset).decode(logits, lengths)


__all__ = ["Candidate", "Decoded", "Decoder", "DecodingError", "LMError", "LanguageScorer", "Word", "align",
           "beam_search", "collapse", "greedy_decode", "greedy_path", "log_softmax", "penalize_blank"]
