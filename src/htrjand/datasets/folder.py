"""Folders of line images, each beside a `<image>.gt.txt` (or `<stem>.gt.txt`) transcription (files
that are symlinks to outside the folder are refused unless `allow_outside=true`)."""
from __future__ import annotations

from pathlib import Path

from ..charset import normalize_text
from .paths import Confinement, is_file
from .sample import DataError, Problems, Sample
from .spec import DatasetSpec

FORMAT = "folder"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def _transcription_file(image: Path) -> Path | None:
    for candidate in (image.with_name(image.name + ".gt.txt"), image.with_suffix(".gt.txt")):
        if is_file(candidate):
            return candidate
    return None


def detect(path: Path) -> bool:
    """Any folder no more specific reader claims (checked last)."""
    return path.is_dir()


def read(spec: DatasetSpec, problems: Problems) -> list[Sample]:
    return read_folder(spec.path, problems, spec.name or None, Confinement.of(spec, FORMAT))


def read_folder(root: Path, problems: Problems, name: str | None = None,
                confine: Confinement | None = None) -> list[Sample]:
    """Samples for every image under `root` (recursively) that has a transcription file (both within
    `confine`, by default `root`)."""
    confine = confine or Confinement((root,))
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(f"{root}: folder holds no line images")
    samples = []
    for image in images:
        gt = _transcription_file(image)
        if gt is None:
            problems.add("missing transcription", str(image), "no .gt.txt file beside it")
            continue
        if confine.refuse(image, problems, str(image)) or confine.refuse(gt, problems, str(gt), "transcription"):
            continue
        try:
            text = normalize_text(gt.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError:
            problems.add("undecodable transcription", str(gt), "transcription is not UTF-8")
            continue
        except OSError as err:
            problems.add("unreadable transcription", str(gt), f"cannot read it ({err.strerror or err})")
            continue
        if not text:
            problems.add("empty transcription", str(gt), "empty transcription")
            continue
        group = str(image.parent.relative_to(root)) if image.parent != root else ""
        samples.append(Sample(image, text, name or root.name, group, str(gt)))
    return samples
