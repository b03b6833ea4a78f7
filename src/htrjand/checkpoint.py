"""Checkpoint files: atomic writes and validated reads with clear errors."""
from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "htrjand-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (the message names the file and the reason)."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate an htrjand checkpoint (format, version, charset vs. head size)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {err}".splitlines()[0]) from None
    meta = ckpt.get("hyper_parameters", {}).get("htrjand") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an htrjand checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')} "
                              f"is not supported by this htrjand (expects {FORMAT_VERSION})")
    head = ckpt.get("state_dict", {}).get("model.head.weight")
    if head is None or head.shape[0] != len(meta["charset"]) + 1:
        raise CheckpointError(f"{path}: the output layer does not match the stored charset "
                              f"({len(meta['charset'])} characters)")
    return ckpt


def update_metadata(src: str | Path, updates: dict, dst: str | Path | None = None) -> Path | None:
    """Set keys of a checkpoint's `hyper_parameters.htrjand` and write it atomically to `dst`, or
    back to `src` after keeping the original as `src.bak` (an existing backup is left alone).
    Returns the backup's path when one was made."""
    ckpt = read_checkpoint(src)
    ckpt["hyper_parameters"]["htrjand"].update(updates)
    backup = None
    if dst is None or Path(dst).resolve() == Path(src).resolve():
        dst, backup = Path(src), Path(str(src) + ".bak")
        if not backup.exists():
            shutil.copy2(src, backup)
    atomic_save(ckpt, dst)
    return backup


def slim_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Copy of a checkpoint without optimiser and loop state: for distribution, not for resuming."""
    ckpt = read_checkpoint(src)
    keep = ("state_dict", "hyper_parameters", "metrics", "epoch", "global_step", "pytorch-lightning_version")
    atomic_save({k: ckpt[k] for k in keep if k in ckpt}, dst)
