"""Line images: loading, grayscale, height normalisation, inversion, and padded batches with widths."""
from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

ImageInput = Union[str, Path, Image.Image, np.ndarray]


class ImageError(ValueError):
    """An image that cannot be read or used, with the file it came from."""


def load_gray(image: ImageInput) -> np.ndarray:
    """Any supported input as a uint8 grayscale array (dark ink on light paper)."""
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as im:
                im.load()
                return np.asarray(_to_gray(im))
        except FileNotFoundError:
            raise ImageError(f"{image}: image file not found") from None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            raise ImageError(f"{image}: cannot read image ({err})") from None
    if isinstance(image, Image.Image):
        return np.asarray(_to_gray(image))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[2] in (3, 4):
            return np.asarray(_to_gray(Image.fromarray(arr.astype(np.uint8))))
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim != 2:
            raise ImageError(f"array image must be HxW or HxWxC, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(arr * 255.0 if arr.max(initial=0) <= 1.0 else arr, 0, 255).astype(np.uint8)
        return arr
    raise ImageError(f"unsupported image type {type(image).__name__}")


def _to_gray(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("L")


def normalize_height(gray: np.ndarray, height: int, min_width: int = 8, max_width: int = 8192) -> np.ndarray:
    """Resize to `height` keeping the aspect ratio (width clamped to [min_width, max_width])."""
    h, w = gray.shape
    if h == 0 or w == 0:
        raise ImageError("image is empty")
    new_w = min(max(min_width, round(w * height / h)), max_width)
    if (h, w) == (height, new_w):
        return gray
    return np.asarray(Image.fromarray(gray).resize((new_w, height), Image.Resampling.BILINEAR))


def to_ink(gray: np.ndarray) -> np.ndarray:
    """uint8 paper-white image -> float32 with ink = 1, paper = 0."""
    return 1.0 - gray.astype(np.float32) / 255.0


def preprocess(image: ImageInput, height: int) -> np.ndarray:
    """Load, grayscale, normalise height and invert: the model's float input `[H, W]`."""
    return to_ink(normalize_height(load_gray(image), height))


def pad_batch(images: Sequence[np.ndarray], stride: int) -> tuple[Tensor, Tensor]:
    """Right-pad `[H, W_i]` ink images with zeros to a common width (a multiple of `stride`).

    Returns images `[B, 1, H, W]` and per-sample widths `[B]`, each rounded up to the stride so
    that pooling windows never straddle real and padded columns.
    """
    widths = [math.ceil(im.shape[1] / stride) * stride for im in images]
    batch = np.zeros((len(images), 1, images[0].shape[0], max(widths)), dtype=np.float32)
    for i, im in enumerate(images):
        batch[i, 0, :, : im.shape[1]] = im
    return torch.from_numpy(batch), torch.tensor(widths, dtype=torch.long)


def image_width(path: Path, height: int) -> int:
    """Width a file will have after height normalisation, read from its header only."""
    with Image.open(path) as im:
        w, h = im.size
    return max(8, round(w * height / max(h, 1)))


class WidthBucketSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of similar widths, so padding stays low.

    Samples are sorted by width (with a little seeded jitter so batches differ between epochs),
    cut into batches of at most `batch_size` lines and `max_pixels` padded pixels, and the batch
    order is shuffled. Training batches are dealt round-robin to `num_replicas` ranks (DDP), every
    rank getting the same count; evaluation lines are split between ranks before batching. `skip_batches` resumes an epoch part-way through.
    """

    def __init__(self, widths: Sequence[int], batch_size: int, max_pixels: int | None = None,
                 height: int = 64, shuffle: bool = True, seed: int = 0, rank: int = 0, num_replicas: int = 1):
        self.widths, self.batch_size, self.max_pixels = list(widths), batch_size, max_pixels
        self.height, self.shuffle, self.seed = height, shuffle, seed
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + 7919 * self.epoch)
        jitter = (lambda: rng.uniform(0.9, 1.1)) if self.shuffle else (lambda: 1.0)
        order = sorted(range(len(self.widths)), key=lambda i: self.widths[i] * jitter())
        if not self.shuffle and self.num_replicas > 1:  # evaluation: every rank gets a share of the lines
            order = order[self.rank:: self.num_replicas]
        batches: list[list[int]] = []
        current: list[int] = []
        widest = 0
        for i in order:
            wider = max(widest, self.widths[i])
            too_big = self.max_pixels and wider * self.height * (len(current) + 1) > self.max_pixels
            if current and (len(current) == self.batch_size or too_big):
                batches.append(current)
                current, wider = [], self.widths[i]
            current.append(i)
            widest = wider
        if current:
            batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        if self.shuffle and self.num_replicas > 1:  # training: batches dealt out, same count on every rank
            per_rank = math.ceil(len(batches) / self.num_replicas)
            batches += batches[: per_rank * self.num_replicas - len(batches)]
            batches = batches[self.rank:: self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        skip, self.skip_batches = self.skip_batches, 0
        yield from batches[skip:]

    def __len__(self) -> int:
        return len(self._batches())
