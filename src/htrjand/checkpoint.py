"""Checkpoint files: atomic writes with a sha256 digest, and validated reads with clear errors.

Training checkpoints get a digest file `NAME.sha256` beside them (`sha256sum` format, so
`sha256sum -c last.ckpt.sha256` checks one by hand). A digest that is present must match:
`read_checkpoint` refuses a file that does not (truncated, a flipped byte). A checkpoint without a
digest (written by another tool, or caught by a crash between the rename and the digest write) is
read unverified, as before. `last.ckpt` keeps the file it replaces as `last.prev.ckpt`.
"""
from __future__ import annotations

import hashlib
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


def digest_path(path: str | Path) -> Path:
    """The digest file of a checkpoint: `PATH.sha256`."""
    return Path(str(path) + ".sha256")


def previous_path(path: str | Path) -> Path:
    """Where `atomic_save(keep_previous=True)` keeps the file it replaces: last.ckpt -> last.prev.ckpt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _sync_folder(folder: Path) -> None:
    """fsync a folder so that renames in it survive a power cut (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temporary(path: Path, data) -> str:
    """Write bytes to a new hidden temporary file beside `path` (`.NAME.*.tmp`) and fsync it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _write_file(path: Path, data) -> None:
    """Write bytes to a temporary file beside `path`, fsync, rename over `path`."""
    tmp = _write_temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_digest(path: str | Path, hexdigest: str | None = None) -> Path:
    """Write `PATH.sha256` for `path` (hashing the file unless `hexdigest` is given), atomically."""
    path = Path(path)
    if hexdigest is None:
        hexdigest = file_sha256(path)
    sidecar = digest_path(path)
    _write_file(sidecar, f"{hexdigest}  {path.name}\n".encode())
    return sidecar


def check_digest(path: str | Path, data: bytes | None = None) -> bool | None:
    """True if `path` matches its digest file, False if not, None when it has none."""
    sidecar = digest_path(path)
    try:
        expected = sidecar.read_text(encoding="ascii").split()[0].lower()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, IndexError):
        return False
    data = Path(path).read_bytes() if data is None else data
    return hashlib.sha256(data).hexdigest() == expected


def atomic_save(obj: Any, path: str | Path, digest: bool = False, keep_previous: bool = False) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.

    With `digest`, `PATH.sha256` is written (atomically) once the file is in place; without, a
    digest left from an older file at `path` is removed first, so a digest never describes other
    content. With `keep_previous`, the file being replaced is first renamed to `previous_path(path)`
    with its digest. A crash at any moment leaves `path` or its previous version complete; at worst
    the newest one has no digest yet (it is then read unverified).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    hexdigest = hashlib.sha256(data).hexdigest() if digest else None
    tmp = _write_temporary(path, data)
    try:
        sidecar = digest_path(path)
        if keep_previous and path.is_file():
            previous = previous_path(path)
            digest_path(previous).unlink(missing_ok=True)  # never a digest beside other content
            os.replace(path, previous)
            if sidecar.is_file():
                os.replace(sidecar, digest_path(previous))
        else:
            sidecar.unlink(missing_ok=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hexdigest:
        write_digest(path, hexdigest)
    _sync_folder(path.parent)


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate an htrjand checkpoint (format, version, charset vs. head size)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    data = path.read_bytes()
    if check_digest(path, data) is False:
        previous = previous_path(path)
        offer = (f"; the previous checkpoint {previous} is kept beside it (e.g. --resume {previous})"
                 if previous.is_file() and check_digest(previous) is not False else "")
        raise CheckpointError(f"{path}: content does not match its sha256 digest {digest_path(path).name} "
                              f"(truncated or corrupt){offer}")
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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


def model_checkpoint(model, charset: list[str], preset: str = "") -> dict:
    """A minimal checkpoint of an `HTRNet` (weights, architecture, charset) that recognition, export
    and `info` read; no training state (for untrained models in tests and benchmarks)."""
    from . import __version__

    chars = list(charset)
    return {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model": model.config.to_dict(), "charset": chars, "preset": preset,
                                 "htrjand": {"format": FORMAT, "format_version": FORMAT_VERSION,
                                             "version": __version__, "charset": chars}}}


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
            write_digest(backup)  # read_checkpoint verified src: the copy is good
    atomic_save(ckpt, dst, digest=True)
    return backup


SLIM_KEYS = ("state_dict", "hyper_parameters", "metrics", "epoch", "global_step", "pytorch-lightning_version")


def slim_checkpoint(src: str | Path, dst: str | Path, digest: bool = True) -> None:
    """Copy of a checkpoint without optimiser and loop state: for distribution, not for resuming."""
    ckpt = read_checkpoint(src)
    atomic_save({k: ckpt[k] for k in SLIM_KEYS if k in ckpt}, dst, digest=digest)
