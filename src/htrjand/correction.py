"""Context-aware T5 correction of recognised lines (spec 2.7).

A byte-level T5 reads a recognised line with the end of the previous and the start of the next
line of the same page, and writes the corrected line. The model input is

    prev: <last `context_chars` characters of the previous line> | line: <the line> | next: <first `context_chars` of the next line>

(`line: <the line>` alone when `context_chars` is 0). Tokens are ByT5's ids, no vocabulary file:
0 pad (also the decoder start), 1 end, 2 unknown, byte b -> b + 3 (vocabulary 384, ByT5's size).
A local T5/ByT5/mT5 folder can be fine-tuned instead (`init`); its own tokenizer is then used.

A correction is kept only if it is non-empty, uses only characters of the recogniser's charset,
and its edit distance to the hypothesis is at most max(gate.absolute, gate.relative * len(hypothesis)).

Training (`htrjand.training.corrector`) uses `htrjand evaluate --json` reports (the recogniser's
real outputs on held-out lines) and clean text corrupted with the recogniser's own confusion
statistics. `transformers` is imported only when a model is built or loaded.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath

from rapidfuzz.distance import Levenshtein

from .charset import normalize_text
from .datasets import Problems
from .metrics import ErrorCounter

log = logging.getLogger("htrjand")

FORMAT = "htrjand-corrector"
FORMAT_VERSION = 1
META_FILE = "corrector.json"
PAD, EOS, UNK, OFFSET, BYTE_VOCAB = 0, 1, 2, 3, 384  # ByT5 ids: 3 specials, 256 bytes, 125 extra ids


class CorrectionError(ValueError):
    """A corrector, report or training set that cannot be used (the message names the file)."""


def _transformers():
    """The transformers module, offline, with its logging quietened; a clear error when it is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise CorrectionError("T5 correction needs the transformers package: pip install 'htrjand[t5]'") from None
    transformers.logging.set_verbosity_error()  # no weight-loading chatter or progress bars in our output
    transformers.logging.disable_progress_bar()
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
    max_time: str = ""
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
    precision: str = "auto"
    resume: bool = False


# ---------------------------------------------------------------- the corrector

def _device(name: str) -> str:
    import torch

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

    def generate(self, inputs: list[list[int]], max_new_tokens: int, beams: int = 1) -> list[str]:
        """Greedy (or beam) outputs for a batch of encoded inputs."""
        import torch

        width = max(len(x) for x in inputs)
        ids = torch.full((len(inputs), width), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, x in enumerate(inputs):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        kwargs = {"num_beams": beams} if beams > 1 else {}
        with torch.inference_mode():
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
    return counter.as_dict()


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
        elif (report.get("model") or {}).get("path"):
            log.warning("%s: the report's recogniser %s is not there; corrections are limited to the corrector's "
                        "charset (give --recognizer to check it)", report_path or "report", report["model"]["path"])
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
