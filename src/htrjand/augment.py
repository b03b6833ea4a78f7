"""Training augmentation of grayscale line images (uint8, dark ink on light paper), via albumentations."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network look-up at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

WHITE = 255


def build_augmentation(strength: float = 1.0, stretch: float = 0.0) -> A.Compose:
    """Geometric (shear/affine, elastic), stroke (erosion/dilation) and photometric (blur, noise,
    brightness/contrast) distortions; `strength` scales probabilities and ranges (0 = off). `stretch` x > 0
    first scales half the lines' width alone by a factor from 1/(1+x) to 1+x (letters narrower or wider, as
    writers' differ: the reading `--scales` exploits; 0 = off)."""
    s = float(strength)
    widths = [A.Affine(scale={"x": (1 / (1 + stretch), 1 + stretch), "y": (1.0, 1.0)}, keep_ratio=False,
                       fit_output=True, border_mode=cv2.BORDER_CONSTANT, fill=WHITE, p=0.5)] if stretch > 0 else []
    if s <= 0:
        return A.Compose(widths)
    return A.Compose(widths + [
        A.Affine(scale=(1 - 0.08 * s, 1 + 0.05 * s), rotate=(-1.5 * s, 1.5 * s),
                 shear={"x": (-20 * s, 20 * s), "y": (-1.5 * s, 1.5 * s)},
                 fit_output=True, border_mode=cv2.BORDER_CONSTANT, fill=WHITE, p=0.6 * s),
        A.ElasticTransform(alpha=12 * s, sigma=5, border_mode=cv2.BORDER_CONSTANT, fill=WHITE, p=0.25 * s),
        A.OneOf([A.Morphological(scale=(2, 3), operation="erosion"),
                 A.Morphological(scale=(2, 3), operation="dilation")], p=0.25 * s),
        A.GaussianBlur(sigma_limit=(0.3, 1.2 * s), p=0.25 * s),
        A.GaussNoise(std_range=(0.01, 0.06 * s), p=0.25 * s),
        A.RandomBrightnessContrast(brightness_limit=0.25 * s, contrast_limit=0.3 * s, p=0.5 * s),
    ])


class Augmenter:
    """Callable wrapper: uint8 gray image in, augmented uint8 gray image out.

    OpenCV runs single-threaded once an augmenter exists: the loader workers already keep the cores
    busy, and OpenCV's own thread pool on top of them made augmentation 2x slower on 2 cores (many
    times slower with many workers on many cores, which starved a GPU; docs/decisions.md). It is set
    here, in the process that creates the loaders, so that forked workers inherit it: calling
    `cv2.setNumThreads` inside a forked worker whose parent had used OpenCV's pool hangs."""

    def __init__(self, strength: float = 1.0, stretch: float = 0.0):
        self.strength = strength
        self.pipeline = build_augmentation(strength, stretch) if strength > 0 or stretch > 0 else None
        if self.pipeline is not None:
            cv2.setNumThreads(1)

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        if self.pipeline is None:
            return gray
        return self.pipeline(image=gray)["image"]
