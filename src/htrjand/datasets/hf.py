"""Hugging Face datasets on disk: `save_to_disk` folders (Arrow) and Parquet files, read with pyarrow.

Accepted paths (`hf:PATH?split=test&image_column=img&text_column=transcription`):
- a folder written by `Dataset.save_to_disk` (`state.json`, `dataset_info.json`, `data-*.arrow`);
- a folder written by `DatasetDict.save_to_disk` (`dataset_dict.json` and one such folder per split);
- a Parquet file, or a folder of them (searched recursively, e.g. a hub snapshot's `data/`), whose
  split is read from the file name (`train-00000-of-00001.parquet`, `test.parquet`) or its folder
  (`train/0000.parquet`);
- a single `.arrow` file.
`split` picks one split (val = valid = validation = dev); without it every split is read.
Images are HF `Image` structs `{"bytes", "path"}` (bytes win; a path is relative to the data
file's folder), plain binary (encoded bytes) or string (a path) columns. Options `image_column`,
`text_column`, `id_column`, `group_column` name columns; by default the image column is the one of
HF `Image` type (else a `{bytes, path}` struct, else one named image/img), the text column the
first of `TEXT_NAMES`, and id/group columns are used when a column of a usual name exists.
pyarrow is the optional extra `htrjand[hf]`; nothing is ever fetched from the hub.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..charset import normalize_text
from .paths import Confinement, is_file
from .sample import DataError, Problems, Sample
from .spec import DatasetSpec

FORMAT = "hf"
OPTIONS = ("image_column", "text_column", "id_column", "group_column")
MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
IMAGE_NAMES = ("image", "img")
TEXT_NAMES = ("text", "transcription", "label", "sentence", "ground_truth")
ID_NAMES = ("id", "line_id", "file_name", "filename")
GROUP_NAMES = ("writer", "writer_id", "author", "author_id", "group", "page", "page_id")
SPLIT_ALIASES = {"valid": "val", "validation": "val", "dev": "val", "training": "train"}
KNOWN_SPLITS = ("train", "training", "val", "valid", "validation", "dev", "test")
SHARD = re.compile(r"(?P<split>.+?)-\d{5}-of-\d{5}")
BATCH_ROWS = 256


@dataclass
class Part:
    """One Arrow or Parquet file, the split it belongs to and its HF features (if known)."""

    path: Path
    split: str = ""
    features: dict[str, Any] = field(default_factory=dict)


def _canonical(split: str) -> str:
    split = split.lower()
    return SPLIT_ALIASES.get(split, split)


def detect(path: Path) -> bool:
    """A save_to_disk folder, a folder of Parquet files (or with them in `data/`), or one
    .parquet/.arrow file."""
    try:
        if path.is_file():
            return path.suffix.lower() in (".parquet", ".arrow")
        if path.is_dir():
            if any((path / name).is_file() for name in MARKERS):
                return True
            return any(next(folder.glob("*.parquet"), None) is not None for folder in (path, path / "data"))
    except OSError:
        pass
    return False


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def _file_split(path: Path) -> str:
    shard = SHARD.fullmatch(path.stem)
    if shard:
        return shard.group("split")
    for name in (path.stem, path.parent.name):
        if name.lower() in KNOWN_SPLITS:
            return name
    return ""


def _saved_dataset(folder: Path, split: str = "") -> list[Part]:
    """Parts of a `Dataset.save_to_disk` folder."""
    info = _load_json(folder / "dataset_info.json") if (folder / "dataset_info.json").is_file() else {}
    features = info.get("features") if isinstance(info, dict) else None
    state_path = folder / "state.json"
    if state_path.is_file():
        state = _load_json(state_path)
        try:
            names = [entry["filename"] for entry in state["_data_files"]]
        except (KeyError, TypeError, AttributeError):
            raise DataError(f"{state_path}: no _data_files list of {{'filename': ...}} entries") from None
        split = split or str(state.get("_split") or "")
    else:
        names = sorted(p.name for p in folder.glob("*.arrow"))
    if not names:
        raise DataError(f"{folder}: saved dataset lists no Arrow files")
    return [Part(folder / name, split, features if isinstance(features, dict) else {}) for name in names]


def find_parts(path: Path) -> list[Part]:
    """Every data file of the dataset at `path`, with its split."""
    if path.is_file():
        if path.suffix.lower() not in (".parquet", ".arrow"):
            raise DataError(f"{path}: not a .parquet or .arrow file")
        return [Part(path, _file_split(path))]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    dict_file = path / "dataset_dict.json"
    if dict_file.is_file():
        content = _load_json(dict_file)
        splits = content.get("splits") if isinstance(content, dict) else None
        if not isinstance(splits, list) or not splits:
            raise DataError(f"{dict_file}: no 'splits' list")
        parts = []
        for split in splits:
            if not (path / str(split)).is_dir():
                raise DataError(f"{dict_file}: split {split!r} has no folder {path / str(split)}")
            parts += _saved_dataset(path / str(split), str(split))
        return parts
    if (path / "state.json").is_file() or (path / "dataset_info.json").is_file():
        return _saved_dataset(path)
    parts = [Part(p, _file_split(p)) for p in sorted(path.rglob("*.parquet"))]
    if not parts:
        raise DataError(f"{path}: no save_to_disk dataset and no .parquet files here")
    return parts


def choose_split(parts: list[Part], split: str, where: Path) -> list[Part]:
    """The parts of `split` (all parts without one). Data with no split names at all is taken
    whole; otherwise a split that matches no file is an error naming the available ones."""
    if not split:
        return parts
    chosen = [p for p in parts if _canonical(p.split) == _canonical(split)]
    if chosen:
        return chosen
    named = sorted({p.split for p in parts if p.split})
    if named:
        raise DataError(f"{where}: no split {split!r} (available: {', '.join(named)})")
    return parts


def _features(part: Part, schema: Any) -> dict[str, Any]:
    if part.features:
        return part.features
    meta = (schema.metadata or {}).get(b"huggingface")
    if meta:
        try:
            features = json.loads(meta).get("info", {}).get("features", {})
            return features if isinstance(features, dict) else {}
        except (json.JSONDecodeError, AttributeError):
            return {}
    return {}


def _feature_type(features: dict[str, Any], name: str) -> str:
    feature = features.get(name)
    return str(feature.get("_type", "")) if isinstance(feature, dict) else ""


def _pick(spec: DatasetSpec, option: str, names: list[str], candidates: tuple[str, ...], where: Path,
          required: bool) -> str | None:
    given = spec.option(option)
    if given:
        if given not in names:
            raise DataError(f"{where}: no column {given!r} ({option}); columns: {', '.join(names)}")
        return given
    lower = {n.lower(): n for n in names}
    for candidate in candidates:
        if candidate in lower:
            return lower[candidate]
    if required:
        raise DataError(f"{where}: cannot tell the {option.split('_')[0]} column among {', '.join(names)} "
                        f"(give it with {option}=NAME)")
    return None


def _image_column(spec: DatasetSpec, schema: Any, features: dict[str, Any], where: Path) -> str:
    import pyarrow as pa

    names = list(schema.names)
    if not spec.option("image_column"):
        typed = [n for n in names if _feature_type(features, n) == "Image"]
        structs = [f.name for f in schema if pa.types.is_struct(f.type)
                   and {"bytes", "path"} <= {f.type.field(i).name for i in range(f.type.num_fields)}]
        if typed or structs:
            return (typed or structs)[0]
    return _pick(spec, "image_column", names, IMAGE_NAMES, where, True)


def _batches(part: Part, columns: list[str]) -> tuple[Any, Iterator[Any]]:
    """(schema, record batches of `columns`) of one file; call with columns=[] for the schema only."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import ipc

    try:
        if part.path.suffix.lower() == ".parquet":
            parquet = pq.ParquetFile(part.path)
            schema = parquet.schema_arrow
            return schema, parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)
        source = pa.memory_map(str(part.path))
        try:
            reader = ipc.open_stream(source)  # what save_to_disk writes
        except pa.ArrowInvalid:
            source.seek(0)
            reader = ipc.open_file(source)
            return reader.schema, (reader.get_batch(i).select(columns) for i in range(reader.num_record_batches))
        return reader.schema, (batch.select(columns) for batch in reader)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{part.path}: cannot read Arrow/Parquet data ({err})") from None


