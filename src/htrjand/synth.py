"""Synthetic handwriting lines: text drawn in handwriting fonts with per-line variation of font, size,
slant, baseline, spacing, stroke, ink and paper, then degraded like a scan; written as a manifest
dataset (`htrjand synth`) or generated on the fly (`SynthGenerator[i]`). docs/synthetic.md

A line is only ever drawn in a font whose character map holds a visible glyph for each of its
characters, so no label claims a glyph the image lacks (tofu or blank)."""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .charset import normalize_text
from .datasets.sample import DataError, Problems, Sample

log = logging.getLogger("htrjand")

FONTS_DIR = Path(__file__).parent / "fonts"
FONT_SUFFIXES = (".ttf", ".otf", ".woff", ".woff2")
DATASET_SUFFIXES = (".tsv", ".xml", ".parquet", ".arrow")  # a --text input with these is a dataset
RENDER_SCALE = 2  # lines are drawn at this multiple of the output height, then shrunk (anti-aliasing)


class SynthError(DataError):
    """Synthesis cannot start: no usable font, no drawable text, a bad option (message names the file)."""


class FontWarning(UserWarning):
    """A font file that cannot be used (it is skipped)."""


# ---------------------------------------------------------------- fonts


def _drawable_char(ch: str) -> bool:
    """Characters that need a visible glyph: not spaces, controls, format or private-use code points."""
    return not unicodedata.category(ch).startswith(("C", "Z"))


class Font:
    """One font family (its files, e.g. the latin and latin-ext subsets of a web font): which
    characters it draws, per-size Pillow fonts and the measurements used to lay out a line."""

    def __init__(self, name: str, files: Sequence[Path], cmaps: Sequence[frozenset[int]]):
        self.name = name
        self.key = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "font"
        self.files = tuple(files)
        self.cmaps = tuple(cmaps)
        self._file_of: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Font({self.name!r}, {len(self.files)} file(s))"

    def file_of(self, ch: str) -> int:
        """Index of the file that draws `ch` with a visible glyph, or -1 (spaces: 0)."""
        found = self._file_of.get(ch)
        if found is None:
            found = 0 if ch == " " else -1
            if _drawable_char(ch):
                for i, cmap in enumerate(self.cmaps):
                    if ord(ch) in cmap:
                        # mapped to an empty glyph (e.g. an unfinished `_`): as good as missing
                        box = self.pil(i, 32).getbbox(ch, anchor="ls")
                        if box[2] > box[0] and box[3] > box[1]:
                            found = i
                            break
            self._file_of[ch] = found
        return found

    def missing(self, text: str) -> set[str]:
        """Characters of `text` this font cannot draw."""
        return {ch for ch in set(text) if self.file_of(ch) < 0}

    def covers(self, text: str) -> bool:
        return all(self.file_of(ch) >= 0 for ch in set(text))

    def pil(self, index: int, size: int) -> ImageFont.FreeTypeFont:
        return _pil_font(str(self.files[index]), size)

    @functools.cached_property
    def metrics(self) -> dict[str, float]:
        """Per 100 px of font size: ascender, descender, x-height and space above/below the
        baseline; `stroke`: pen width; `joined`: whether letters connect (cursive)."""
        font = self.pil(0, 100)
        def top(chars: str) -> float:
            boxes = [font.getbbox(c, anchor="ls") for c in chars if self.file_of(c) == 0]
            return -min((b[1] for b in boxes), default=-70)
        def bottom(chars: str) -> float:
            boxes = [font.getbbox(c, anchor="ls") for c in chars if self.file_of(c) == 0]
            return max((b[3] for b in boxes), default=25)
        ascent, descent = font.getmetrics()
        sample = "".join(c for c in "nmou" if self.file_of(c) == 0) or "n"
        mask = Image.new("L", (int(font.getlength(sample)) + 60, 200), 0)
        ImageDraw.Draw(mask).text((30, 140), sample, font=font, fill=255, anchor="ls")
        ink = (np.asarray(mask) > 127).astype(np.uint8)
        parts = cv2.connectedComponents(ink, connectivity=8)[0] - 1
        contours = cv2.findContours(ink, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)[0]
        perimeter = sum(cv2.arcLength(c, True) for c in contours)
        return {"ascender": max(top("bdfhklABDHT"), 20.0), "descender": max(bottom("gjpqy"), 5.0),
                "xheight": max(top("xzvw"), 10.0), "ascent": float(ascent), "descent": float(descent),
                "space": font.getlength(" ") if self.file_of(" ") == 0 else 25.0,
                "stroke": 2 * float(ink.sum()) / max(perimeter, 1.0), "joined": parts < len(sample)}


@functools.lru_cache(maxsize=2048)
def _pil_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _font_names(tt) -> tuple[str, str]:
    name = tt["name"] if "name" in tt else None
    family = (name.getBestFamilyName() if name else None) or ""
    style = (name.getBestSubFamilyName() if name else None) or "Regular"
    return family.strip(), style.strip()


