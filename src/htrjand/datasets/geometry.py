"""Point lists of page XML (PAGE `points`, ALTO `POINTS`/`BASELINE`) and checks on line polygons."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import cv2
import numpy as np

from .sample import Point

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
MAX_COORDINATE = 1e7  # pixels; a larger coordinate (1e999 reads as infinity) is a broken file
MAX_POINTS = 10_000  # a line outline with more points is a broken or hostile file
MAX_CHECKED_POINTS = 500  # `self_intersects` compares every pair of edges: larger outlines are simplified first


class PointsError(ValueError):
    """A point list that cannot be parsed."""


def number(token: str | None, text: str = "") -> float:
    """One coordinate: a plain decimal number within +-`MAX_COORDINATE` (`PointsError` otherwise)."""
    return _number((token or "").strip(), text or token or "")


def _number(token: str, text: str) -> float:
    if not _NUMBER.match(token):
        raise PointsError(f"{_short(token, 30)!r} is not a number in point list {_short(text)!r}")
    value = float(token)
    if not abs(value) <= MAX_COORDINATE:
        raise PointsError(f"coordinate {_short(token, 30)} is out of range (beyond {MAX_COORDINATE:g})")
    return value


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_points(text: str) -> tuple[Point, ...]:
    """Points of `"x1,y1 x2,y2 ..."` (PAGE, recommended ALTO 4) or `"x1 y1 x2 y2 ..."` (older ALTO).

    Raises `PointsError` for anything else (stray characters, odd number count, mixed styles).
    An empty or blank string gives no points.
    """
    tokens = text.split()
    if not tokens:
        return ()
    if len(tokens) > (MAX_POINTS if any("," in t for t in tokens[:2]) else 2 * MAX_POINTS):
        raise PointsError(f"point list has more than {MAX_POINTS} points")
    if any("," in t for t in tokens):
        points = []
        for token in tokens:
            parts = token.split(",")
            if len(parts) != 2:
                raise PointsError(f"{token!r} is not an x,y pair in point list {_short(text)!r}")
            points.append((_number(parts[0], text), _number(parts[1], text)))
        return tuple(points)
    if len(tokens) % 2:
        raise PointsError(f"odd number of coordinates ({len(tokens)}) in point list {_short(text)!r}")
    values = [_number(t, text) for t in tokens]
    return tuple(zip(values[0::2], values[1::2]))


def scale_points(points: Sequence[Point], factor: float) -> tuple[Point, ...]:
    return tuple((x * factor, y * factor) for x, y in points)


def clean(points: Sequence[Point]) -> tuple[Point, ...]:
    """Drop consecutive repeated points and a closing point equal to the first."""
    out: list[Point] = []
    for p in points:
        if not out or p != out[-1]:
            out.append(p)
    while len(out) > 1 and out[-1] == out[0]:
        out.pop()
    return tuple(out)


def area(points: Sequence[Point]) -> float:
    """Absolute area of a polygon (shoelace formula)."""
    if len(points) < 3:
        return 0.0
    pts = np.asarray(points, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0


def degenerate(points: Sequence[Point]) -> str:
    """Why a polygon cannot outline a line ('' when it can): fewer than 3 distinct points or an
    area below one square pixel."""
    distinct = len(set(points))
    if distinct < 3:
        return f"degenerate polygon ({distinct} distinct point{'s' if distinct != 1 else ''})"
    if area(points) < 1.0:
        return "degenerate polygon (zero area)"
    return ""


def self_intersects(points: Sequence[Point]) -> bool:
    """Whether two non-adjacent edges of the closed polygon properly cross (touching or collinear
    overlaps, common in exported polygons, do not count)."""
    pts = np.asarray(clean(points), dtype=np.float64)
    n = len(pts)
    if n < 4:
        return False
    a, b = pts, np.roll(pts, -1, axis=0)  # edge i runs a[i] -> b[i]

    def orient(p, q, r):  # sign of the turn p -> q -> r, broadcast over arrays
        return np.sign((q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1])
                       - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0]))

    idx = np.arange(n)
    for start in range(0, n, 256):  # blocks of rows keep memory bounded for long polygons
        i = idx[start:start + 256, None]
        ai, bi = a[i[:, 0]][:, None, :], b[i[:, 0]][:, None, :]
        aj, bj = a[None, :, :], b[None, :, :]
        cross = (orient(ai, bi, aj) * orient(ai, bi, bj) < 0) & (orient(aj, bj, ai) * orient(aj, bj, bi) < 0)
        adjacent = (np.abs(i - idx[None, :]) <= 1) | (np.abs(i - idx[None, :]) == n - 1)
        if (cross & ~adjacent).any():
            return True
    return False


def simplify(points: Sequence[Point], tolerance: float = 0.5) -> tuple[Point, ...]:
    """The closed polygon with points dropped while it stays within `tolerance` pixels of the
    original (Douglas-Peucker): a contour traced pixel by pixel keeps its shape with far fewer points."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 1, 2)
    return tuple((float(x), float(y)) for x, y in cv2.approxPolyDP(pts, tolerance, True).reshape(-1, 2))


def convex_hull(points: Sequence[Point]) -> tuple[Point, ...]:
    hull = cv2.convexHull(np.asarray(points, dtype=np.float32)).reshape(-1, 2)
    return tuple((float(x), float(y)) for x, y in hull)


def bounds(points: Sequence[Point]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def box(left: float, top: float, right: float, bottom: float) -> tuple[Point, ...]:
    return ((left, top), (right, top), (right, bottom), (left, bottom))


def usable_box(b: tuple[float, float, float, float] | None) -> bool:
    return b is not None and all(math.isfinite(v) for v in b) and b[2] - b[0] >= 1 and b[3] - b[1] >= 1


def baseline_box(baseline: Sequence[Point], height: float) -> tuple[Point, ...] | None:
    """The box around a baseline grown by 3/4 of `height` upwards (ascenders, x-height) and 1/4
    downwards (descenders); None when the baseline has fewer than 2 distinct points."""
    if len(set(baseline)) < 2:
        return None
    left, top, right, bottom = bounds(baseline)
    if right - left < 1 and bottom - top < 1:
        return None
    return box(left, top - 0.75 * height, max(right, left + 1), bottom + 0.25 * height)
