"""Training a T5 corrector (spec 2.7): real pairs from evaluate reports, synthetic pairs from text
corpora with the recogniser's confusion statistics, a plain PyTorch loop with exact resume.

See `htrjand.correction` for the model input, the gate and the corrector folder, and
docs/correction.md for the options.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rapidfuzz.distance import Levenshtein

from .. import __version__
from ..charset import normalize_text
from ..checkpoint import atomic_save
from ..config import duration_seconds, resolve_precision
from ..correction import (BYTE_VOCAB, EOS, FORMAT, FORMAT_VERSION, META_FILE, PAD, ByteTokenizer, Correction,
                          CorrectionError, Corrector, Gate, TrainSettings, _device, _model_path, _tokenizer_for,
                          _transformers, encode_input, neighbours, page_key, read_report, recogniser_charset)
from ..datasets import DataError, Problems
from ..datasets.idlists import text_lines
from .faults import StopSignals

log = logging.getLogger("htrjand")

STATE_FILE = "train_state.pt"
NOISE_FILE = "noise.json"


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


# ---------------------------------------------------------------- training data

def read_corpus(path: str | Path, problems: Problems) -> list[tuple[str, str]]:
    """(line, page key) of a text corpus: a TSV manifest (`image<TAB>text`; pages from the image
    names) or a plain text file (one line per line; a blank line starts a new page)."""
    path = Path(path)
    manifest = path.suffix.lower() in (".tsv", ".tab")
    lines, page = [], 0
    try:
        records = list(text_lines(path, problems, "corpus"))
    except DataError as err:
        raise CorrectionError(str(err)) from None
    for _, where, text in records:
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


def _real_examples(reports: Sequence[str], problems: Problems) -> tuple[list[list[dict]], list[Path]]:
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


def _recogniser_mapping(checkpoint: str | Path):
    """The character standardisation a recogniser was trained with (its references use it)."""
    from ..charmap import CharMapping
    from ..checkpoint import read_checkpoint

    return CharMapping.from_dict(read_checkpoint(checkpoint)["hyper_parameters"]["htrjand"].get("charset_mapping"))


def _choose_charset(settings: TrainSettings, checkpoints: list[Path]) -> tuple[list[str], str, Callable[[str], str]]:
    """The recogniser's charset (--recognizer, else the union over the reports' checkpoints) with
    the character mapping to apply to corpus text; ([], "characters seen", identity) without one."""
    checkpoints = [Path(settings.recognizer)] if settings.recognizer else checkpoints
    if not checkpoints:
        return [], "characters seen", lambda text: text
    chars: list[str] = []
    for ckpt in checkpoints:
        chars += [c for c in recogniser_charset(ckpt) if c not in chars]
    mapping = _recogniser_mapping(checkpoints[0])
    return chars, "recogniser " + ", ".join(map(str, checkpoints)), mapping.apply


def build_training_data(settings: TrainSettings, tokenizer, problems: Problems):
    """Real and synthetic examples, validation pairs, noise model, charset and counts."""
    if not settings.reports and not settings.corpora:
        raise CorrectionError("no training data: give evaluate reports (--reports) and/or text corpora (--corpus)")
    pages, checkpoints = _real_examples(settings.reports, problems)
    charset, source, standardise = _choose_charset(settings, checkpoints)
    corpus = [(standardise(text), key) for path in settings.corpora for text, key in read_corpus(path, problems)]
    all_lines = [l for p in pages for l in p]
    if not charset:
        seen = Counter(ch for l in all_lines for ch in l["reference"] + l["hypothesis"])
        seen.update(ch for t, _ in corpus for ch in t)
        charset = sorted(seen, key=lambda c: (-seen[c], c))
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
    val_source = "held-out report pages" if val else "synthetic corpus lines"
    if not val:  # no real pairs held out: a fixed synthetic validation set
        val_rng = random.Random(settings.seed + 1)
        val = [data.synthetic(val_rng.randrange(len(kept_corpus)), val_rng)
               for _ in range(min(settings.val_lines, len(kept_corpus)))] if kept_corpus else []
    summary = {"real_pairs": len(real), "val_pairs": len(val[:settings.val_lines]), "val_source": val_source,
               "corpus_lines": len(kept_corpus),
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


def _bf16(precision: str, device: str) -> bool:
    """Whether training runs under bf16 autocast: 'auto' as for recognisers (`resolve_precision`), 'bf16-mixed'
    anywhere (on a CPU with native bfloat16 about 1.3x faster), '32' never."""
    if precision not in ("auto", "32", "bf16-mixed"):
        raise CorrectionError(f"precision {precision!r}: expected auto, 32 or bf16-mixed")
    return resolve_precision(precision, "gpu" if device.startswith("cuda") else "cpu") == "bf16-mixed"


def _lr_factor(step: int, warmup: int, total: int, time_spent: float = 0.0) -> float:
    """Linear warm-up, then linear decay to 10% at the last step or at the time limit (`time_spent` = share
    of it used), whichever comes first."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.1, 1.0 - 0.9 * max((step - warmup) / max(total - warmup, 1), time_spent))


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
    autocast = _bf16(settings.precision, device)
    limit = duration_seconds(settings.max_time, "--max-time")
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
    started, before = time.perf_counter(), float(state.get("seconds", 0.0)) if state else 0.0

    def seconds() -> float:  # training time of this run and the runs it resumes
        return before + time.perf_counter() - started

    def time_spent() -> float:
        return seconds() / limit if limit else 0.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, settings.warmup, steps, time_spent()))
    step, history = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data.restore(state["data"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step, history = state["step"], list(state.get("history", []))
        log.info("resuming at step %d of %d", step, steps)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "htrjand": __version__, "charset": charset,
            "charset_source": source, "hypothesis_chars": summary.pop("hypothesis_chars"),
            "input": {"template": "prev: {prev} | line: {line} | next: {next}",
                      "context_chars": settings.context_chars, "max_length": settings.max_length},
            "gate": asdict(Gate(settings.gate_abs, settings.gate_rel)),
            "model": {k: getattr(model.config, k) for k in ("d_model", "num_layers", "num_decoder_layers", "num_heads",
                                                            "d_ff", "vocab_size")},
            "training": {"settings": asdict(settings), "data": summary, "problems": problems.summary()}}
    corrector = Corrector(model, tokenizer, meta, device)
    model.train()

    def save_state() -> None:
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "data": data.state(), "torch_rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                     "step": step, "history": history, "settings": asdict(settings), "seconds": seconds()}, state_file)

    out.mkdir(parents=True, exist_ok=True)
    (out / NOISE_FILE).write_text(json.dumps(noise.to_dict(), ensure_ascii=False), encoding="utf-8")
    losses, updating = [], False
    signals = StopSignals()  # SIGTERM or a first Ctrl-C: stop after the step, saved
    signals.install()
    try:
        while step < steps and time_spent() < 1:
            batch = _batch([data.draw() for _ in range(settings.batch_size)], tokenizer, settings, device)
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
                loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            updating = True  # weights and step count disagree until the step is counted
            optimizer.step()
            scheduler.step()
            step += 1
            updating = False
            losses.append(loss.item())
            if step % settings.log_every == 0 or step == steps:
                log.info("step %d/%d loss %.4f lr %.2e", step, steps, sum(losses[-settings.log_every:]) /
                         len(losses[-settings.log_every:]), scheduler.get_last_lr()[0])
            if settings.eval_every and step % settings.eval_every == 0 and step < steps and time_spent() < 1:
                result = evaluate_pairs(corrector, val)
                model.train()
                history.append({"step": step, **result})
                log.info("step %d validation: %s", step, result)
            if settings.save_every and step % settings.save_every == 0:
                save_state()
            if on_step is not None:
                on_step(step, losses[-1])
            if signals.received is not None:
                save_state()
                raise signals.stopped(step, state_file, resume="--resume")
    except KeyboardInterrupt:  # a second Ctrl-C
        if not updating:
            save_state()
        log.warning("interrupted at step %d; continue with --resume (from the last saved state)", step)
        raise
    finally:
        signals.restore()
    if step < steps:
        log.info("time limit %s reached at step %d of %d", settings.max_time, step, steps)
    final = evaluate_pairs(corrector, val)
    history.append({"step": step, **final})
    save_state()
    meta["training"].update(steps_done=step, steps=steps, seconds=round(seconds(), 1),
                            final_loss=sum(losses[-50:]) / len(losses[-50:]) if losses else None,
                            validation=history, parameters=sum(p.numel() for p in model.parameters()))
    corrector.meta = meta
    model.eval()
    corrector.save(out)
    return {"output": str(out), "steps": step, "charset_source": source, "validation": final,
            "parameters": meta["training"]["parameters"], **summary}
