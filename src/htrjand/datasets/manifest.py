"""TSV manifests: one `image-path<TAB>transcription` per line, paths relative to the manifest (further
tab-separated columns, such as the confidence `htrjand recognize --format tsv` writes, are ignored).
Paths may leave the manifest's folder unless the dataset says `allow_outside=false` (`paths`)."""
from __future__ import annotations

from pathlib import Path

from ..charset import normalize_text
from .idlists import text_lines
from .paths import Confinement
from .sample import Problems, Sample
from .spec import DatasetSpec

FORMAT = "manifest"


def detect(path: Path) -> bool:
    """Any file no more specific reader claims (checked last)."""
    return path.is_file()


def read(spec: DatasetSpec, problems: Problems) -> list[Sample]:
    return read_manifest(spec.path, problems, spec.name or None, Confinement.of(spec, FORMAT))


def read_manifest(path: Path, problems: Problems, name: str | None = None,
                  confine: Confinement | None = None) -> list[Sample]:
    """Samples of `path`; malformed lines (and, with `confine`, images outside its folders) are
    recorded in `problems` and skipped."""
    dataset = name or path.parent.name or path.stem
    root = path.parent
    samples = []
    for _, where, line in text_lines(path, problems, "manifest"):
        if not line.strip() or line.startswith("#"):
            continue
        if "\t" not in line:
            problems.add("malformed line", where, "no tab between image path and transcription")
            continue
        rel, transcription = line.split("\t")[:2]  # further columns (e.g. a confidence) are ignored
        transcription = normalize_text(transcription)
        if not transcription:
            problems.add("empty transcription", where, "empty transcription")
            continue
        if not rel.strip() or "\0" in rel:
            problems.add("malformed line", where, "no image path" if not rel.strip() else "NUL byte in the image path")
            continue
        image = Path(rel.strip())
        image = image if image.is_absolute() else root / image
        if confine is not None and confine.refuse(image, problems, where):
            continue
        group = image.stem.rsplit("_", 1)[0]
        samples.append(Sample(image, transcription, dataset, group, where))
    return samples