def load_fonts(source: str | Path | Sequence[str | Path] | None = None) -> list[Font]:
    """Fonts of a folder (searched recursively), font files or a list of both; default: the bundled
    ones. Files of one family and style (a web font's subsets) make one `Font`. A file that does not
    load (in fontTools and in Pillow) is skipped with a `FontWarning` naming it; no usable font at
    all is a `SynthError`."""
    from fontTools.ttLib import TTFont

    sources = [FONTS_DIR] if source is None else [source] if isinstance(source, (str, Path)) else list(source)
    if not sources:
        raise SynthError("no font folder or file given")
    files: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            try:
                next(os.scandir(src), None)  # an unreadable folder is an error, not an empty one
                files += sorted(p for p in src.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file())
            except OSError as err:
                raise SynthError(f"{src}: cannot read font folder ({err.strerror or err})") from None
        elif src.is_file():
            files.append(src)
        else:
            raise SynthError(f"{src}: no such font folder or file")
    families: dict[tuple[str, str], tuple[list[Path], list[frozenset[int]]]] = {}
    for path in files:
        try:
            with TTFont(path, lazy=True) as tt:
                cmap = frozenset(tt.getBestCmap() or ())
                family, style = _font_names(tt)
            if not cmap:
                raise ValueError("no Unicode character map")
            _pil_font(str(path), 32)
        except Exception as err:  # noqa: BLE001 - any broken font file is skipped, whatever the cause
            warnings.warn(f"{path}: cannot load font ({err or type(err).__name__}); skipped", FontWarning,
                          stacklevel=2)
            continue
        key = (family or path.stem, style)
        families.setdefault(key, ([], []))
        families[key][0].append(path)
        families[key][1].append(cmap)
    fonts = [Font(family if style.lower() in ("regular", "normal", "book") else f"{family} {style}", paths, cmaps)
             for (family, style), (paths, cmaps) in families.items()]
    if not fonts:
        where = ", ".join(map(str, sources))
        raise SynthError(f"{where}: no usable font ({', '.join(FONT_SUFFIXES)} files)")
    return fonts


# ---------------------------------------------------------------- text


def read_text_corpus(items: Sequence[str | Path], problems: Problems) -> list[tuple[str, str]]:
    """(line, "file:line") of text sources: plain text files (one line per line; a line holding only
    `%`, the separator of fortune files, is skipped; `text:PATH` forces plain text) or datasets
    (folders, `.tsv`/`.xml`/`.parquet` files, `FORMAT:PATH?...` specs) whose transcriptions are used."""
    from .datasets import READERS, read_dataset
    from .datasets.idlists import text_lines

    lines: list[tuple[str, str]] = []
    for item in map(str, items):
        plain = item.startswith("text:")
        path = Path(item[5:] if plain else item)
        prefix = item.split(":", 1)[0] if ":" in item else ""
        dataset = not plain and ("?" in item or prefix in READERS or path.is_dir()
                                 or path.suffix.lower() in DATASET_SUFFIXES)
        if dataset:
            lines += [(s.text, s.source) for s in read_dataset(item, problems)]
            continue
        for _, where, raw_text in text_lines(path, problems, "text"):
            text = normalize_text(raw_text)
            if text and text != "%":
                lines.append((text, where))
    return lines


def flow_lines(lines: Sequence[tuple[str, str]], min_chars: int, max_chars: int,
               seed: int = 0) -> list[tuple[str, str]]:
    """Re-cut text into lines at word boundaries: the words of consecutive input lines flow into
    lines whose target length is drawn between `min_chars` and `max_chars` (a line is shorter than
    `min_chars` only where the next word would not fit in `max_chars`; a longer word stands alone;
    a last piece shorter than `min_chars` is dropped unless it is the only one)."""
    rng = np.random.default_rng([seed, 7])
    out: list[tuple[str, str]] = []
    words: list[str] = []
    size, where = 0, ""
    target = int(rng.integers(min_chars, max_chars + 1))
    for text, source in lines:
        for word in text.split(" "):
            longer = size + 1 + len(word)
            if words and longer > target and (size >= min_chars or longer > max_chars):
                out.append((" ".join(words), where))
                words, size, target = [], 0, int(rng.integers(min_chars, max_chars + 1))
            if not words:
                where = source
            size += len(word) + (1 if words else 0)
            words.append(word)
    if words and (size >= min_chars or not out):
        out.append((" ".join(words), where))
    return out


@dataclass
class TextReport:
    """What became of the text: lines kept, lines skipped (per reason, with the first place)."""

    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.first.setdefault(reason, where)

    def summary(self) -> str:
        parts = [f"{n} line(s) skipped: {reason} (first: {self.first[reason]})"
                 for reason, n in self.skipped.most_common()]
        return "; ".join(parts)


