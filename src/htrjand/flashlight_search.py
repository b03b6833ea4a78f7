"""Beam search in C++: flashlight-text's lexicon-free CTC decoder with its KenLM scorer.

The optional `--beam-engine flashlight` (pip install 'htrjand[flashlight]'). It runs the same
search as `decoding.beam_search` (a character LM, no lexicon) several times faster, with these
differences (measured in docs/decoding.md, "Beam engines"):

* its beam holds alignment states (a prefix ending in blank and ending in a character are two
  entries), so it keeps `2 * beam_width` of them to hold as many prefixes as the Python search;
* the insertion bonus beta is paid per frame that emits a character rather than per character:
  flashlight's lexicon-free decoder has no per-token bonus, and folding beta into the LM's
  probabilities would make some of them positive, which KenLM refuses;
* character positions come from the decoder's own best alignment, and a line cannot start with a
  space (the decoder puts its word separator, the space, before the line).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .charset import BLANK, Charset
from .decoding import Hypothesis, collapse
from .lm import SPACE, LMError, quiet_stderr

LN10 = math.log(10.0)
# chosen on copiste + hooker validation with the bundled Student and a 6-gram (docs/decoding.md, "Beam engines"):
# 8 characters and a threshold of 20 read 19.45% CER at 81 lines/s, 6 and 12 read 19.48% at 123 lines/s
TOKEN_BEAM = 6  # characters tried per frame (the best by posterior)
BEAM_THRESHOLD = 12.0  # hypotheses scoring this much below the frame's best are dropped


class FlashlightUnavailable(ImportError):
    """flashlight-text is not installed."""


class FlashlightSearch:
    """CTC beam search over `[T, C]` log posteriors with an optional character n-gram LM (ARPA or KenLM binary).

    Calling it returns `decoding.Hypothesis` objects, best first, like `decoding.beam_search`, each
    with the frame span of every character on the decoder's own alignment."""

    def __init__(self, charset: Charset, lm: str | Path | None = None, alpha: float = 0.0, beta: float = 0.0,
                 beam_width: int = 16, prune_logp: float = BEAM_THRESHOLD, token_beam: int = TOKEN_BEAM):
        try:
            from flashlight.lib.text import decoder as fl
            from flashlight.lib.text.decoder.kenlm import KenLM
            from flashlight.lib.text.dictionary import Dictionary
        except ImportError:
            raise FlashlightUnavailable("the flashlight beam engine needs flashlight-text "
                                        "(pip install 'htrjand[flashlight]')") from None
        self.fl, self.charset, self.lm_path, self.beam_width = fl, charset, str(lm) if lm else None, beam_width
        tokens = ["<blank>"] + [SPACE if c == " " else c for c in charset.chars]
        if SPACE not in tokens:
            raise LMError("the flashlight beam engine needs a model whose charset has the space")
        self.space = tokens.index(SPACE)
        if lm:
            vocabulary = Dictionary()
            for token in tokens:
                vocabulary.add_entry(token)
            try:
                with quiet_stderr():  # KenLM draws a progress bar on stderr while it loads
                    self.lm = KenLM(str(lm), vocabulary)
            except (RuntimeError, OSError) as err:
                raise LMError(f"{lm}: KenLM (flashlight-text) cannot load this model "
                              f"({str(err).strip().splitlines()[-1]})") from None
        else:
            self.lm = fl.ZeroLM()
        self.token_beam, self.prune_logp = min(token_beam, len(tokens)), prune_logp
        self.set_weights(alpha, beta)

    def set_weights(self, alpha: float, beta: float) -> None:
        """The LM weight and the insertion bonus (natural-log units, as in `decoding.LanguageScorer`)."""
        self.alpha, self.beta = alpha, beta
        self.options = self.fl.LexiconFreeDecoderOptions(
            beam_size=2 * self.beam_width, beam_size_token=self.token_beam, beam_threshold=self.prune_logp,
            lm_weight=alpha * LN10 if self.lm_path else 0.0, sil_score=0.0, log_add=True,
            criterion_type=self.fl.CriterionType.CTC)

    def __call__(self, log_probs: np.ndarray, nbest: int = 1) -> list[Hypothesis]:
        emissions = np.ascontiguousarray(log_probs, dtype=np.float32)
        if self.beta:
            emissions[:, BLANK + 1:] += self.beta
        frames, classes = emissions.shape
        # a decoder per call: its states are not shared between threads
        decoder = self.fl.LexiconFreeDecoder(self.options, self.lm, self.space, BLANK, [])
        results = decoder.decode(emissions.ctypes.data, frames, classes)
        hypotheses, seen = [], set()
        for result in sorted(results, key=lambda r: r.score, reverse=True):
            path = result.tokens[1:-1]  # the decoder adds its word separator (the space) at both ends
            labels, spans = collapse(path, self.space)  # the first frame continues that leading separator
            key = tuple(labels)
            if key in seen:  # another alignment of the same text
                continue
            seen.add(key)
            emitting = len(path) - path.count(BLANK)  # frames that were paid beta
            hypotheses.append(Hypothesis(labels, result.score, result.emittingModelScore - self.beta * emitting,
                                         result.lmScore * LN10, spans))
            if len(hypotheses) >= max(nbest, 1):
                break
        return hypotheses

    def describe(self) -> str:
        text = f"flashlight beam {self.beam_width}"
        if self.lm_path:
            text += f" + character LM (alpha {self.alpha:g}, beta {self.beta:g} per emitting frame)"
        return text
