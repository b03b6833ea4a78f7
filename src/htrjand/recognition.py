"""Inference: a loaded model that reads line images in width-bucketed batches."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .charmap import CharMapping
from .charset import Charset
from .checkpoint import CheckpointError, read_checkpoint
from .decoding import Candidate, Decoder, DecodingError, Word
from .datasets import Sample
from .images import ImageError, ImageInput, load_gray, load_line, normalize_height, pad_batch, to_ink
from .model import HTRNet, ModelConfig, count_parameters


@dataclass
class Result:
    """One recognised line. `error` is set (and `text` empty) when the image could not be read.

    Positions are `[x0, x1)` pixel columns of the original line image (for a line cut from a page:
    of the cut region). `nbest` lists the decoder's best candidates, best first."""

    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    source: str = ""
    error: str | None = None
    char_positions: list[tuple[int, int]] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    nbest: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-ready record (confidences and scores rounded)."""
        return {"image": self.source, "text": self.text, "confidence": round(self.confidence, 4),
                "char_confidences": [round(c, 4) for c in self.char_confidences],
                "char_positions": [list(x) for x in self.char_positions],
                "words": [{"text": w.text, "confidence": round(w.confidence, 4), "start": w.start, "end": w.end,
                           "x": list(w.x) if w.x else None} for w in self.words],
                "nbest": [{"text": c.text, "score": round(c.score, 4), "acoustic": round(c.acoustic, 4),
                           "lm": round(c.lm, 4)} for c in self.nbest],
                "error": self.error}


@dataclass
class LineOutput:
    """The model's output for one line: its frame logits `[T, C]` and how frames map to pixels
    (`px_per_frame` original-image pixels per frame; `width` the original width); or an error."""

    logits: np.ndarray | None
    px_per_frame: float = 0.0
    width: int = 0
    error: str | None = None


class Recognizer:
    """An HTRNet in eval mode with its charset and preprocessing."""

    def __init__(self, model: HTRNet, charset: Charset, meta: dict | None = None, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.charset, self.meta, self.device = charset, meta or {}, device
        self.height = model.config.height
        self.stride = model.config.width_stride
        self.temperature = float((self.meta.get("calibration") or {}).get("temperature", 1.0))
        self.decoder = Decoder(charset)
        # the character standardisation the model was trained with (references are scored with it)
        self.mapping = CharMapping.from_dict(self.meta.get("charset_mapping"))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "Recognizer":
        ckpt = read_checkpoint(path)
        hp = ckpt["hyper_parameters"]
        try:
            config = ModelConfig.from_dict(hp["model"])
            charset = Charset(hp["charset"])
            model = HTRNet(config, charset.num_classes)
            state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
            model.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path}: checkpoint does not match this htrjand's model ({err})".splitlines()[0]) from None
        meta = {**hp.get("htrjand", {}), "preset": hp.get("preset", ""), "model": hp["model"],
                "metrics": ckpt.get("metrics", {}), "epoch": ckpt.get("epoch"), "step": ckpt.get("global_step"),
                "path": str(path)}
        return cls(model, charset, meta, device)

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)

    def make_decoder(self, decoder: str | None = None, **options) -> Decoder:
        """A `Decoder` for this model's charset (options as `Decoder.from_options`); lexicon words
        are standardised with the checkpoint's character mapping."""
        if self.mapping.table and "normalize" not in options:
            options["normalize"] = self.mapping.apply
        return Decoder.from_options(self.charset, decoder, **options)

    def _prepare(self, image: ImageInput | Sample) -> tuple[np.ndarray, int] | str:
        """The model input of a line and the line's original width, or an error message."""
        try:
            if isinstance(image, Sample):
                gray = load_line(image.image, image.crop, image.source)
            else:
                gray = load_gray(image)
            return to_ink(normalize_height(gray, self.height)), gray.shape[1]
        except ImageError as err:
            return str(err)

    def _batches(self, arrays: list, batch_size: int) -> Iterator[list[int]]:
        ok = [i for i, a in enumerate(arrays) if not isinstance(a, str)]
        ok.sort(key=lambda i: arrays[i][0].shape[1])
        for start in range(0, len(ok), batch_size):
            yield ok[start:start + batch_size]

    def recognize(self, images: Sequence[ImageInput | Sample] | ImageInput | Sample, batch_size: int = 16,
                  workers: int | None = None, chunk: int = 1024, decoder: Decoder | None = None) -> list[Result]:
        """Read line images (paths, PIL images, arrays or dataset `Sample`s, which may be lines cut
        from a page); one `Result` per image, in input order.

        Images are decoded by a thread pool `chunk` at a time (memory stays bounded for long lists),
        sorted by width within the chunk and run in batches of `batch_size`. `decoder` (default:
        greedy) turns the frames into text, e.g. `recognizer.make_decoder("beam", lm="char.arpa")`.
        """
        images = _as_list(images)
        results: list[Result] = []
        for part, outputs in self._chunks(images, batch_size, workers, chunk):
            results += [self.result(o, _name(image), decoder) for image, o in zip(part, outputs)]
        return results

    def forward(self, images: Sequence[ImageInput | Sample] | ImageInput | Sample, batch_size: int = 16,
                workers: int | None = None, chunk: int = 1024) -> list[LineOutput]:
        """The model's frame logits for each image (to decode later, e.g. with several decoders)."""
        return [o for _, outputs in self._chunks(_as_list(images), batch_size, workers, chunk) for o in outputs]

    def result(self, output: LineOutput, source: str = "", decoder: Decoder | None = None) -> Result:
        """Decode one line's `LineOutput` (confidences with the calibrated temperature)."""
        if output.error is not None or output.logits is None:
            return Result("", 0.0, source=source, error=output.error or "no output")
        decoder = decoder or self.decoder
        if decoder.charset != self.charset:
            raise DecodingError("the decoder was made for another model's charset")
        d = decoder.decode_line(output.logits, self.temperature, output.px_per_frame, output.width)
        return Result(d.text, d.confidence, d.char_confidences, source, None, d.char_x, d.words, d.nbest)

    def _chunks(self, images: Sequence, batch_size: int, workers: int | None, chunk: int):
        workers = workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(images), chunk):
                part = images[start:start + chunk]
                yield part, self._forward_chunk(list(pool.map(self._prepare, part)), batch_size)

    @torch.inference_mode()
    def _forward_chunk(self, arrays: list, batch_size: int) -> list[LineOutput]:
        outputs = [LineOutput(None, error=a) if isinstance(a, str) else None for a in arrays]
        for batch in self._batches(arrays, batch_size):
            x, widths = pad_batch([arrays[i][0] for i in batch], self.stride)
            logits, lengths = self.model(x.to(self.device), widths.to(self.device))
            logits = logits.float().cpu().numpy()
            for j, (i, n) in enumerate(zip(batch, lengths.tolist())):
                array, width = arrays[i]
                outputs[i] = LineOutput(logits[j, :n].copy(), self.stride * width / array.shape[1], width)
        return outputs  # type: ignore[return-value]


def _as_list(images) -> Sequence:
    if isinstance(images, (str, Path, bytes, np.ndarray, Sample)) or not isinstance(images, Sequence):
        return [images]
    return images


def _name(image: ImageInput | Sample) -> str:
    if isinstance(image, Sample):
        return image.source if image.crop is not None else str(image.image)
    return str(image) if isinstance(image, (str, Path)) else ""


def load(path: str | Path, device: str = "cpu") -> Recognizer:
    """Load a trained checkpoint for recognition: `htrjand.load(path).recognize(images)`."""
    return Recognizer.from_checkpoint(path, device)
