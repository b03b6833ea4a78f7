"""Files a dataset names must lie inside the dataset's folder (the one check every reader uses).

A path written inside a dataset's files (a PAGE `imageFilename`, an ALTO `fileName`, a RIMES
`FileName`, the line ids IAM, Bentham and RIMES turn into file names, a symlink in a folder of line
images) may point anywhere: `../../home/me/private.png`, `/etc/passwd`. `Confinement.refuse` resolves
such a path (symlinks followed) and refuses it, as a skipped record naming the file and line that
gave it, when it leaves the dataset's root folder, unless the dataset has `allow_outside=true`.

The root is the folder the dataset names: the folder given, the folder of a file given, the folder
above the first wildcard of a glob. Folders the user gives as options (`images=DIR`) are roots too.
Page files may also use the folder above the one that holds them (Transkribus puts the XML in
`page/` beside the images; OCR-D workspaces name images relative to the workspace), and a page
image that is itself a symlink is followed wherever it points (`htrjand recognize` links the page
image beside each PAGE/ALTO file it writes: `layout.page_confinement`); symlinked folders on the
way are still resolved.

TSV manifests and Parquet/Arrow path columns are lists the user writes (htrjand's own `recognize`
writes `../` paths into results.tsv; scripts write absolute paths): they are not confined unless the
dataset says `allow_outside=false` (`OPEN_FORMATS`).
"""
from __future__ import annotations

import glob
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from .sample import Problems
from .spec import DatasetSpec

OPEN_FORMATS = ("manifest", "hf")  # formats whose paths may leave the dataset folder by default
KIND = "path outside dataset"  # the `Problems` kind of a refused path


def dataset_root(path: Path) -> Path:
    """The folder a dataset path names (a folder, a file's folder, a glob's fixed part)."""
    path = Path(path)
    if glob.has_magic(str(path)):
        while glob.has_magic(str(path)) and path != path.parent:
            path = path.parent
        return path
    return path if path.is_dir() else path.parent


def is_file(path: Path) -> bool:
    """`Path.is_file` that answers False, not an exception, for names too long or holding NUL."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def files_under(root: Path, suffixes: Collection[str]) -> list[Path]:
    """Files under `root` whose suffix (any case) is in `suffixes`, sorted; symlinked folders are
    followed (each real folder once, so link loops end), as `find -L` does. For a user's own inputs
    (`htrjand recognize FOLDER`), not for datasets, whose files `Confinement` keeps in their folder."""
    found, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        found += [Path(folder, n) for n in names if Path(n).suffix.lower() in suffixes and is_file(Path(folder, n))]
    return sorted(found)


def resolve(path: Path) -> Path | None:
    """`path` made absolute with symlinks followed; None when it cannot be (NUL bytes, loops)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def resolve_folders(path: Path) -> Path | None:
    """`path` made absolute with symlinked folders followed but a symlink at its end kept."""
    folder = resolve(Path(path).parent)
    return None if folder is None else Path(os.path.normpath(folder / Path(path).name))


def inside(path: Path, root: Path, follow_last: bool = True) -> bool:
    """Whether `path`, symlinks followed (but for its last part unless `follow_last`), lies in `root`."""
    target, base = (resolve(path) if follow_last else resolve_folders(path)), resolve(root)
    return target is not None and base is not None and target.is_relative_to(base)


@dataclass(frozen=True)
class Confinement:
    """The folders a dataset's files may name (`roots`), or no limit (`allow`)."""

    roots: tuple[Path, ...] = ()
    allow: bool = False
    follow_last: bool = True  # False: a symlink as the last part of a path is not followed

    @classmethod
    def of(cls, spec: DatasetSpec, fmt: str, *extra: Path | None) -> "Confinement":
        """The confinement of a dataset: its root folder and `extra` folders the user named."""
        allow = spec.allow_outside if spec.allow_outside is not None else fmt in OPEN_FORMATS
        roots = (dataset_root(spec.path), *(Path(e) for e in extra if e is not None))
        return cls(roots, allow)

    def widened(self, *extra: Path, follow_last: bool | None = None) -> "Confinement":
        return Confinement(self.roots + tuple(extra), self.allow,
                           self.follow_last if follow_last is None else follow_last)

    def permits(self, path: Path) -> bool:
        return self.allow or any(inside(path, root, self.follow_last) for root in self.roots)

    def reason(self, path: Path) -> str:
        """Why `path` is refused ('' when it is not)."""
        if self.permits(path):
            return ""
        target = resolve(path) if self.follow_last else resolve_folders(path)
        shown = str(path) if target is None or target == Path(path) else f"{path} (resolves to {target})"
        roots = " or ".join(str(r) for r in self.roots) or "no folder"
        return (f"{shown} lies outside the dataset folder {roots}; "
                "set allow_outside=true on the dataset to read it")

    def refuse(self, path: Path, problems: Problems, where: str, what: str = "image") -> bool:
        """True (and a `Problems` entry at `where`) when `path` may not be read."""
        reason = self.reason(path)
        if reason:
            problems.add(KIND, where, f"{what} {reason}")
        return bool(reason)


UNLIMITED = Confinement(allow=True)
