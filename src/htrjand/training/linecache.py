"""Decoded-line cache: every line decoded, cropped, masked and height-normalised once, kept in one
uint8 buffer in memory or in a memory-mapped file, so no epoch after the first setup decodes a JPEG
or masks a polygon again. DataLoader workers share the buffer (fork / page cache), not copies."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..datasets import Problems, Sample
from ..images import ImageError, load_line, normalize_height

log = logging.getLogger("htrjand")

CACHE_VERSION = 1


def _decode(args: tuple[Sample, int, int]) -> np.ndarray | str:
    sample, height, max_width = args
    try:
        return normalize_height(load_line(sample.image, sample.crop, sample.source), height, max_width=max_width)
    except ImageError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - PIL/cv2 raise many types for broken files
        return f"cannot decode image: {err}"


def cache_key(samples: Sequence[Sample], height: int, max_width: int) -> str:
    """Hash of everything the cached pixels depend on: files (path, size, mtime), crops, settings."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{height}|{max_width}".encode())
    for s in samples:
        if isinstance(s.image, bytes):
            h.update(hashlib.sha256(s.image).digest())
        else:
            try:
                st = os.stat(s.image)
                h.update(f"{s.image}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"{s.image}|missing".encode())
        h.update(repr(s.crop).encode())
    return h.hexdigest()[:24]


class LineCache:
    """Normalised uint8 line images `[height, width_i]` addressed by sample index."""

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray, widths: np.ndarray, height: int):
        buffer.flags.writeable = False  # lines are shared views: nothing may change them in place
        self.buffer, self.offsets, self.widths, self.height = buffer, offsets, widths, height

    def __len__(self) -> int:
        return len(self.widths)

    def __getitem__(self, index: int) -> np.ndarray:
        start, width = int(self.offsets[index]), int(self.widths[index])
        return self.buffer[start:start + self.height * width].reshape(self.height, width)

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)

    @classmethod
    def build(cls, samples: Sequence[Sample], height: int, max_width: int, mode: str = "memory",
              folder: Path | None = None, workers: int = 2) -> tuple["LineCache", list[str | None]]:
        """Decode every sample (in `workers` processes). Returns the cache and, per sample, None or
        the reason it could not be decoded (its width is then 0). `mode` is memory or disk; a disk
        cache is reused when its key (files, crops, settings) matches."""
        if mode not in ("memory", "disk"):
            raise ValueError(f"unknown cache mode {mode!r}")
        key = cache_key(samples, height, max_width)
        if mode == "disk":
            if folder is None:
                raise ValueError("a disk cache needs a folder")
            index_file, data_file = folder / f"lines-{key}.json", folder / f"lines-{key}.u8"
            if index_file.is_file() and data_file.is_file():
                index = json.loads(index_file.read_text(encoding="utf-8"))
                widths = np.asarray(index["widths"], dtype=np.int64)
                offsets = np.concatenate([[0], np.cumsum(widths * height)[:-1]]).astype(np.int64)
                buffer = np.memmap(data_file, dtype=np.uint8, mode="r") if widths.sum() else np.zeros(0, np.uint8)
                log.info("line cache: reusing %s (%d lines)", data_file, len(widths))
                return cls(buffer, offsets, widths, height), index["errors"]
        jobs = [(s, height, max_width) for s in samples]
        widths = np.zeros(len(samples), dtype=np.int64)
        errors: list[str | None] = [None] * len(samples)
        chunks: list[np.ndarray] = []
        tmp = None
        if mode == "disk":
            folder.mkdir(parents=True, exist_ok=True)
            tmp = data_file.with_suffix(f".tmp{os.getpid()}")
            sink = open(tmp, "wb")
        try:
            results = _map(jobs, workers)
            for i, result in enumerate(results):
                if isinstance(result, str):
                    errors[i] = result
                    continue
                widths[i] = result.shape[1]
                if mode == "disk":
                    sink.write(np.ascontiguousarray(result).tobytes())
                else:
                    chunks.append(result.reshape(-1))
        finally:
            if tmp is not None:
                sink.close()
        offsets = np.concatenate([[0], np.cumsum(widths * height)[:-1]]).astype(np.int64)
        if mode == "memory":
            buffer = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
            return cls(buffer, offsets, widths, height), errors
        os.replace(tmp, data_file)
        index_tmp = index_file.with_suffix(f".tmp{os.getpid()}")
        index_tmp.write_text(json.dumps({"widths": widths.tolist(), "errors": errors, "height": height}),
                             encoding="utf-8")
        os.replace(index_tmp, index_file)
        buffer = np.memmap(data_file, dtype=np.uint8, mode="r") if widths.sum() else np.zeros(0, np.uint8)
        return cls(buffer, offsets, widths, height), errors


def _map(jobs: list, workers: int):
    """Decode in order, in a process pool when it pays off."""
    if workers <= 1 or len(jobs) < 64:
        yield from map(_decode, jobs)
        return
    pool = ProcessPoolExecutor(workers)
    try:
        yield from pool.map(_decode, jobs, chunksize=32)
    finally:
        pool.shutdown()


def estimate_bytes(widths: Sequence[int], height: int) -> int:
    return int(sum(widths)) * height


def choose_mode(mode: str, widths: Sequence[int], height: int, max_gb: float) -> str:
    """Resolve `auto` to memory or disk by the estimated size; pass other modes through."""
    if mode != "auto":
        return mode
    return "memory" if estimate_bytes(widths, height) <= max_gb * 2**30 else "disk"


def report_failures(samples: Sequence[Sample], errors: list[str | None], problems: Problems) -> list[int]:
    """Record undecodable samples in `problems`; the indices of the decodable ones."""
    kept = []
    for i, (s, err) in enumerate(zip(samples, errors)):
        if err is None:
            kept.append(i)
        else:
            problems.add("unreadable image", s.source, err)
    return kept
