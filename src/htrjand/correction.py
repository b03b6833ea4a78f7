"""Context-aware T5 correction of recognised lines (spec 2.7).

A byte-level T5 reads a recognised line with the end of the previous and the start of the next
line of the same page, and writes the corrected line. The model input is

    prev: <last `context_chars` characters of the previous line> | line: <the line> | next: <first `context_chars` of the next line>

(`line: <the line>` alone when `context_chars` is 0). Tokens are ByT5's ids, no vocabulary file:
0 pad (also the decoder start), 1 end, 2 unknown, byte b -> b + 3 (vocabulary 384, ByT5's size).
A local T5/ByT5/mT5 folder can be fine-tuned instead (`init`); its own tokenizer is then used.

A correction is kept only if it is non-empty, uses only characters of the recogniser's charset,
and its edit distance to the hypothesis is at most max(gate.absolute, gate.relative * len(hypothesis)).

Training pairs come from `htrjand evaluate --json` reports (the recogniser's real outputs on
held-out lines) and from clean text corpora corrupted with the recogniser's own confusion
statistics (`NoiseModel`). `transformers` is imported only when a model is built or loaded.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath

import torch
from rapidfuzz.distance import Levenshtein

from . import __version__
from .charset import normalize_text
from .checkpoint import atomic_save
from .datasets import Problems
from .metrics import ErrorCounter

log = logging.getLogger("htrjand")

FORMAT = "htrjand-corrector"
FORMAT_VERSION = 1
META_FILE = "corrector.json"
STATE_FILE = "train_state.pt"
NOISE_FILE = "noise.json"
PAD, EOS, UNK, OFFSET, BYTE_VOCAB = 0, 1, 2, 3, 384  # ByT5 ids: 3 specials, 256 bytes, 125 extra ids


class CorrectionError(ValueError):
    """A corrector, report or training set that cannot be used (the message names the file)."""


def _transformers():
    """The transformers module, offline; a clear error when it is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise CorrectionError("T5 correction needs the transformers package: pip install 'htrjand[t5]'") from None
    transformers.logging.set_verbosity_error()
    return transformers


# ---------------------------------------------------------------- tokenizers

class ByteTokenizer:
    """ByT5's byte ids without any file."""

    kind = "bytes"
    pad_id, eos_id = PAD, EOS

    def encode(self, text: str) -> list[int]:
        return [b + OFFSET for b in text.encode("utf-8")] + [EOS]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i - OFFSET for i in ids if OFFSET <= i < OFFSET + 256).decode("utf-8", errors="ignore")

    def save(self, folder: Path) -> None:
        pass


class HFTokenizer:
    """A tokenizer stored in a local T5/mT5 folder."""

    kind = "hf"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad_id, self.eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def save(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder)


def _tokenizer_for(folder: Path, vocab_size: int, kind: str | None = None) -> ByteTokenizer | HFTokenizer:
    """Bytes for our correctors and ByT5 folders, else the folder's own tokenizer."""
    config = folder / "tokenizer_config.json"
    if kind is None and config.is_file():
        try:
            kind = "bytes" if "ByT5" in json.loads(config.read_text("utf-8")).get("tokenizer_class", "") else "hf"
        except (OSError, ValueError):
            kind = "hf"
    if kind is None:
        if vocab_size > BYTE_VOCAB:
            raise CorrectionError(f"{folder}: no tokenizer files, and the vocabulary ({vocab_size}) is not ByT5's bytes")
        kind = "bytes"
    if kind == "bytes":
        return ByteTokenizer()
    try:
        return HFTokenizer(_transformers().AutoTokenizer.from_pretrained(folder, local_files_only=True))
    except (OSError, ValueError) as err:
        raise CorrectionError(f"{folder}: cannot load its tokenizer ({err})".splitlines()[0]) from None


# ---------------------------------------------------------------- input format and page context

def model_input(line: str, prev: str = "", next: str = "", context_chars: int = 64) -> str:
    """The documented input text: `prev: ... | line: ... | next: ...`."""
    if context_chars <= 0:
        return f"line: {line}"
    return f"prev: {prev[-context_chars:] if prev else ''} | line: {line} | next: {next[:context_chars]}"


def encode_input(tokenizer, line: str, prev: str, next: str, context_chars: int, max_length: int) -> list[int] | None:
    """Token ids of the model input; the context shrinks until the input fits `max_length`
    tokens; None when the line alone does not fit."""
    while True:
        ids = tokenizer.encode(model_input(line, prev, next, context_chars))
        if len(ids) <= max_length:
            return ids
        if context_chars <= 0:
            return None
        context_chars //= 2


_SOURCE_SUFFIX = re.compile(r"(?::\d+|#[^/\\]*)$")  # "page.xml:12", "page.xml#l3": a line of a page file
_LINE_INDEX = re.compile(r"[_-]\d+$")  # "page_0003", "a01-000u-00": the line index of a line image


