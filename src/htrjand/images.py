"""Line images: loading, grayscale, height normalisation, inversion, and padded batches with widths.

No torch here: the ONNX runtime shares this preprocessing."""
from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import struct
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from PIL import Image

from .datasets.geometry import MAX_COORDINATE  # a polygon beyond it is broken
from .datasets.sample import LineCrop

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]  # bytes: an encoded image file


class ImageError(ValueError):
    """An image that cannot be read or used, with the file it came from."""


def _env_pixels(default: int) -> int:
    try:
        value = int(os.environ.get("HTRJAND_MAX_IMAGE_PIXELS", default))
    except ValueError:
        return default
    return value if value > 0 else default


# Largest image (width x height) htrjand decodes: 150 MP holds an A2 page scanned at 600 dpi. Larger
# ones, and decompression bombs (a small file whose header declares a huge size), are refused from
# the header, before any pixel is decoded. Set HTRJAND_MAX_IMAGE_PIXELS to change it.
MAX_IMAGE_PIXELS = _env_pixels(150_000_000)
if Image.MAX_IMAGE_PIXELS and MAX_IMAGE_PIXELS >= 2 * Image.MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS // 2 + 1  # Pillow's own refusal must not come first

# What Pillow's decoders raise for broken or hostile files (its fuzzing tests list most of these)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, struct.error,
                 ZeroDivisionError, OverflowError, MemoryError, NotImplementedError, RuntimeError,
                 Image.DecompressionBombError)


def _name(image: object) -> str:
    return "image bytes" if isinstance(image, (bytes, bytearray, memoryview)) else str(image)


@contextlib.contextmanager
def open_image(image: str | Path | bytes) -> Iterator[Image.Image]:
    """A Pillow image opened from a file or encoded bytes, its size checked against
    `MAX_IMAGE_PIXELS` from the header alone; `ImageError` naming the file otherwise."""
    name = _name(image)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_IMAGE_PIXELS applies
            im = Image.open(io.BytesIO(image) if isinstance(image, bytes) else image)
    except FileNotFoundError:
        raise ImageError(f"{name}: image file not found") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name}: image too large, refused ({err})") from None
    except DECODE_ERRORS as err:
        raise ImageError(f"{name}: cannot read image ({err or type(err).__name__})") from None
    with im:
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise ImageError(f"{name}: image of {w}x{h} pixels is over the limit of {MAX_IMAGE_PIXELS:,} "
                             "pixels (htrjand.images.MAX_IMAGE_PIXELS, HTRJAND_MAX_IMAGE_PIXELS); refused")
        if w < 1 or h < 1:
            raise ImageError(f"{name}: empty image ({w}x{h} pixels)")
        yield im


def load_gray(image: ImageInput) -> np.ndarray:
    """Any supported input as a uint8 grayscale array (dark ink on light paper)."""
    if isinstance(image, (bytes, str, Path)):
        with open_image(image) as im:
            try:
                im.load()
                return np.asarray(_to_gray(im))
            except DECODE_ERRORS as err:
                raise ImageError(f"{_name(image)}: cannot decode image ({err or type(err).__name__})") from None
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


CROP_MARGIN = 3  # pixels kept around a line's polygon
MASK_DILATION = 3  # the polygon is grown by this much before pixels outside it are painted white