def read_charset(path: str | Path) -> set[str]:
    """A target charset file: every non-space character of a UTF-8 text file (in any layout)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as err:
        raise SynthError(f"{path}: cannot read charset ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise SynthError(f"{path}: charset is not UTF-8 (byte {err.start})") from None
    chars = set(unicodedata.normalize("NFC", text)) - set(" \t\r\n\f\v\u00a0")
    if not chars:
        raise SynthError(f"{path}: empty charset")
    return chars


def _chars(chars) -> str:
    return " ".join(f"{c!r} (U+{ord(c):04X})" for c in sorted(chars))


def drawable_texts(lines: Sequence[str | tuple[str, str]], fonts: Sequence[Font], charset: set[str] | None = None,
                   report: TextReport | None = None) -> list[str]:
    """The lines (normalised) that some font draws in full and, with `charset`, that use only its
    characters (and space); others are counted in `report` with the character no font has."""
    report = report if report is not None else TextReport()
    items = [item if isinstance(item, tuple) else (item, f"text #{i + 1}") for i, item in enumerate(lines)]
    items = [(text, where) for text, where in ((normalize_text(t), w) for t, w in items) if text]
    chars = set().union(*(set(text) for text, _ in items)) if items else set()
    lacks = [frozenset(ch for ch in chars if f.file_of(ch) < 0) for f in fonts]  # per font, within the corpus
    nowhere = frozenset.intersection(*lacks) if lacks else frozenset(chars)
    kept = []
    for text, where in items:
        used = set(text)
        if charset is not None and used - charset - {" "}:
            report.skip(f"characters outside the charset, e.g. {_chars(sorted(used - charset - {' '})[:1])}", where)
        elif used & nowhere:
            report.skip(f"no font has {_chars(sorted(used & nowhere)[:1])}", where)
        elif not any(lack.isdisjoint(used) for lack in lacks):
            report.skip("no single font has all its characters", where)
        else:
            kept.append(text)
    report.kept += len(kept)
    return kept


# ---------------------------------------------------------------- rendering


@dataclass
class SynthConfig:
    """Ranges (low, high) and probabilities of the per-line variation; lengths are in x-heights
    unless named otherwise. `strength` scales the geometry (slant, baseline, spacing and size
    jitter, stretch, wobble) and the page and scan effects (stains, show-through, neighbours,
    polygon mask, blur, noise, JPEG); 0 leaves the fonts' own shapes, with paper, ink, pen width
    and ruled lines still varying."""

    height: int = 64
    strength: float = 1.0
    slant_degrees: tuple[float, float] = (-12.0, 22.0)  # shear added to the font's own slant (+: right)
    size_jitter: float = 0.04  # per-word font size change (fraction)
    baseline_drift: float = 0.12  # amplitude of the slow vertical wander of the baseline
    curvature: float = 0.15  # bend of the whole line (height of the arc)
    rotation_degrees: float = 1.0  # whole-line slope
    word_spacing: tuple[float, float] = (0.8, 1.7)  # times the font's space (at least 0.5 x-height, 1 if joined)
    word_spacing_jitter: float = 0.25  # relative change per gap
    letter_spacing: tuple[float, float] = (-0.04, 0.12)  # extra advance per letter (unjoined fonts)
    letter_spacing_jitter: float = 0.04
    width_warp: float = 0.12  # smooth horizontal stretch and squeeze (letter widths and gaps)
    stroke: tuple[float, float] = (0.05, 0.14)  # target pen width (x-heights); fonts are thinned/thickened to it
    elastic: float = 0.07  # amplitude of the stroke wobble, p_elastic of the lines
    p_elastic: float = 0.7
    ink: tuple[int, int] = (5, 110)  # ink gray level (black, blue, brown; pencil is lighter)
    paper: tuple[int, int] = (175, 265)  # paper gray level (above 255: white paper, clipped)
    p_pencil: float = 0.1
    p_pressure: float = 0.6  # uneven ink flow along the stroke
    p_ruled: float = 0.3
    p_stain: float = 0.15
    p_show_through: float = 0.15  # ink of the other side of the leaf
    p_neighbours: float = 0.35  # ascenders/descenders of the lines above/below at the edges
    p_polygon_mask: float = 0.35  # whitened outside a polygon, like lines cut from PAGE/ALTO pages
    p_blur: float = 0.4
    blur_sigma: tuple[float, float] = (0.3, 1.0)  # at output height
    p_noise: float = 0.5
    noise_sigma: tuple[float, float] = (1.0, 7.0)
    p_jpeg: float = 0.4
    jpeg_quality: tuple[int, int] = (30, 90)


def _smooth(rng: np.random.Generator, length: int, step: float) -> np.ndarray:
    """Smooth 1-D noise (unit-ish amplitude) of `length` samples with bumps about `step` apart."""
    knots = max(2, int(length / max(step, 1.0)) + 2)
    values = rng.normal(size=(1, knots)).astype(np.float32)
    return cv2.resize(values, (length, 1), interpolation=cv2.INTER_CUBIC)[0]


def _field(rng: np.random.Generator, shape: tuple[int, int], step: float) -> np.ndarray:
    """Smooth 2-D noise of `shape` with blobs about `step` pixels apart."""
    h, w = shape
    small = rng.normal(size=(max(2, int(h / step) + 2), max(2, int(w / step) + 2))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    return float(rng.uniform(pair[0], pair[1]))


class SynthGenerator:
    """Synthetic lines from `texts`, drawn in `fonts` (a list of `Font`, a folder or font files;
    default: the bundled fonts). `render(text)` draws one line (a uint8 grayscale image of
    `config.height` rows, dark ink on light paper); `gen[i]` is the i-th line of a seeded,
    reproducible sequence over the texts (any order, any process: a torch Dataset can wrap it).
    Texts no font can draw are skipped and counted in `self.report`."""

    def __init__(self, fonts: Sequence[Font] | str | Path | None = None,
                 texts: Sequence[str | tuple[str, str]] = (), seed: int = 0, config: SynthConfig | None = None,
                 length: int | None = None, charset: set[str] | None = None, height: int | None = None):
        given = isinstance(fonts, (list, tuple)) and all(isinstance(f, Font) for f in fonts)
        self.fonts = list(fonts) if given and fonts else load_fonts(fonts)
        self.config = replace(config or SynthConfig(), **({} if height is None else {"height": height}))
        if self.config.height < 8:
            raise SynthError(f"line height {self.config.height} is too small (at least 8 pixels)")
        self.seed = seed
        self.report = TextReport()
        self.texts = drawable_texts(texts, self.fonts, charset, self.report)
        self.length = len(self.texts) if length is None else length
        self._rng = np.random.default_rng([seed, 1])
        self._orders: dict[int, np.ndarray] = {}

    # -- sequence form
    def __len__(self) -> int:
        return self.length

    def text_at(self, index: int) -> str:
        """The text of line `index`: each pass over the texts is a fresh seeded shuffle."""
        if not self.texts:
            raise SynthError("no drawable text to render")
        n = len(self.texts)
        epoch = index // n
        order = self._orders.get(epoch)
        if order is None:
            order = self._orders[epoch] = np.random.default_rng([self.seed, 2, epoch]).permutation(n)
        return self.texts[order[index % n]]

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image, text, _ = self._render(self.text_at(index), np.random.default_rng([self.seed, 3, index]))
        return image, text

    def __iter__(self) -> Iterator[tuple[np.ndarray, str]]:
        return (self[i] for i in range(self.length))

    def sample(self, index: int) -> Sample:
        """Line `index` as a dataset `Sample` (PNG bytes; group = the font), for the training loader."""
        image, text, font = self._render(self.text_at(index), np.random.default_rng([self.seed, 3, index]))
        return Sample(encode_png(image), text, "synth", font.key, f"synth#{index}", line_id=f"synth_{index:06d}")

    # -- one line
    def fonts_for(self, text: str) -> list[Font]:
        """The fonts that draw every character of `text`."""
        return [f for f in self.fonts if f.covers(text)]

    def render(self, text: str, rng: np.random.Generator | None = None) -> tuple[np.ndarray, str]:
        """(image, normalised text) of one line; `SynthError` when no font draws all of `text`."""
        image, text, _ = self._render(text, rng if rng is not None else self._rng)
        return image, text

    def _render(self, text: str, rng: np.random.Generator) -> tuple[np.ndarray, str, Font]:
        text = normalize_text(text)
        if not text:
            raise SynthError("empty text")
        candidates = self.fonts_for(text)
        if not candidates:
            lacking = set.intersection(*(f.missing(text) for f in self.fonts))
            detail = f"no font has {_chars(lacking)}" if lacking else "no single font has all its characters"
            raise SynthError(f"cannot draw {text!r}: {detail}")
        font = candidates[int(rng.integers(len(candidates)))]
        return render_line(text, font, self.config, rng), text, font


def encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise SynthError("cannot encode a PNG image")
    return data.tobytes()


def _size_step(size: float) -> int:
    """Font sizes are rounded to steps of about 3% so that few Pillow fonts are created."""
    step = max(1, round(size * 0.03))
    return max(6, int(round(size / step)) * step)


def _layout(text: str, font: Font, cfg: SynthConfig, rng: np.random.Generator, size: int, xh: float,
            s: float) -> tuple[np.ndarray, int]:
    """The ink of `text` (float32 0..1) on a canvas with margins for the slant and the baseline
    wander, and the baseline row. Words are placed with jittered gaps and sizes; the letters of
    unjoined fonts one by one with jittered spacing, height and size (joined fonts keep their joins)."""
    m = font.metrics
    scale = size / 100
    joined = m["joined"]
    gap_base = max(m["space"] * scale, (1.0 if joined else 0.5) * xh) * _uniform(rng, cfg.word_spacing)
    track = 0.0 if joined else _uniform(rng, cfg.letter_spacing) * xh * s
    jitter = 0.0 if joined else cfg.letter_spacing_jitter * xh * s
    pieces: list[tuple[float, float, str, int, int]] = []  # (x, baseline offset, text, file, size)
    x, drift = float(size), 0.0
    for w, word in enumerate(text.split(" ")):
        if w:
            x += gap_base * max(0.3, 1 + cfg.word_spacing_jitter * s * rng.normal())
        wsize = size * (1 + cfg.size_jitter * s * rng.uniform(-1, 1))
        drift = float(np.clip(drift + 0.04 * xh * s * rng.normal(), -0.12 * xh, 0.12 * xh))
        files = [font.file_of(c) for c in word]
        if joined:  # runs of one file, drawn whole so the letters stay connected
            pil_size = _size_step(wsize)
            start = 0
            for i in range(1, len(word) + 1):
                if i == len(word) or files[i] != files[start]:
                    pil = font.pil(files[start], pil_size)
                    pieces.append((x, drift, word[start:i], files[start], pil_size))
                    x += pil.getlength(word[start:i])
                    start = i
            continue
        origin, offset = x, 0.0  # letter by letter at the font's kerned positions plus jittered tracking
        for i, ch in enumerate(word):
            pil_size = _size_step(wsize * (1 + 0.5 * cfg.size_jitter * s * rng.uniform(-1, 1)))
            pil = font.pil(files[i], pil_size)
            lift = 0.03 * xh * s * rng.normal()
            pieces.append((origin + offset, drift + lift, ch, files[i], pil_size))
            if all(f == files[i] for f in files[: i + 1]):  # kerned advance within one file
                advance = pil.getlength(word[: i + 1]) - pil.getlength(word[:i])
            else:
                advance = pil.getlength(ch)
            offset += advance + track + jitter * rng.normal()
        x = origin + offset
    # the canvas holds every glyph's full box (swashes included) plus room for the warp
    boxes = [font.pil(f, pil_size).getbbox(piece, anchor="ls") for _, _, piece, f, pil_size in pieces]
    margin = int(0.5 * xh) + 2
    top = int(max(m["ascender"] * scale, -min(b[1] + p[1] for b, p in zip(boxes, pieces)))) + margin
    below = int(max(m["descender"] * scale, max(b[3] + p[1] for b, p in zip(boxes, pieces)))) + margin
    width = int(max(x, max(b[2] + p[0] for b, p in zip(boxes, pieces)))) + size
    canvas = Image.new("L", (width, top + below), 0)
    draw = ImageDraw.Draw(canvas)
    for px, dy, piece, f, pil_size in pieces:
        draw.text((px, top + dy), piece, font=font.pil(f, pil_size), fill=255, anchor="ls")
    return np.asarray(canvas, dtype=np.float32) / 255, top


def _stroke(mask: np.ndarray, font: Font, cfg: SynthConfig, rng: np.random.Generator, size: float,
            xh: float) -> np.ndarray:
    """Thicken or thin the strokes towards a per-line pen width."""
    current = font.metrics["stroke"] * size / 100
    target = _uniform(rng, cfg.stroke) * xh
    delta = target - current
    if delta >= 1:
        k = min(int(round(delta)) + 1, 9)
        return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if delta <= -1 and current > 3:
        k = min(int(round(-delta)) + 1, int(current * 0.6) + 1)
        if k >= 2:
            thinner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            if thinner.sum() > 0.4 * mask.sum():  # never erase thin letters
                return thinner
    return mask


def _warp(mask: np.ndarray, baseline: int, cfg: SynthConfig, rng: np.random.Generator, xh: float,
          s: float) -> tuple[np.ndarray, np.ndarray]:
    """Slant (shear about the baseline), slope, curvature and drift of the baseline, a smooth
    horizontal stretch (letter widths and gaps) and an elastic wobble of the strokes, as one remap
    (maps built on a coarse grid: every part is smooth). Returns the warped mask and the baseline
    shift per column."""
    h, w = mask.shape
    shear = math.tan(math.radians(_uniform(rng, cfg.slant_degrees) * s))
    out_w = w + int(abs(shear) * h) + 2
    g = 4  # grid step of the coarse maps
    gh, gw = h // g + 2, out_w // g + 2
    u = np.arange(gw, dtype=np.float32) * g
    v = np.arange(gh, dtype=np.float32)[:, None] * g
    t = u / out_w
    slope = math.tan(math.radians(rng.uniform(-1, 1) * cfg.rotation_degrees * s))
    bend = cfg.curvature * xh * s * rng.uniform(-1, 1)
    dy = (slope * (u - out_w / 2) + bend * (4 * (t - rng.uniform(0.3, 0.7)) ** 2 - 0.5)
          + cfg.baseline_drift * xh * s * _smooth(rng, gw, 6 * xh / g))
    span = float(dy.max() - dy.min())
    if span > 0.6 * xh:  # a long line: keep the wander within a fraction of the x-height
        dy = (dy - dy.mean()) * (0.6 * xh / span)
    stretch = np.clip(1 + cfg.width_warp * s * _smooth(rng, gw, 1.5 * xh / g), 0.5, 1.5)
    x_of_u = np.concatenate([[0], np.cumsum(stretch[:-1])]) * g
    x_of_u *= u[-1] / max(float(x_of_u[-1]), 1.0)
    offset = shear * (h - baseline) if shear > 0 else -shear * baseline  # keeps the sheared ink inside
    map_x = x_of_u[None, :] - offset - shear * (baseline - v)
    map_y = v - dy[None, :]
    if rng.random() < cfg.p_elastic * min(s, 1):
        amp = cfg.elastic * xh * s
        map_x = map_x + amp * _field(rng, (gh, gw), 0.5 * xh / g)
        map_y = map_y + amp * _field(rng, (gh, gw), 0.5 * xh / g)
    size = (gw * g, gh * g)
    map_x = cv2.resize(map_x.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[:h, :out_w]
    map_y = cv2.resize(map_y.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[:h, :out_w]
    warped = cv2.remap(mask, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    dy_full = cv2.resize(dy.astype(np.float32)[None, :], (gw * g, 1), interpolation=cv2.INTER_LINEAR)[0, :out_w]
    return warped, dy_full


def _paper(rng: np.random.Generator, cfg: SynthConfig, shape: tuple[int, int], xh: float,
           s: float) -> np.ndarray:
    """Paper: a gray level with uneven lighting, mottled texture and, sometimes, stains and foxing."""
    h, w = shape
    level = _uniform(rng, cfg.paper)
    paper = np.full(shape, level, np.float32)
    paper += rng.uniform(2, 8) * _field(rng, shape, rng.uniform(3, 8) * h)  # lighting
    paper += rng.uniform(1, 4) * _field(rng, shape, rng.uniform(0.15, 0.5) * xh)  # fibres, mottling
    if rng.random() < cfg.p_stain * s:
        yy, xx = np.ogrid[:h, :w]
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.3, 1.5) * h, rng.uniform(0.3, 1.5) * h
            d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
            ring = rng.random() < 0.4  # a dried drop: darker rim
            blob = np.exp(-((np.sqrt(d) - 1) * 4) ** 2) if ring else np.exp(-d * rng.uniform(1, 3))
            paper -= rng.uniform(8, 35) * blob.astype(np.float32)
    if rng.random() < cfg.p_stain * s:  # foxing: small brown spots
        spots = np.zeros(shape, np.float32)
        for _ in range(int(rng.integers(2, 12))):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.25) * xh
            cv2.circle(spots, (int(cx), int(cy)), max(1, int(r)), float(rng.uniform(10, 40)), -1, cv2.LINE_AA)
        paper -= cv2.GaussianBlur(spots, (0, 0), 0.1 * xh + 0.5)
    return paper


def _rules(paper: np.ndarray, rng: np.random.Generator, rows: Sequence[float], xh: float) -> None:
    """Ruled lines (solid or dotted, slightly off the text's own slope) drawn onto `paper`."""
    h, w = paper.shape
    tone = rng.uniform(25, 90)
    thick = max(1, int(round(rng.uniform(0.04, 0.12) * xh)))
    tilt = rng.uniform(-0.004, 0.004) * w
    dotted = rng.random() < 0.2
    layer = np.zeros_like(paper)
    for y in rows:
        y0, y1 = y - tilt / 2, y + tilt / 2
        if -thick <= min(y0, y1) and max(y0, y1) <= h + thick:
            cv2.line(layer, (0, int(y0 * 16)), ((w - 1) * 16, int(y1 * 16)), 1.0, thick, cv2.LINE_AA, shift=4)
    if dotted:
        period = max(2, int(rng.uniform(0.15, 0.35) * xh))
        layer[:, (np.arange(w) // period) % 2 == 1] = 0
    paper -= tone * layer


def _polygon_mask(image: np.ndarray, rng: np.random.Generator, keep: np.ndarray) -> None:
    """Whiten the image outside a jagged band polygon (as lines cut from a page along their polygon),
    except where `keep` is set (the line's own ink: the polygon goes round it)."""
    h, w = image.shape
    n = max(3, int(w / (h * rng.uniform(1.5, 4))))
    xs = np.linspace(0, w - 1, n)
    top = rng.uniform(0, 0.18, n) * h
    bottom = h - 1 - rng.uniform(0, 0.18, n) * h
    poly = np.concatenate([np.stack([xs, top], 1), np.stack([xs[::-1], bottom[::-1]], 1)])
    inside = np.zeros_like(image)
    cv2.fillPoly(inside, [np.round(poly).astype(np.int32)], 1)
    image[(inside == 0) & (keep == 0)] = 255


def _neighbours(alpha: np.ndarray, mask: np.ndarray, y0: int, x0: int, rng: np.random.Generator,
                xh: float) -> np.ndarray:
    """Add the descenders of the line above and/or the ascenders of the line below (the line's own
    ink, shifted by about one line pitch) at the crop's edges."""
    ch, cw = alpha.shape
    h = mask.shape[0]
    pitch = int(ch * rng.uniform(0.75, 1.0))
    for direction in ((1,), (-1,), (1, -1))[int(rng.integers(3))]:
        rows = np.arange(y0 + direction * pitch, y0 + direction * pitch + ch)
        ok = (rows >= 0) & (rows < h)
        if ok.any():
            other = np.zeros_like(alpha)
            other[ok] = np.roll(mask[rows[ok], x0:x0 + cw], int(rng.uniform(-3, 3) * xh), axis=1)
            alpha = np.maximum(alpha, other)
    return alpha


def render_line(text: str, font: Font, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """One line of `text` in `font` (which must draw all of it) as a uint8 image `cfg.height` high."""
    s = max(0.0, float(cfg.strength))
    m = font.metrics
    band = RENDER_SCALE * cfg.height  # ascender-to-descender height while drawing
    size = max(8, round(band * 100 / (m["ascender"] + m["descender"]) * rng.uniform(0.9, 1.05)))
    xh = m["xheight"] * size / 100
    mask, baseline = _layout(text, font, cfg, rng, size, xh, s)
    mask = _stroke(mask, font, cfg, rng, size, xh)
    mask, dy = _warp(mask, baseline, cfg, rng, xh, s)
    h, w = mask.shape

    # crop: the ascender-to-descender band (following the baseline wander), widened to keep every
    # bit of the line's ink (an accent or swash cut off would make the label wrong), and its columns
    asc = m["ascender"] * size / 100 * rng.uniform(1.0, 1.4)
    desc = m["descender"] * size / 100 * rng.uniform(0.9, 1.5)
    inked = mask > 0.15
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    if cols.size == 0:
        rows, cols = np.array([baseline]), np.array([0, w - 1])
    y0 = int(max(0, min(baseline + dy.min() - asc, rows[0] - 1)))
    y1 = int(min(h, max(baseline + dy.max() + desc + 1, rows[-1] + 2)))
    x0 = int(max(0, cols[0] - rng.uniform(0.1, 0.9) * xh))
    x1 = int(min(w, cols[-1] + 1 + rng.uniform(0.1, 0.9) * xh))
    alpha = own = mask[y0:y1, x0:x1]
    if rng.random() < cfg.p_neighbours * s:
        alpha = _neighbours(alpha, mask, y0, x0, rng, xh)

    # to the output height; ink and paper are composed there
    ch, cw = alpha.shape
    out_h = cfg.height
    out_w = max(8, int(round(cw * out_h / ch)))
    alpha = cv2.resize(alpha, (out_w, out_h), interpolation=cv2.INTER_AREA)
    own = cv2.resize(own, (out_w, out_h), interpolation=cv2.INTER_AREA) > 0.02  # the line's own ink
    k = out_h / ch
    xh, base_row, dy = xh * k, (baseline - y0) * k, dy * k

    pencil = rng.random() < cfg.p_pencil
    ink = rng.uniform(70, 140) if pencil else _uniform(rng, cfg.ink)
    opacity = np.float32(rng.uniform(0.85, 1.0))
    if rng.random() < cfg.p_pressure:  # uneven ink flow
        flow = np.clip(_field(rng, (out_h, out_w), 2 * xh) * 0.5 + 0.5, 0, 1)
        opacity = opacity * (1 - rng.uniform(0.1, 0.35) * flow)
    if pencil:  # graphite on paper grain
        opacity = opacity * (0.5 + 0.5 * rng.random((out_h, out_w), dtype=np.float32))
    alpha = np.clip(alpha * opacity, 0, 1)

    paper = _paper(rng, cfg, (out_h, out_w), xh, s)
    if rng.random() < cfg.p_ruled:
        base = base_row + float(np.median(dy)) + rng.uniform(-0.05, 0.35) * xh
        rows = [base] + ([base - out_h * rng.uniform(0.85, 1.0)] if rng.random() < 0.4 else [])
        _rules(paper, rng, rows, xh)
    ink = min(ink, min(float(paper.mean()), 255.0) - 100)
    if rng.random() < cfg.p_show_through * s:  # the other side of the leaf, mirrored and blurred
        ghost = cv2.GaussianBlur(np.roll(alpha[:, ::-1], int(rng.integers(out_w)), axis=1), (0, 0), 0.1 * xh + 0.7)
        paper -= rng.uniform(10, 35) * ghost
    image = paper * (1 - alpha) + ink * alpha

    # the scan: blur, sensor noise, cut along a polygon, JPEG
    if rng.random() < cfg.p_blur * s:
        image = cv2.GaussianBlur(image, (0, 0), _uniform(rng, cfg.blur_sigma) * out_h / 64)
    if rng.random() < cfg.p_noise * s:
        image = image + rng.normal(0, _uniform(rng, cfg.noise_sigma), image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < cfg.p_polygon_mask * s:
        _polygon_mask(image, rng, keep=cv2.dilate(own.astype(np.uint8), np.ones((3, 3), np.uint8)))
    if rng.random() < cfg.p_jpeg * s:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*cfg.jpeg_quality))])
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if ok else image
    return image


def build_generator(text: Sequence[str], fonts: str | Path | None = None, seed: int = 0, height: int = 64,
                    min_chars: int | None = None, max_chars: int | None = None, charset: str | Path | None = None,
                    strength: float = 1.0, problems: Problems | None = None) -> SynthGenerator:
    """A generator over text sources (`read_text_corpus`), optionally re-cut into lines of
    `min_chars`..`max_chars` (or only lines of at least `min_chars` kept) and limited to a `charset`
    file. Clear `SynthError`s before any rendering: no text, no usable font, a charset or a text
    no font can draw. Skipped lines and charset characters no font has are logged as warnings."""
    problems = problems if problems is not None else Problems()
    for name, value in (("--min-chars", min_chars), ("--max-chars", max_chars)):
        if value is not None and value < 1:
            raise SynthError(f"{name} must be at least 1 (got {value})")
    corpus = read_text_corpus(text, problems)
    if not corpus:
        raise SynthError(f"{', '.join(map(str, text))}: no text to draw (the corpus is empty)")
    if max_chars:
        low = min(min_chars or 10, max_chars)
        corpus = flow_lines(corpus, low, max_chars, seed)
    elif min_chars:
        corpus = [(t, w) for t, w in corpus if len(t) >= min_chars]
        if not corpus:
            raise SynthError(f"{', '.join(map(str, text))}: no line has {min_chars} characters or more")
    loaded = load_fonts(fonts)
    chars = None
    if charset is not None:
        chars = read_charset(charset)
        nowhere = {c for c in chars if _drawable_char(c) and not any(f.file_of(c) >= 0 for f in loaded)}
        if nowhere == chars:
            raise SynthError(f"{charset}: no font draws any character of this charset")
        if nowhere:
            log.warning("%s: no font draws %s; lines with them are skipped (add fonts that have them with "
                        "--fonts)", charset, _chars(nowhere))
    config = SynthConfig(height=height, strength=strength)
    generator = SynthGenerator(loaded, corpus, seed, config, charset=chars)
    if not generator.texts:
        raise SynthError(f"{', '.join(map(str, text))}: no line can be drawn with these fonts"
                         + (f" and charset {charset}" if charset else "") + f" ({generator.report.summary()})")
    if generator.report.skipped:
        log.warning("%s", generator.report.summary())
    return generator


# ---------------------------------------------------------------- dataset writer


_WORKER_GENERATOR: SynthGenerator | None = None


def _render_png(index: int) -> tuple[bytes, str, str]:
    """Line `index` of the worker's generator as (PNG bytes, text, font key)."""
    generator = _WORKER_GENERATOR
    image, text, font = generator._render(generator.text_at(index), np.random.default_rng([generator.seed, 3, index]))
    return encode_png(image), text, font.key


def _rendered(generator: SynthGenerator, lines: int, workers: int) -> Iterator[tuple[bytes, str, str]]:
    """(PNG, text, font key) of lines 0..lines-1 in order, rendered by `workers` processes; every line
    has its own seeded random state, so the output does not depend on the number of workers."""
    global _WORKER_GENERATOR
    _WORKER_GENERATOR = generator
    if workers <= 1:
        yield from map(_render_png, range(lines))
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_render_png, range(lines), chunksize=16)