def page_key(image: str = "", dataset: str = "", group: str = "") -> str:
    """Which page a line belongs to: the dataset's group when given, else the image stem without
    its trailing `_NNNN` line index (or the page file of a `file:line` source)."""
    if group:
        return f"{dataset}\x1f{group}"
    name = PurePath(_SOURCE_SUFFIX.sub("", image or ""))
    return f"{dataset}\x1f{name.parent}/{_LINE_INDEX.sub('', name.stem)}"


def neighbours(texts: Sequence[str], keys: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(previous, next) line of each line: adjacent lines with the same page key ("" at page ends)."""
    n = len(texts)
    keys = list(keys) if keys is not None else [""] * n
    if len(keys) != n:
        raise ValueError(f"{len(keys)} group keys for {n} lines")
    return [(texts[i - 1] if i > 0 and keys[i - 1] == keys[i] else "",
             texts[i + 1] if i + 1 < n and keys[i + 1] == keys[i] else "") for i in range(n)]


# ---------------------------------------------------------------- noise from confusion statistics

def edit_blocks(reference: str, hypothesis: str) -> list[tuple[str, str]]:
    """Maximal runs of adjacent edits as (reference span, hypothesis span), e.g. ('m', 'rn')."""
    blocks, current = [], None
    for op in Levenshtein.opcodes(reference, hypothesis):
        if op.tag == "equal":
            if current:
                blocks.append(current)
            current = None
            continue
        if current is None:
            current = [op.src_start, op.src_end, op.dest_start, op.dest_end]
        else:
            current[1], current[3] = op.src_end, op.dest_end
    if current:
        blocks.append(current)
    return [(reference[a:b], hypothesis[c:d]) for a, b, c, d in blocks]


@dataclass
class NoiseModel:
    """Substitutions, insertions and deletions as the recogniser makes them.

    `edits[src][dst]` counts how often reference span `src` (up to `max_span` characters; "" for an
    insertion) was read as `dst`; `sources[src]` counts the occurrences of `src` in the references
    ("": insertion slots, characters + 1 per line). A span is rewritten with probability
    `edits / (sources + 1)` times `scale`; `base_rate` adds uniform random edits over `alphabet`
    (so that errors never seen in the statistics also occur).
    """

    edits: dict[str, dict[str, int]] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    base_rate: float = 0.0
    alphabet: str = ""
    max_span: int = 3
    chars: int = 0  # reference characters the statistics come from

    def __post_init__(self) -> None:
        self._table = {src: (list(dst), list(dst.values()), sum(dst.values()) / (self.sources.get(src, 0) + 1))
                       for src, dst in self.edits.items()}

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], base_rate: float = 0.0, alphabet: str = "",
                   max_span: int = 3) -> "NoiseModel":
        """Count the edits that turn each reference into its hypothesis."""
        pairs = list(pairs)
        edits: dict[str, Counter] = defaultdict(Counter)
        for ref, hyp in pairs:
            for src, dst in edit_blocks(ref, hyp):
                if len(src) <= max_span and len(dst) <= max_span + 1:
                    edits[src][dst] += 1
        grams: Counter = Counter()
        for ref, _ in pairs:
            grams[""] += len(ref) + 1
            for n in range(1, max_span + 1):
                grams.update(ref[i:i + n] for i in range(len(ref) - n + 1))
        return cls({s: dict(d) for s, d in edits.items()}, {s: grams[s] for s in edits}, base_rate, alphabet, max_span,
                   sum(len(ref) for ref, _ in pairs))

    def rate(self, src: str) -> float:
        return self._table[src][2] if src in self._table else 0.0

    def error_rate(self) -> float:
        """Expected edits per reference character (before `scale` and `base_rate`)."""
        return sum(sum(d.values()) for d in self.edits.values()) / max(self.chars, 1)

    def _pick(self, src: str, rng: random.Random) -> str:
        choices, weights, _ = self._table[src]
        return rng.choices(choices, weights)[0]

    def apply(self, text: str, rng: random.Random, scale: float = 1.0) -> str:
        """A noisy copy of `text`."""
        out: list[str] = []
        insert = min(1.0, self.rate("") * scale)
        i = 0
        while True:
            if insert and rng.random() < insert:
                out.append(self._pick("", rng))
            if i >= len(text):
                break
            for n in range(min(self.max_span, len(text) - i), 0, -1):
                src = text[i:i + n]
                if src in self._table and rng.random() < min(1.0, self._table[src][2] * scale):
                    out.append(self._pick(src, rng))
                    i += n
                    break
            else:
                ch = text[i]
                i += 1
                if self.alphabet and self.base_rate and rng.random() < self.base_rate * scale:
                    op = rng.randrange(3)
                    ch = rng.choice(self.alphabet) if op == 0 else "" if op == 1 else ch + rng.choice(self.alphabet)
                out.append(ch)
        return normalize_text("".join(out))

    def to_dict(self) -> dict:
        return {"edits": self.edits, "sources": self.sources, "base_rate": self.base_rate,
                "alphabet": self.alphabet, "max_span": self.max_span, "chars": self.chars,
                "error_rate": self.error_rate()}


# ---------------------------------------------------------------- the acceptance gate

@dataclass
class Gate:
    """Keep a correction only if its edit distance to the hypothesis is at most
    max(absolute, relative * len(hypothesis)), it is not empty, and it uses allowed characters only."""

    absolute: int = 3
    relative: float = 0.2

    def bound(self, hypothesis: str) -> float:
        return max(self.absolute, self.relative * len(hypothesis))

    def check(self, hypothesis: str, candidate: str, allowed: set[str] | None = None) -> str:
        """'' when `candidate` is acceptable, else why not."""
        if not candidate:
            return "empty"
        if allowed is not None:
            outside = sorted({ch for ch in candidate if ch not in allowed})
            if outside:
                return f"characters outside the charset: {''.join(outside)!r}"
        distance = Levenshtein.distance(hypothesis, candidate)
        if distance > self.bound(hypothesis):
            return f"edit distance {distance} > {self.bound(hypothesis):g}"
        return ""


@dataclass
class Correction:
    """The outcome for one line: `text` is the line to use (the candidate when accepted)."""

    text: str
    status: str  # accepted | unchanged | rejected | skipped
    candidate: str = ""
    reason: str = ""


# ---------------------------------------------------------------- the corrector

def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


class Corrector:
    """A T5 that corrects the recognised lines of a page, with its charset and gate defaults."""

    def __init__(self, model, tokenizer: ByteTokenizer | HFTokenizer, meta: dict, device: str = "cpu"):
        self.device = _device(device)
        self.model = model.eval().to(self.device)
        self.tokenizer, self.meta = tokenizer, meta
        self.charset: list[str] = list(meta.get("charset", []))
        self.context_chars = int(meta.get("input", {}).get("context_chars", 64))
        self.max_length = int(meta.get("input", {}).get("max_length", 512))
        g = meta.get("gate", {})
        self.gate = Gate(int(g.get("absolute", Gate.absolute)), float(g.get("relative", Gate.relative)))

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "Corrector":
        """A corrector folder written by `train_corrector` (never downloads)."""
        path = Path(path)
        meta_file = path / META_FILE
        if not path.is_dir():
            raise CorrectionError(f"{path}: corrector folder not found")
        if not meta_file.is_file():
            raise CorrectionError(f"{path}: not an htrjand corrector (no {META_FILE}; train one with "
                                  "`htrjand corrector train`, or fine-tune a T5 folder with --init)")
        try:
            meta = json.loads(meta_file.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise CorrectionError(f"{meta_file}: unreadable corrector description ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CorrectionError(f"{meta_file}: not an htrjand corrector description")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CorrectionError(f"{meta_file}: corrector format version {meta.get('format_version')} is not "
                                  f"supported by this htrjand (expects {FORMAT_VERSION})")
        t = _transformers()
        try:
            model = t.T5ForConditionalGeneration.from_pretrained(path, local_files_only=True)
        except Exception as err:  # missing, truncated or foreign weights raise many types
            raise CorrectionError(f"{path}: cannot load the corrector's weights (missing or corrupt?): "
                                  f"{err}".splitlines()[0]) from None
        tokenizer = _tokenizer_for(path, model.config.vocab_size, meta.get("tokenizer"))
        meta["path"] = str(path)
        return cls(model, tokenizer, meta, device)

    def save(self, path: str | Path) -> None:
        """Write the folder: weights, T5 config, tokenizer (if not bytes), corrector.json last.

        Each file is written in a temporary folder inside `path` and renamed into place, so a
        crash never leaves a half-written file; corrector.json, which `load` requires, comes last.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=path))
        try:
            self.model.save_pretrained(tmp)
            self.tokenizer.save(tmp)
            meta = {k: v for k, v in self.meta.items() if k != "path"}
            meta["tokenizer"] = self.tokenizer.kind
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
            for f in sorted(tmp.iterdir(), key=lambda p: p.name == META_FILE):
                os.replace(f, path / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def charset_conflict(self, charset: Sequence[str]) -> str:
        """'' when this corrector suits a recogniser with `charset`, else what differs."""
        mine, theirs = set(self.charset), set(charset)
        if not mine or mine <= theirs or theirs <= mine:
            return ""
        seen = set(self.meta.get("hypothesis_chars", ""))
        if self.meta.get("charset_source") == "characters seen" and seen and seen <= theirs:
            return ""
        missing, extra = "".join(sorted(theirs - mine)), "".join(sorted(mine - theirs))
        return (f"{len(theirs - mine)} recogniser characters are unknown to the corrector ({missing[:40]!r}) and "
                f"{len(mine - theirs)} corrector characters are not in the recogniser's charset ({extra[:40]!r})")

    def _encode_input(self, line: str, prev: str, next: str) -> list[int] | None:
        return encode_input(self.tokenizer, line, prev, next, self.context_chars, self.max_length)

    @torch.inference_mode()
    def generate(self, inputs: list[list[int]], max_new_tokens: int, beams: int = 1) -> list[str]:
        """Greedy (or beam) outputs for a batch of encoded inputs."""
        width = max(len(x) for x in inputs)
        ids = torch.full((len(inputs), width), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, x in enumerate(inputs):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        kwargs = {"num_beams": beams} if beams > 1 else {}
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  max_new_tokens=max_new_tokens, do_sample=False, **kwargs)
        return [normalize_text(self.tokenizer.decode(o.tolist())) for o in out]

    def correct_detailed(self, lines: Sequence[str], groups: Sequence[str] | None = None, *, batch_size: int = 32,
                         beams: int = 1, gate: Gate | None = None, charset: Iterable[str] | None = None) -> list[Correction]:
        """Correct the lines of one or more pages in reading order.

        `groups` (one key per line) says which lines share a page: context comes only from the
        adjacent lines with the same key (None: all lines are one page). Output characters must be
        in `charset` (default: the corrector's). Empty lines and lines too long for the model are
        left as they are.
        """
        hyps = [normalize_text(t) for t in lines]
        results: list[Correction | None] = [None] * len(hyps)
        encoded: dict[int, list[int]] = {}
        for i, (line, (prev, nxt)) in enumerate(zip(hyps, neighbours(hyps, groups))):
            ids = self._encode_input(line, prev, nxt) if line else None
            if ids is None:
                results[i] = Correction(line, "skipped", reason="empty line" if not line else "too long")
            else:
                encoded[i] = ids
        allowed = set(charset if charset is not None else self.charset) or None
        for i, c in self._run(hyps, encoded, gate or self.gate, allowed, batch_size, beams).items():
            results[i] = c
        return results  # type: ignore[return-value]

    def _run(self, hyps: Sequence[str], encoded: dict[int, list[int]], gate: Gate, allowed: set[str] | None,
             batch_size: int, beams: int) -> dict[int, Correction]:
        """Generate for the encoded inputs in length-sorted batches and judge each candidate."""
        results = {}
        order = sorted(encoded, key=lambda i: len(encoded[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            longest = max(len(self.tokenizer.encode(hyps[i])) for i in batch)
            slack = 4 * int(max(gate.bound(hyps[i]) for i in batch)) + 4  # UTF-8: up to 4 bytes per character
            outputs = self.generate([encoded[i] for i in batch], min(self.max_length, longest + slack), beams)
            for i, candidate in zip(batch, outputs):
                results[i] = self._judge(hyps[i], candidate, gate, allowed)
        return results

    @staticmethod
    def _judge(hypothesis: str, candidate: str, gate: Gate, allowed: set[str] | None) -> Correction:
        if candidate == hypothesis:
            return Correction(hypothesis, "unchanged", candidate)
        reason = gate.check(hypothesis, candidate, allowed)
        if reason:
            return Correction(hypothesis, "rejected", candidate, reason)
        return Correction(candidate, "accepted", candidate)

    def correct(self, lines: Sequence[str], groups: Sequence[str] | None = None, **options) -> list[str]:
        """Corrected lines (options as `correct_detailed`)."""
        return [c.text for c in self.correct_detailed(lines, groups, **options)]


# ---------------------------------------------------------------- reports

def read_report(path: str | Path, problems: Problems | None = None) -> tuple[list[dict], dict | list]:
    """Lines of an `htrjand evaluate --json` report (or a `recognize --json` list) and the report."""
    path = Path(path)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CorrectionError(f"{path}: report not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorrectionError(f"{path}: not a JSON report ({err})".splitlines()[0]) from None
    return report_lines(data, str(path), problems), data


def report_lines(report: dict | list, where: str = "report", problems: Problems | None = None) -> list[dict]:
    """Each line of a report with `index`, `hypothesis`, `reference` (None when absent), `dataset`
    and its page `key`; malformed lines go to `problems`."""
    problems = problems if problems is not None else Problems()
    raw = report.get("lines") if isinstance(report, dict) else report
    if not isinstance(raw, list):
        raise CorrectionError(f"{where}: not an htrjand report (no list of lines; write one with "
                              "`htrjand evaluate CHECKPOINT DATA --json report.json`)")
    lines = []
    for i, item in enumerate(raw):
        hyp = item.get("hypothesis", item.get("text")) if isinstance(item, dict) else None
        if not isinstance(hyp, str):
            problems.add("malformed report line", f"{where}: lines[{i}]", "no hypothesis/text string")
            continue
        ref = item.get("reference")
        dataset = str(item.get("dataset") or "")
        lines.append({"index": i, "hypothesis": normalize_text(hyp),
                      "reference": normalize_text(ref) if isinstance(ref, str) else None, "dataset": dataset,
                      "key": page_key(str(item.get("image") or ""), dataset, str(item.get("group") or ""))})
    return lines


def _model_path(report: dict, report_path: Path | None) -> Path | None:
    """The recogniser checkpoint a report names, if it is still there."""
    name = (report.get("model") or {}).get("path") if isinstance(report.get("model"), dict) else None
    if not name:
        return None
    for candidate in (Path(name), (report_path.parent / name) if report_path else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def recogniser_charset(checkpoint: str | Path) -> list[str]:
    from .checkpoint import read_checkpoint

    return list(read_checkpoint(checkpoint)["hyper_parameters"]["charset"])


def _totals(lines: list[dict], key: str) -> dict:
    counter = ErrorCounter()
    for line in lines:
        counter.add(line["reference"], line[key], line["dataset"])
    return {"overall": counter.total.as_dict(),
            "datasets": {n: t.as_dict() for n, t in sorted(counter.per_dataset.items())}}


def correct_report(corrector: Corrector, report: dict | list, *, charset: Sequence[str] | None = None,
                   where: str = "", batch_size: int = 32, beams: int = 1, gate: Gate | None = None,
                   report_path: str | Path | None = None) -> dict | list:
    """A copy of an evaluate report (or recognize list) with each line's `corrected` text and
    `correction` outcome, and, for evaluate reports, a `correction` section with CER/WER before and
    after per dataset. `charset` is the recogniser's (read from the report's checkpoint when None)."""
    report_path = Path(report_path) if report_path else None
    lines = report_lines(report, str(report_path or "report"))
    if charset is None and isinstance(report, dict):
        ckpt = _model_path(report, report_path)
        if ckpt is not None:
            charset, where = recogniser_charset(ckpt), str(ckpt)
    if charset is not None:
        conflict = corrector.charset_conflict(charset)
        if conflict:
            raise CorrectionError(f"{corrector.meta.get('path', 'corrector')}: trained for another charset than "
                                  f"{where or 'the recogniser'}: {conflict}; train a corrector on this recogniser's outputs")
    gate = gate or corrector.gate
    results = corrector.correct_detailed([l["hypothesis"] for l in lines], [l["key"] for l in lines],
                                         batch_size=batch_size, beams=beams, gate=gate, charset=charset)
    out = json.loads(json.dumps(report))
    raw = out["lines"] if isinstance(out, dict) else out
    for line, c in zip(lines, results):
        line["corrected"] = c.text
        outcome = {"status": c.status}
        if c.status == "rejected":
            outcome.update(candidate=c.candidate, reason=c.reason)
        elif c.status == "skipped":
            outcome["reason"] = c.reason
        raw[line["index"]].update(corrected=c.text, correction=outcome)
    if isinstance(out, dict):
        status = Counter(c.status for c in results)
        section = {"corrector": corrector.meta.get("path", ""), "charset_from": where or None,
                   "gate": asdict(gate), "beams": beams, "lines": len(results), **{s: status[s] for s in
                   ("accepted", "unchanged", "rejected", "skipped")}}
        scored = [l for l in lines if l["reference"] is not None]
        if scored:
            section["before"], section["after"] = _totals(scored, "hypothesis"), _totals(scored, "corrected")
        out["correction"] = section
    return out


def format_correction(report: dict) -> str:
    """CER/WER without and with correction, per dataset, as a terminal table."""
    section = report.get("correction") or {}
    head = (f"correction: {section.get('accepted', 0)} accepted, {section.get('rejected', 0)} rejected, "
            f"{section.get('unchanged', 0)} unchanged, {section.get('skipped', 0)} skipped")
    if "before" not in section:
        return head
    before, after = section["before"], section["after"]
    rows = [("dataset", "lines", "CER %", "CER % T5", "WER %", "WER % T5")]
    for name in [*before["datasets"], "all"]:
        b = before["overall"] if name == "all" else before["datasets"][name]
        a = after["overall"] if name == "all" else after["datasets"][name]
        rows.append((name, str(b["lines"]), f"{100 * b['cer']:.2f}", f"{100 * a['cer']:.2f}",
                     f"{100 * b['wer']:.2f}", f"{100 * a['wer']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(rows[0]), "  ".join("-" * w for w in widths), *map(fmt, rows[1:]), head])


# ---------------------------------------------------------------- training data

def read_corpus(path: str | Path, problems: Problems) -> list[tuple[str, str]]:
    """(line, page key) of a text corpus: a TSV manifest (`image<TAB>text`; pages from the image
    names) or a plain text file (one line per line; a blank line starts a new page)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CorrectionError(f"{path}: cannot read corpus ({err.strerror or err})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    manifest = path.suffix.lower() in (".tsv", ".tab")
    lines, page = [], 0
    for lineno, raw_line in enumerate(raw.splitlines(), 1):
        where = f"{path}:{lineno}"
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.add("undecodable line", where, f"not UTF-8 (byte {err.start})")
            continue
        if manifest:
            if not text.strip() or text.startswith("#"):
                continue
            if "\t" not in text:
                problems.add("malformed line", where, "no tab between image path and transcription")
                continue
            image, text = text.split("\t", 1)
            key = page_key(image.strip(), str(path))
        else:
            key = f"{path}\x1f{page}"
        text = normalize_text(text)
        if text:
            lines.append((text, key))
        elif not manifest:
            page += 1
    return lines


@dataclass
class TrainSettings:
    """Everything `train_corrector` needs; stored in corrector.json."""

    output: str
    reports: list[str] = field(default_factory=list)
    corpora: list[str] = field(default_factory=list)
    init: str | None = None
    recognizer: str | None = None
    synthetic_ratio: float = 0.5
    noise_scale: float = 1.0
    base_rate: float = 0.005
    max_pair_cer: float = 0.5
    context_chars: int = 64
    max_length: int = 512
    steps: int = 20000
    epochs: float | None = None
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 500
    weight_decay: float = 0.01
    d_model: int = 256
    layers: int = 4
    decoder_layers: int | None = None
    heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    val_fraction: float = 0.1
    val_lines: int = 256
    eval_every: int = 1000
    save_every: int = 1000
    log_every: int = 100
    gate_abs: int = 3
    gate_rel: float = 0.2
    seed: int = 0
    device: str = "auto"
    resume: bool = False


@dataclass
class Example:
    """One training pair: the (noisy) line with its neighbours, and the target text."""

    hypothesis: str
    target: str
    prev: str = ""
    next: str = ""


class TrainingData:
    """Real pairs (fixed) and synthetic ones (fresh noise on every draw), mixed at `synthetic_ratio`."""

    def __init__(self, real: list[Example], corpus: list[tuple[str, str]], noise: NoiseModel,
                 settings: TrainSettings, seed: int):
        self.real, self.corpus, self.noise, self.s = real, corpus, noise, settings
        self.corpus_context = neighbours([t for t, _ in corpus], [k for _, k in corpus])
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.pos = 0

    def __len__(self) -> int:
        return len(self.real) + len(self.corpus)

    def synthetic(self, i: int, rng: random.Random) -> Example:
        text = self.corpus[i][0]
        prev, nxt = self.corpus_context[i]
        noisy = [self.noise.apply(t, rng, self.s.noise_scale) if t else "" for t in (text, prev, nxt)]
        return Example(noisy[0], text, noisy[1], noisy[2])

    def draw(self) -> Example:
        ratio = self.s.synthetic_ratio if self.real and self.corpus else (1.0 if self.corpus else 0.0)
        if self.rng.random() < ratio:
            return self.synthetic(self.rng.randrange(len(self.corpus)), self.rng)
        if self.pos >= len(self.order):
            self.order, self.pos = list(range(len(self.real))), 0
            self.rng.shuffle(self.order)
        self.pos += 1
        return self.real[self.order[self.pos - 1]]

    def state(self) -> dict:
        return {"rng": self.rng.getstate(), "order": self.order, "pos": self.pos}

    def restore(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.order, self.pos = list(state["order"]), state["pos"]


def _real_examples(reports: Sequence[str], settings: TrainSettings, problems: Problems) -> tuple[list[list[dict]], list[Path]]:
    """Per report: its usable lines (with page keys); and the recogniser checkpoints the reports name."""
    pages, checkpoints = [], []
    for path in reports:
        lines, report = read_report(path, problems)
        ckpt = _model_path(report, Path(path)) if isinstance(report, dict) else None
        if ckpt is not None and ckpt not in checkpoints:
            checkpoints.append(ckpt)
        kept = [l for l in lines if l["reference"] is not None]
        if len(kept) < len(lines):
            problems.add("no reference", str(path), f"{len(lines) - len(kept)} lines without reference")
        pages.append(kept)
    return pages, checkpoints


def _choose_charset(settings: TrainSettings, checkpoints: list[Path], texts: Iterable[str]) -> tuple[list[str], str]:
    if settings.recognizer:
        return recogniser_charset(settings.recognizer), f"recogniser {settings.recognizer}"
    if checkpoints:
        chars: list[str] = []
        for ckpt in checkpoints:
            chars += [c for c in recogniser_charset(ckpt) if c not in chars]
        return chars, "recogniser " + ", ".join(map(str, checkpoints))
    seen = Counter(ch for t in texts for ch in t)
    return sorted(seen, key=lambda c: (-seen[c], c)), "characters seen"


def build_training_data(settings: TrainSettings, tokenizer, problems: Problems):
    """Real and synthetic examples, validation pairs, noise model, charset and counts."""
    if not settings.reports and not settings.corpora:
        raise CorrectionError("no training data: give evaluate reports (--reports) and/or text corpora (--corpus)")
    pages, checkpoints = _real_examples(settings.reports, settings, problems)
    corpus = [item for path in settings.corpora for item in read_corpus(path, problems)]
    all_lines = [l for p in pages for l in p]
    charset, source = _choose_charset(settings, checkpoints, [l["reference"] for l in all_lines] +
                                      [l["hypothesis"] for l in all_lines] + [t for t, _ in corpus])
    allowed = set(charset)
    counts: Counter = Counter()

    def fits(text: str) -> bool:
        return len(tokenizer.encode(text)) <= settings.max_length

    real, val = [], []
    rng = random.Random(settings.seed)
    for lines in pages:
        context = neighbours([l["hypothesis"] for l in lines], [l["key"] for l in lines])
        keys = sorted({l["key"] for l in lines})
        held = set(rng.sample(keys, round(settings.val_fraction * len(keys)))) if settings.val_fraction > 0 else set()
        for line, (prev, nxt) in zip(lines, context):
            ref, hyp = line["reference"], line["hypothesis"]
            if not ref or not hyp:
                counts["empty reference or hypothesis"] += 1
            elif Levenshtein.distance(ref, hyp) > settings.max_pair_cer * len(ref):
                counts[f"line CER above {settings.max_pair_cer}"] += 1
            elif set(ref) - allowed:
                counts["reference outside the charset"] += 1
            elif not fits(ref):
                counts["longer than max_length"] += 1
            else:
                ex = Example(hyp, ref, prev, nxt)
                (val if line["key"] in held else real).append(ex)
    noise = NoiseModel.from_pairs([(e.target, e.hypothesis) for e in real], settings.base_rate,
                                  "".join(c for c in charset if not c.isspace()))
    kept_corpus = []
    for text, key in corpus:
        if set(text) - allowed:
            counts["corpus line outside the charset"] += 1
        elif not fits(text):
            counts["corpus line longer than max_length"] += 1
        else:
            kept_corpus.append((text, key))
    if not real and not kept_corpus:
        names = ", ".join(settings.reports + settings.corpora)
        raise CorrectionError(f"{names}: no usable training lines ({dict(counts) or 'the files hold no lines'})")
    data = TrainingData(real, kept_corpus, noise, settings, settings.seed)
    if not val:  # no real pairs held out: a fixed synthetic validation set
        val_rng = random.Random(settings.seed + 1)
        val = [data.synthetic(val_rng.randrange(len(kept_corpus)), val_rng)
               for _ in range(min(settings.val_lines, len(kept_corpus)))] if kept_corpus else []
    summary = {"real_pairs": len(real), "val_pairs": len(val[:settings.val_lines]), "corpus_lines": len(kept_corpus),
               "skipped": dict(counts), "noise_error_rate": round(noise.error_rate(), 4),
               "hypothesis_chars": "".join(sorted({ch for l in all_lines for ch in l["hypothesis"]}))}
    return data, val[:settings.val_lines], noise, charset, source, summary


# ---------------------------------------------------------------- training

def _new_model(settings: TrainSettings):
    t = _transformers()
    config = t.T5Config(
        vocab_size=BYTE_VOCAB, d_model=settings.d_model, d_kv=max(settings.d_model // settings.heads, 1),
        d_ff=settings.d_ff, num_layers=settings.layers, num_decoder_layers=settings.decoder_layers or settings.layers,
        num_heads=settings.heads, dropout_rate=settings.dropout, feed_forward_proj="gated-gelu",
        tie_word_embeddings=True, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD)
    return t.T5ForConditionalGeneration(config)


def _init_model(settings: TrainSettings):
    """(model, tokenizer, input settings) from --init, a previous state, or a fresh config."""
    if not settings.init:
        return _new_model(settings), ByteTokenizer(), {}
    path = Path(settings.init)
    if not path.is_dir():
        raise CorrectionError(f"{path}: --init folder not found")
    if (path / META_FILE).is_file():
        c = Corrector.load(path)
        return c.model.train(), c.tokenizer, {"context_chars": c.context_chars}
    t = _transformers()
    try:
        model = t.T5ForConditionalGeneration.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise CorrectionError(f"{path}: not a loadable T5 checkpoint: {err}".splitlines()[0]) from None
    return model, _tokenizer_for(path, model.config.vocab_size), {}


def _batch(examples: list[Example], tokenizer, settings: TrainSettings, device: str) -> dict[str, torch.Tensor]:
    def pad(seqs: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(s) for s in seqs)
        return torch.tensor([s + [value] * (width - len(s)) for s in seqs])

    inputs = []
    for e in examples:
        ids = encode_input(tokenizer, e.hypothesis, e.prev, e.next, settings.context_chars, settings.max_length)
        inputs.append(ids or tokenizer.encode(e.hypothesis)[:settings.max_length - 1] + [tokenizer.eos_id])
    ids = pad(inputs, tokenizer.pad_id)
    mask = pad([[1] * len(x) for x in inputs], 0)
    labels = pad([tokenizer.encode(e.target) for e in examples], -100)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then linear decay to 10% at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.1, 1.0 - 0.9 * (step - warmup) / max(total - warmup, 1))


def evaluate_pairs(corrector: Corrector, val: list[Example], batch_size: int = 32) -> dict:
    """CER of the hypotheses, of the gated corrections and of the raw model outputs on validation pairs."""
    if not val:
        return {}
    hyps, refs = [e.hypothesis for e in val], [e.target for e in val]
    encoded = {i: ids for i, e in enumerate(val) if (ids := corrector._encode_input(e.hypothesis, e.prev, e.next))}
    results = corrector._run(hyps, encoded, corrector.gate, set(corrector.charset) or None, batch_size, 1)
    outcome = [results.get(i, Correction(h, "skipped")) for i, h in enumerate(hyps)]
    chars = max(sum(len(r) for r in refs), 1)
    cer = lambda outs: sum(Levenshtein.distance(r, o) for r, o in zip(refs, outs)) / chars  # noqa: E731
    return {"lines": len(val), "cer_before": round(cer(hyps), 5), "cer_after": round(cer([c.text for c in outcome]), 5),
            "cer_raw_model": round(cer([c.candidate or c.text for c in outcome]), 5),
            "accepted": sum(c.status == "accepted" for c in outcome)}


def train_corrector(settings: TrainSettings, on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train (or, with `settings.resume`, continue) a corrector into `settings.output`; a summary."""
    out = Path(settings.output)
    state_file = out / STATE_FILE
    if settings.resume and not state_file.is_file():
        raise CorrectionError(f"{state_file}: nothing to resume (no training state in {out})")
    if not settings.resume and ((out / META_FILE).exists() or state_file.exists()):
        raise CorrectionError(f"{out}: already holds a corrector (use --resume to continue it, or another folder)")
    device = _device(settings.device)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    state = None
    if settings.resume:
        try:
            state = torch.load(state_file, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CorrectionError(f"{state_file}: unreadable training state (truncated?): {err}".splitlines()[0]) from None
        saved = state.get("settings", {})
        for key in ("d_model", "layers", "decoder_layers", "heads", "d_ff", "init", "context_chars"):
            if saved.get(key) != getattr(settings, key):
                log.warning("%s: resuming with the stored %s=%r (given %r)", state_file, key, saved.get(key),
                            getattr(settings, key))
                setattr(settings, key, saved.get(key))
    model, tokenizer, inherited = _init_model(settings)
    if "context_chars" in inherited and not settings.resume:
        settings.context_chars = inherited["context_chars"]
    problems = Problems()
    data, val, noise, charset, source, summary = build_training_data(settings, tokenizer, problems)
    steps = settings.steps
    if settings.epochs:
        steps = math.ceil(settings.epochs * len(data) / settings.batch_size)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, settings.warmup, steps))
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data.restore(state["data"])
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        log.info("resuming at step %d of %d", step, steps)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "htrjand": __version__, "charset": charset,
            "charset_source": source, "hypothesis_chars": summary.pop("hypothesis_chars"),
            "input": {"template": "prev: {prev} | line: {line} | next: {next}",
                      "context_chars": settings.context_chars, "max_length": settings.max_length},
            "gate": asdict(Gate(settings.gate_abs, settings.gate_rel)),
            "training": {"settings": asdict(settings), "data": summary, "problems": problems.summary()}}
    corrector = Corrector(model, tokenizer, meta, device)
    model.train()
    autocast = device.startswith("cuda") and torch.cuda.is_bf16_supported()

    def save_state() -> None:
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "data": data.state(), "torch_rng": torch.get_rng_state(),
                     "step": step, "settings": asdict(settings)}, state_file)

    out.mkdir(parents=True, exist_ok=True)
    (out / NOISE_FILE).write_text(json.dumps(noise.to_dict(), ensure_ascii=False), encoding="utf-8")
    started, losses, history = time.perf_counter(), [], []
    try:
        while step < steps:
            batch = _batch([data.draw() for _ in range(settings.batch_size)], tokenizer, settings, device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            if step % settings.log_every == 0 or step == steps:
                log.info("step %d/%d loss %.4f lr %.2e", step, steps, sum(losses[-settings.log_every:]) /
                         len(losses[-settings.log_every:]), scheduler.get_last_lr()[0])
            if settings.eval_every and step % settings.eval_every == 0 and step < steps:
                result = evaluate_pairs(corrector, val)
                model.train()
                history.append({"step": step, **result})
                log.info("step %d validation: %s", step, result)
            if settings.save_every and step % settings.save_every == 0:
                save_state()
            if on_step is not None:
                on_step(step, losses[-1])
    except KeyboardInterrupt:
        save_state()
        log.warning("interrupted at step %d; continue with --resume", step)
        raise
    final = evaluate_pairs(corrector, val)
    history.append({"step": step, **final})
    save_state()
    meta["training"].update(steps_done=step, steps=steps, seconds=round(time.perf_counter() - started, 1),
                            final_loss=sum(losses[-50:]) / len(losses[-50:]) if losses else None,
                            validation=history, parameters=sum(p.numel() for p in model.parameters()))
    corrector.meta = meta
    model.eval()
    corrector.save(out)
    return {"output": str(out), "steps": step, "charset_source": source, "validation": final,
            "parameters": meta["training"]["parameters"], **summary}