def crop_line(page: np.ndarray, crop: LineCrop, where: str = "") -> np.ndarray:
    """Cut a line from a grayscale page: the polygon's box plus a margin, clipped to the page, with
    everything outside the (slightly dilated) polygon painted white when `crop.mask` is set."""
    try:
        pts = np.asarray(crop.polygon, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        pts = np.empty((0,))
    if pts.ndim != 2 or pts.shape[0] < 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise ImageError(f"{where}: line has no usable polygon".lstrip(": "))
    if np.abs(pts).max() > MAX_COORDINATE:
        raise ImageError(f"{where}: line polygon has coordinates beyond {MAX_COORDINATE:g} pixels".lstrip(": "))
    h, w = page.shape
    x0, y0 = (np.floor(pts.min(0)) - CROP_MARGIN).astype(int)
    x1, y1 = (np.ceil(pts.max(0)) + CROP_MARGIN + 1).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ImageError(f"{where}: line polygon lies outside the {w}x{h} page image".lstrip(": "))
    region = page[y0:y1, x0:x1].copy()
    if crop.mask and pts.shape[0] >= 3:
        inside = np.zeros(region.shape, np.uint8)
        cv2.fillPoly(inside, [np.round(pts - (x0, y0)).astype(np.int32)], 255)
        if MASK_DILATION:
            size = 2 * MASK_DILATION + 1
            inside = cv2.dilate(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
        region[inside == 0] = 255
    return region


@functools.lru_cache(maxsize=4)
def _page_gray(path: str, mtime: float) -> np.ndarray:
    return load_gray(path)


def load_line(image: ImageInput, crop: LineCrop | None = None, where: str = "") -> np.ndarray:
    """A line as a uint8 grayscale array: the image itself, or with `crop` cut from a page image
    (the last few pages stay decoded, so consecutive lines of a page decode it once)."""
    if crop is None:
        return load_gray(image)
    if isinstance(image, (str, Path)):
        try:
            mtime = os.stat(image).st_mtime
        except FileNotFoundError:
            raise ImageError(f"{image}: page image file not found") from None
        except (OSError, ValueError) as err:
            raise ImageError(f"{image!r}: cannot read page image ({err})") from None
        page = _page_gray(str(image), mtime)
    else:
        page = load_gray(image)
    return crop_line(page, crop, where or str(image))


def line_size(image: Path | bytes, crop: LineCrop | None = None) -> tuple[int, int]:
    """(width, height) of a line image or of a line's crop on its page, from the file header only."""
    with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as im:
        w, h = im.size
    if crop is None:
        return w, h
    x0, y0, x1, y1 = crop.bounds
    x0, y0 = max(math.floor(x0) - CROP_MARGIN, 0), max(math.floor(y0) - CROP_MARGIN, 0)
    x1, y1 = min(math.ceil(x1) + CROP_MARGIN + 1, w), min(math.ceil(y1) + CROP_MARGIN + 1, h)
    return max(x1 - x0, 0), max(y1 - y0, 0)


def normalize_height(gray: np.ndarray, height: int, min_width: int = 8, max_width: int = 8192) -> np.ndarray:
    """Resize to `height` keeping the aspect ratio (width clamped to [min_width, max_width])."""
    h, w = gray.shape
    if h == 0 or w == 0:
        raise ImageError("image is empty")
    new_w = min(max(min_width, round(w * height / h)), max_width)
    if (h, w) == (height, new_w):
        return gray
    return np.asarray(Image.fromarray(gray).resize((new_w, height), Image.Resampling.BILINEAR))


def scale_width(image: np.ndarray, factor: float, min_width: int = 8) -> np.ndarray:
    """A float `[H, W]` image resized to `factor` times its width (at least `min_width`), height kept."""
    new_w = max(min_width, round(image.shape[1] * factor))
    if new_w == image.shape[1]:
        return image
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))  # mode F
    return np.asarray(resized.resize((new_w, image.shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def to_ink(gray: np.ndarray) -> np.ndarray:
    """uint8 paper-white image -> float32 with ink = 1, paper = 0."""
    return 1.0 - gray.astype(np.float32) / 255.0


def preprocess(image: ImageInput, height: int) -> np.ndarray:
    """Load, grayscale, normalise height and invert: the model's float input `[H, W]`."""
    return to_ink(normalize_height(load_gray(image), height))


def pad_batch(images: Sequence[np.ndarray], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad `[H, W_i]` ink images with zeros to a common width (a multiple of `stride`).

    Returns images `[B, 1, H, W]` and per-sample widths `[B]`, each rounded up to the stride so
    that pooling windows never straddle real and padded columns.
    """
    widths = [math.ceil(im.shape[1] / stride) * stride for im in images]
    batch = np.zeros((len(images), 1, images[0].shape[0], max(widths)), dtype=np.float32)
    for i, im in enumerate(images):
        batch[i, 0, :, : im.shape[1]] = im
    return batch, np.asarray(widths, dtype=np.int64)


def image_width(path: Path | bytes, height: int, crop: LineCrop | None = None) -> int:
    """Width a line will have after height normalisation, read from its file's header only."""
    w, h = line_size(path, crop)
    if w < 2 or h < 2:
        raise ImageError(f"line region is empty ({w}x{h} pixels)")
    return max(8, round(w * height / h))