def write_dataset(generator: SynthGenerator, out: str | Path, lines: int, val_fraction: float = 0.0,
                  progress: Callable[[int, int], None] | None = None, workers: int = 1) -> dict:
    """Render `lines` lines into `out/lines/FONT_NNNNNN.png` with the manifests `out/train.tsv` (and
    `out/val.tsv` with the last `val_fraction` of them), with `workers` processes; `out/synth.json`
    records the settings."""
    out = Path(out)
    if lines < 1:
        raise SynthError(f"--lines must be at least 1 (got {lines})")
    if not 0 <= val_fraction < 1:
        raise SynthError(f"--val-fraction must be in [0, 1) (got {val_fraction})")
    if (out / "train.tsv").exists():
        raise SynthError(f"{out}: already holds a dataset (train.tsv); give another --out or remove it")
    try:
        (out / "lines").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SynthError(f"{out}: cannot create the output folder ({err.strerror or err})") from None
    n_val = int(round(lines * val_fraction))
    rows: dict[str, list[str]] = {"train": [], "val": []}
    fonts: Counter = Counter()
    start = time.perf_counter()
    for i, (png, text, key) in enumerate(_rendered(generator, lines, workers)):
        name = f"lines/{key}_{i:06d}.png"
        (out / name).write_bytes(png)
        rows["val" if i >= lines - n_val else "train"].append(f"{name}\t{text}\n")
        fonts[key] += 1
        if progress:
            progress(i + 1, lines)
    seconds = time.perf_counter() - start
    manifests = {}
    for split, split_rows in rows.items():
        if split_rows:
            manifests[split] = out / f"{split}.tsv"
            manifests[split].write_text("".join(split_rows), encoding="utf-8")
    summary = {"lines": lines, "train": len(rows["train"]), "val": len(rows["val"]), "seed": generator.seed,
               "seconds": round(seconds, 2), "lines_per_second": round(lines / max(seconds, 1e-9), 1),
               "texts": len(generator.texts), "skipped_texts": dict(generator.report.skipped),
               "fonts": {f.key: f.name for f in generator.fonts}, "lines_per_font": dict(fonts.most_common()),
               "config": asdict(generator.config)}
    (out / "synth.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return {**summary, "manifests": {k: str(v) for k, v in manifests.items()}}