def _image_value(value: Any, folder: Path) -> Path | bytes | None:
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data and isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data)
        value = path
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) or None
    if isinstance(value, str) and value and "\0" not in value:
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # "~user/..." naming no user here
            path = Path(value)
        return path if path.is_absolute() else folder / path
    return None


def _text_value(value: Any, names: list[str] | None) -> str:
    if value is None:
        return ""
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return str(names[value])
    return str(value)


def _dataset_name(path: Path) -> str:
    if path.is_file():
        path = path.parent if SHARD.fullmatch(path.stem) or path.stem.lower() in KNOWN_SPLITS else path
        path = path if path.is_dir() else path.with_suffix("")
    if path.name.lower() in KNOWN_SPLITS or path.name == "data":
        path = path.parent
    return path.name


def read_part(spec: DatasetSpec, part: Part, problems: Problems, name: str) -> list[Sample]:
    import pyarrow as pa

    schema, _ = _batches(part, [])
    features = _features(part, schema)
    names = list(schema.names)
    image_col = _image_column(spec, schema, features, part.path)
    confine = Confinement.of(spec, FORMAT, part.path.parent)  # open unless allow_outside=false
    text_col = _pick(spec, "text_column", names, TEXT_NAMES, part.path, True)
    text_type = schema.field(text_col).type
    labels = None
    if _feature_type(features, text_col) == "ClassLabel":
        labels = features[text_col].get("names")
    elif not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise DataError(f"{part.path}: text column {text_col!r} holds {text_type}, not text (give text_column=NAME)")
    id_col = _pick(spec, "id_column", names, ID_NAMES, part.path, False)
    group_col = _pick(spec, "group_column", names, GROUP_NAMES, part.path, False)
    columns = list(dict.fromkeys(c for c in (image_col, text_col, id_col, group_col) if c))
    _, batches = _batches(part, columns)
    samples, row = [], 0
    try:
        for batch in batches:
            values = {c: batch.column(i).to_pylist() for i, c in enumerate(batch.schema.names)}
            for i in range(batch.num_rows):
                where = f"{part.path}#{row}"
                line_id = str(values[id_col][i]) if id_col and values[id_col][i] is not None else str(row)
                row += 1
                image = _image_value(values[image_col][i], part.path.parent)
                if image is None:
                    problems.add("missing image", where, f"row {line_id} has no image in column {image_col!r}")
                    continue
                if isinstance(image, Path) and confine.refuse(image, problems, where):
                    continue
                if isinstance(image, Path) and not is_file(image):
                    problems.add("missing image", where, f"image {image} not found")
                    continue
                text = normalize_text(_text_value(values[text_col][i], labels))
                group = str(values[group_col][i]) if group_col and values[group_col][i] is not None else ""
                samples.append(Sample(image, text, name, group, where, line_id=line_id))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{part.path}: cannot read Arrow/Parquet data at row {row} ({err})") from None
    return samples


def read(spec: DatasetSpec, problems: Problems) -> list[Sample]:
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise DataError(f"{spec.path}: unknown option(s) for hf: {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
    try:
        import pyarrow.parquet  # noqa: F401  (the import is the check)
    except ImportError:
        raise DataError(f"{spec.path}: reading Hugging Face / Parquet datasets needs pyarrow: "
                        "pip install htrjand[hf]") from None
    parts = choose_split(find_parts(spec.path), spec.split, spec.path)
    name = spec.name or _dataset_name(spec.path)
    return [sample for part in parts for sample in read_part(spec, part, problems, name)]
