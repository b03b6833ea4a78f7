"""Inference: a loaded model that reads line images in width-bucketed batches."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .charset import Charset
from .checkpoint import CheckpointError, read_checkpoint
from .decoding import greedy_decode
from .datasets import Sample
from .images import ImageError, ImageInput, load_line, normalize_height, pad_batch, preprocess, to_ink
from .model import HTRNet, ModelConfig, count_parameters


@dataclass
class Result:
    """One recognised line. `error` is set (and `text` empty) when the image could not be read."""

    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    source: str = ""
    error: str | None = None


class Recognizer:
    """An HTRNet in eval mode with its charset and preprocessing."""

    def __init__(self, model: HTRNet, charset: Charset, meta: dict | None = None, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.charset, self.meta, self.device = charset, meta or {}, device
        self.height = model.config.height
        self.stride = model.config.width_stride

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

    def _prepare(self, image: ImageInput | Sample) -> np.ndarray | str:
        try:
            if isinstance(image, Sample):
                return to_ink(normalize_height(load_line(image.image, image.crop, image.source), self.height))
            return preprocess(image, self.height)
        except ImageError as err:
            return str(err)

    def _batches(self, arrays: list, batch_size: int) -> Iterator[list[int]]:
        ok = [i for i, a in enumerate(arrays) if not isinstance(a, str)]
        ok.sort(key=lambda i: arrays[i].shape[1])
        for start in range(0, len(ok), batch_size):
            yield ok[start:start + batch_size]

    @torch.inference_mode()
    def recognize(self, images: Sequence[ImageInput | Sample] | ImageInput | Sample, batch_size: int = 16,
                  workers: int | None = None, chunk: int = 1024) -> list[Result]:
        """Read line images (paths, PIL images, arrays or dataset `Sample`s, which may be lines cut
        from a page); one `Result` per image, in input order.

        Images are decoded by a thread pool `chunk` at a time (memory stays bounded for long lists),
        sorted by width within the chunk and run in batches of `batch_size`.
        """
        if isinstance(images, (str, Path, np.ndarray, Sample)) or not isinstance(images, Sequence):
            images = [images]
        workers = workers or min(4, os.cpu_count() or 1)
        results: list[Result] = []
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(images), chunk):
                part = images[start:start + chunk]
                results += self._recognize_chunk(part, list(pool.map(self._prepare, part)), batch_size)
        return results

    def _recognize_chunk(self, images: Sequence[ImageInput], arrays: list, batch_size: int) -> list[Result]:
        results: list[Result | None] = [None] * len(arrays)
        for i, a in enumerate(arrays):
            if isinstance(a, str):
                results[i] = Result("", 0.0, source=_name(images[i]), error=a)
        for batch in self._batches(arrays, batch_size):
            x, widths = pad_batch([arrays[i] for i in batch], self.stride)
            logits, lengths = self.model(x.to(self.device), widths.to(self.device))
            for i, d in zip(batch, greedy_decode(logits, lengths, self.charset)):
                results[i] = Result(d.text, d.confidence, d.char_confidences, _name(images[i]))
        return results  # type: ignore[return-value]


def _name(image: ImageInput | Sample) -> str:
    if isinstance(image, Sample):
        return image.source if image.crop is not None else str(image.image)
    return str(image) if isinstance(image, (str, Path)) else ""


def load(path: str | Path, device: str = "cpu") -> Recognizer:
    """Load a trained checkpoint for recognition: `htrjand.load(path).recognize(images)`."""
    return Recognizer.from_checkpoint(path, device)
