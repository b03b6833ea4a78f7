"""Hugging Face reader: Parquet files and save_to_disk folders written the way `datasets` writes them
(HF Image structs `{bytes, path}`, `huggingface` schema metadata, state.json / dataset_info.json /
dataset_dict.json), and a real `save_to_disk` when `datasets` is installed."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from htrjand.datasets import DataError, Problems, detect_format, hf, read_dataset
from htrjand.images import line_size, load_line

TEXTS = ["first line", "zweite Zeile", "la troisième"]
FEATURES = {"image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"},
            "writer": {"dtype": "string", "_type": "Value"}}


@pytest.fixture()
def pa():
    return pytest.importorskip("pyarrow")


def _pixels(i: int) -> np.ndarray:
    pixels = np.full((10, 24 + 4 * i), 255, np.uint8)
    pixels[2:8, 3:-3] = 40 * i
    return pixels


def _png(i: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(_pixels(i)).save(out, format="PNG")
    return out.getvalue()


def _table(pa, texts=TEXTS, image="image", text="text", features=FEATURES):
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns = {
        image: pa.array([{"bytes": _png(i), "path": f"{i}.png"} for i in range(len(texts))], image_type),
        text: pa.array(texts, pa.string()),
        "writer": pa.array([f"w{i % 2}" for i in range(len(texts))], pa.string()),
    }
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return pa.table(columns).replace_schema_metadata(meta)


def _write_parquet(pa, path: Path, table) -> Path:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _save_to_disk(pa, folder: Path, table, split=None) -> Path:
    """What `Dataset.save_to_disk` writes: an Arrow IPC stream plus dataset_info.json and state.json."""
    folder.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    (folder / "dataset_info.json").write_text(json.dumps(
        {"citation": "", "description": "", "features": FEATURES, "homepage": "", "license": ""}, indent=2))
    (folder / "state.json").write_text(json.dumps(
        {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": "f659f4621779b468",
         "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
         "_output_all_columns": False, "_split": split}, indent=2))
    return folder


def test_parquet_file_with_image_structs(pa, tmp_path):
    path = _write_parquet(pa, tmp_path / "lines.parquet", _table(pa))
    problems = Problems()
    samples = read_dataset(f"hf:{path}", problems)
    assert [s.text for s in samples] == TEXTS and not problems.entries
    assert all(isinstance(s.image, bytes) for s in samples)
    assert [s.group for s in samples] == ["w0", "w1", "w0"]
    assert [s.source for s in samples] == [f"{path}#{i}" for i in range(3)]
    assert samples[0].dataset == "lines"
    for i, s in enumerate(samples):
        assert np.array_equal(load_line(s.image), _pixels(i))
        assert line_size(s.image) == (24 + 4 * i, 10)
    assert detect_format(path) == "hf"


def test_parquet_folder_splits_from_file_names(pa, tmp_path):
    data = tmp_path / "iam_lines" / "data"
    _write_parquet(pa, data / "train-00000-of-00002.parquet", _table(pa, TEXTS[:2]))
    _write_parquet(pa, data / "train-00001-of-00002.parquet", _table(pa, TEXTS[2:]))
    _write_parquet(pa, data / "validation-00000-of-00001.parquet", _table(pa, ["val line"]))
    _write_parquet(pa, data / "test-00000-of-00001.parquet", _table(pa, ["test a", "test b"]))
    root = tmp_path / "iam_lines"
    assert hf.detect(root) and detect_format(root) == "hf"
    assert [s.text for s in read_dataset(f"hf:{root}?split=train", Problems())] == TEXTS
    assert [s.text for s in read_dataset(f"hf:{root}?split=val", Problems())] == ["val line"]
    assert [s.text for s in read_dataset(f"{data}?split=test", Problems())] == ["test a", "test b"]
    everything = read_dataset(str(root), Problems())
    assert len(everything) == 6 and everything[0].dataset == "iam_lines"
    with pytest.raises(DataError, match="no split 'dev2'.*available: test, train, validation"):
        read_dataset(f"hf:{root}?split=dev2")


def test_columns_are_auto_picked_or_named(pa, tmp_path):
    features = {"img": {"_type": "Image"}, "transcription": {"dtype": "string", "_type": "Value"}}
    path = _write_parquet(pa, tmp_path / "a.parquet", _table(pa, image="img", text="transcription",
                                                              features=features))
    assert [s.text for s in read_dataset(f"hf:{path}", Problems())] == TEXTS
    # no HF metadata and unusual names: the struct column is still found, the text needs naming
    plain = _table(pa, image="scan", text="gt_text").replace_schema_metadata(None)
    path = _write_parquet(pa, tmp_path / "b.parquet", plain)
    with pytest.raises(DataError, match="cannot tell the text column.*text_column=NAME"):
        read_dataset(f"hf:{path}")
    samples = read_dataset(f"hf:{path}?text_column=gt_text&image_column=scan&group_column=writer", Problems())
    assert [s.text for s in samples] == TEXTS and [s.group for s in samples] == ["w0", "w1", "w0"]
    with pytest.raises(DataError, match="no column 'nope'"):
        read_dataset(f"hf:{path}?text_column=nope")
    with pytest.raises(DataError, match="unknown option.*colour"):
        read_dataset(f"hf:{path}?colour=red")


def test_class_label_text_column(pa, tmp_path):
    features = {"image": {"_type": "Image"}, "label": {"names": ["alpha", "beta"], "_type": "ClassLabel"}}
    table = pa.table({"image": pa.array([_png(0), _png(1)], pa.binary()), "label": pa.array([1, 0], pa.int64())})
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    path = _write_parquet(pa, tmp_path / "cl.parquet", table.replace_schema_metadata(meta))
    assert [s.text for s in read_dataset(f"hf:{path}", Problems())] == ["beta", "alpha"]


def test_binary_and_path_images(pa, tmp_path):
    Image.fromarray(_pixels(2)).save(tmp_path / "on_disk.png")
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": None, "path": "on_disk.png"}, {"bytes": None, "path": "gone.png"},
                           None, {"bytes": _png(1), "path": None}], image_type),
        "text": ["by path", "missing", "no image", "by bytes"],
        "id": ["l1", "l2", "l3", "l4"],
    })
    path = _write_parquet(pa, tmp_path / "mixed.parquet", table)
    problems = Problems()
    samples = read_dataset(f"hf:{path}", problems)
    assert [(s.line_id, s.text) for s in samples] == [("l1", "by path"), ("l4", "by bytes")]
    assert samples[0].image == tmp_path / "on_disk.png"
    assert np.array_equal(load_line(samples[0].image), _pixels(2))
    assert [(k, w) for k, w, _ in problems.entries] == [("missing image", f"{path}#1"), ("missing image", f"{path}#2")]
    # a plain binary column of encoded images
    raw = pa.table({"image": pa.array([_png(0)], pa.binary()), "sentence": ["raw bytes"]})
    path = _write_parquet(pa, tmp_path / "raw.parquet", raw)
    [sample] = read_dataset(f"hf:{path}", Problems())
    assert sample.text == "raw bytes" and np.array_equal(load_line(sample.image), _pixels(0))


def test_save_to_disk_dataset_and_dataset_dict(pa, tmp_path):
    single = _save_to_disk(pa, tmp_path / "single", _table(pa))
    assert hf.detect(single) and detect_format(single) == "hf"
    samples = read_dataset(str(single), Problems())
    assert [s.text for s in samples] == TEXTS
    assert np.array_equal(load_line(samples[2].image), _pixels(2))
    assert [s.source for s in samples][-1] == f"{single / 'data-00000-of-00001.arrow'}#2"

    root = tmp_path / "dd"
    _save_to_disk(pa, root / "train", _table(pa))
    _save_to_disk(pa, root / "validation", _table(pa, ["v"]))
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    assert detect_format(root) == "hf"
    assert [s.text for s in read_dataset(f"hf:{root}?split=valid", Problems())] == ["v"]
    assert [s.text for s in read_dataset(f"hf:{root}?split=train", Problems())] == TEXTS
    assert len(read_dataset(f"hf:{root}", Problems())) == 4
    with pytest.raises(DataError, match="no split 'test'"):
        read_dataset(f"hf:{root}?split=test")


def test_real_save_to_disk(pa, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    data = {"image": [{"bytes": _png(i), "path": None} for i in range(3)], "text": TEXTS}
    ds = datasets.Dataset.from_dict(data, features=features)
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "saved"))
    ds.to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    assert detect_format(tmp_path / "saved") == "hf"
    samples = read_dataset(f"{tmp_path / 'saved'}?split=test", Problems())
    assert [s.text for s in samples] == [TEXTS[1]]
    assert np.array_equal(load_line(samples[0].image), _pixels(1))
    parquet = read_dataset(str(tmp_path / "train-00000-of-00001.parquet"), Problems())
    assert [s.text for s in parquet] == TEXTS


def test_broken_inputs_are_data_errors(pa, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="bad.parquet: cannot read"):
        read_dataset(f"hf:{bad}")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "state.json").write_text("{nope")
    with pytest.raises(DataError, match="state.json: not valid JSON"):
        read_dataset(f"hf:{folder}")
    numbers = _write_parquet(pa, tmp_path / "n.parquet", pa.table({"image": pa.array([_png(0)]), "text": [3]}))
    with pytest.raises(DataError, match="not text"):
        read_dataset(f"hf:{numbers}")


def test_missing_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"pip install htrjand\[hf\]"):
        read_dataset(f"hf:{path}")
    assert hf.detect(path)  # detection needs no pyarrow


def test_detect_is_specific(tmp_path):
    (tmp_path / "lines").mkdir()
    (tmp_path / "lines" / "a.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert not hf.detect(tmp_path) and not hf.detect(tmp_path / "notes.txt")
    assert not hf.detect(tmp_path / "absent.parquet")
