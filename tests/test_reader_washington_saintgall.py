"""Washington and Saint Gall readers on small copies of the FKI layouts (washingtondb-v1.0,
saintgalldb-v1.0): transcription.txt with the databases' own codes, line PNGs, split lists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from htrjand.datasets import DataError, Problems, detect_format, read_dataset, saintgall, washington
from htrjand.datasets.fki import CodeError
from htrjand.images import line_size, load_line

# id -> (encoded line as in ground_truth/transcription.txt, expected text)
GW_LINES = {
    "270-01": ("s_2-s_7-s_0-|-L-e-t-t-e-r-s-s_cm-|-O-r-d-e-r-s-|-a-n-d-|-I-n-s-t-r-u-c-t-i-o-n-s-s_pt-|-"
               + "O-c-t-o-b-e-r-s_cm-|-s_1-s_7-s_5-s_5-s_pt",
               "270 Letters, Orders and Instructions. October, 1755."),
    "270-02": ("u-n-l-e-s_s-s-|-H-o-g-g-s_qt-s-|-s_bl-o-r-|-b-e-s_br-s_sq-|-W-i-n-c-h-e-s-t-e-r-s_qo",
               "unle\u017fs Hogg's (or be); Winchester:"),
    "270-03": ("s_et-c-s_pt-|-s_GW-|-s_lb-s_1-s_0-s_0-|-a-s_sl-b-|-i-m-p-o-s_s-s-i-s_mi",
               "&c. G.W. £100 a/b impo\u017fsi-"),
    "271-01": ("s_2-s_1st-|-s_2-s_2nd-|-s_2-s_3rd-|-s_2-s_4th-|-s_3-s_0th-|-s_1-s_1th-|-s_5th-|-s_6th",
               "21st 22nd 23rd 24th 30th 11th 5th 6th"),
    # the same spelling with bare '|' between words, as Saint Gall writes it
    "271-02": ("s_7th|s_8th|s_9th|s_4-s_6-s_8-s_9|s_mi-s_pt", "7th 8th 9th 4689 -."),
    "271-03": ("a-b-|-s_xx-|-c", None),  # unknown code
    "300-01": ("T-h-e-|-e-n-d-s_pt", "The end."),
    "300-02": ("n-o-|-i-m-a-g-e", None),  # no PNG
}
GW_FOLDS = {
    "cv1": {"train": ["270-01", "270-02", "270-03"], "valid": ["271-01", "271-02", "271-03"],
            "test": ["300-01", "300-02", "305-01"]},  # 305-01: no transcription
    "cv3": {"train": ["300-01", "271-01"], "valid": ["270-03"], "test": ["270-02", "270-01"]},
}

SG_LINES = {  # real csg562 lines (shortened), with the edition's labels as third field
    "csg562-003-01": ("v-e-r-s-a-t-i-o|p-e-r|h-a-b-e-r-e-t-u-r-pt|et|v-e-l-u-t-i",
                      "conversatio|per|haberetur|et|veluti", "versatio per haberetur. & veluti"),
    "csg562-003-02": ("r-et|a-m-o-r-e-m-pt|n-a-s-c-e-r-et-u-r", "provocaret|amorem|nasceretur",
                      "r& amorem. nascer&ur"),
    "csg562-004-01": ("P-a-r-e-n-t-e-s|s-c-d-m|d-m", "parentes|secundum|deum", "Parentes scdm dm"),
    "csg562-004-02": ("a-b|s_pt|c", "ab|pt|c", None),  # a Washington code is unknown here
    "csg562-005-01": ("E-T|Q-u-i", "et|qui", "ET Qui"),
}
SG_SETS = {"train": ["csg562-003"], "valid": ["csg562-004"], "test": ["csg562-005", "csg562-099"]}


def _png(path: Path, value: int, width: int = 30) -> np.ndarray:
    pixels = np.full((12, width), 255, np.uint8)
    pixels[3:9, 2:width - 2] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture()
def gw(tmp_path) -> Path:
    root = tmp_path / "washingtondb-v1.0"
    (root / "ground_truth").mkdir(parents=True)
    (root / "ground_truth" / "transcription.txt").write_text(
        "".join(f"{line_id} {enc}\n" for line_id, (enc, _) in GW_LINES.items()))
    for i, line_id in enumerate(GW_LINES):
        if line_id != "300-02":
            _png(root / "data" / "line_images_normalized" / f"{line_id}.png", 10 * i, 20 + i)
    for fold in ("cv1", "cv2", "cv3", "cv4"):
        for part, ids in GW_FOLDS.get(fold, GW_FOLDS["cv1"]).items():
            path = root / "sets" / fold / f"{part}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{i}\n" for i in ids))
        (root / "sets" / fold / "keywords.txt").write_text("O-r-d-e-r-s\n")
    return root


@pytest.fixture()
def sg(tmp_path) -> Path:
    root = tmp_path / "saintgalldb-v1.0"
    (root / "ground_truth").mkdir(parents=True)
    (root / "ground_truth" / "transcription.txt").write_text(
        "".join(f"{line_id} {enc} {labels}\n" for line_id, (enc, labels, _) in SG_LINES.items()))
    for i, line_id in enumerate(SG_LINES):
        _png(root / "data" / "line_images_normalized" / f"{line_id}.png", 20 * i)
    (root / "sets").mkdir()
    for part, ids in SG_SETS.items():
        (root / "sets" / f"{part}.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "data" / "edition.txt").write_text("csg562-003 conversatio|per\n")
    return root


def _texts(samples) -> dict[str, str]:
    return {s.line_id: s.text for s in samples}


# --- Washington --------------------------------------------------------------------------------

@pytest.mark.parametrize("code,text", sorted(washington.CODES.items()))
def test_washington_every_symbol_code_decodes(code, text):
    assert washington.piece(code) == text


def test_washington_digits_and_ordinals_decode():
    assert [washington.piece(f"s_{d}") for d in range(10)] == [str(d) for d in range(10)]
    for ordinal in ("0th", "1st", "1th", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th"):
        assert washington.piece(f"s_{ordinal}") == ordinal
    for bad in ("s_xx", "s_10", "s_1xy", "s_", "ab", "1", ".", "S_pt"):
        with pytest.raises(CodeError):
            washington.piece(bad)


def test_washington_reads_all_lines_decoded(gw):
    problems = Problems()
    samples = washington.read(washington.DatasetSpec(gw), problems)
    expected = {i: text for i, (_, text) in GW_LINES.items() if text is not None}
    assert _texts(samples) == expected
    assert all(s.dataset == "washington" for s in samples)
    assert {s.line_id: s.group for s in samples}["271-02"] == "271"
    assert {s.group for s in samples} == {"270", "271", "300"}
    transcription = gw / "ground_truth" / "transcription.txt"
    assert samples[0].source == f"{transcription}:1"
    assert samples[0].image == gw / "data" / "line_images_normalized" / "270-01.png"


def test_washington_unknown_code_and_missing_image_are_reported(gw):
    problems = Problems()
    washington.read(washington.DatasetSpec(gw), problems)
    transcription = gw / "ground_truth" / "transcription.txt"
    by_kind = {kind: (where, message) for kind, where, message in problems.entries}
    assert set(by_kind) == {"unknown code", "missing image"}
    assert by_kind["unknown code"][0] == f"{transcription}:6"
    assert "s_xx" in by_kind["unknown code"][1] and "271-03" in by_kind["unknown code"][1]
    assert by_kind["missing image"][0] == f"{transcription}:8"
    assert "300-02.png" in by_kind["missing image"][1]


def test_washington_folds_and_splits(gw):
    problems = Problems()
    train = read_dataset(f"washington:{gw}?split=train", problems)
    assert [s.line_id for s in train] == ["270-01", "270-02", "270-03"]
    val = read_dataset(f"washington:{gw}?split=val&fold=cv1", problems)
    assert [s.line_id for s in val] == ["271-01", "271-02"]  # 271-03: unknown code
    assert _texts(read_dataset(f"washington:{gw}?split=valid", Problems())) == _texts(val)
    assert _texts(read_dataset(f"washington:{gw}?split=validation", Problems())) == _texts(val)
    test3 = read_dataset(f"washington:{gw}?split=test&fold=cv3", Problems())
    assert [s.line_id for s in test3] == ["270-02", "270-01"]  # list order
    assert [s.line_id for s in read_dataset(f"washington:{gw}?split=train&fold=3", Problems())] == ["300-01", "271-01"]


def test_washington_split_id_without_transcription_is_reported(gw):
    problems = Problems()
    test = read_dataset(f"washington:{gw}?split=test", problems)
    assert [s.line_id for s in test] == ["300-01"]
    entries = {kind: where for kind, where, _ in problems.entries}
    assert entries["unknown split id"] == f"{gw / 'sets' / 'cv1' / 'test.txt'}:3"
    assert entries["missing image"].endswith("transcription.txt:8")


def test_washington_bad_fold_split_and_option(gw):
    with pytest.raises(DataError, match="cv9.*known: cv1, cv2, cv3, cv4"):
        read_dataset(f"washington:{gw}?split=test&fold=cv9")
    with pytest.raises(DataError, match="unknown split 'dev2'"):
        read_dataset(f"washington:{gw}?split=dev2")
    with pytest.raises(DataError, match="unknown option.*flod"):
        read_dataset(f"washington:{gw}?split=test&flod=cv2")
    (gw / "sets" / "cv2" / "test.txt").unlink()
    with pytest.raises(DataError, match="test.txt: split list not found"):
        read_dataset(f"washington:{gw}?split=test&fold=cv2")
    with pytest.raises(DataError, match="no Washington database"):
        read_dataset(f"washington:{gw / 'data'}")


def test_washington_images_load(gw):
    samples = {s.line_id: s for s in read_dataset(f"washington:{gw}", Problems())}
    expected = np.full((12, 21), 255, np.uint8)
    expected[3:9, 2:19] = 10
    assert np.array_equal(load_line(samples["270-02"].image), expected)
    assert line_size(samples["270-02"].image) == (21, 12)


def test_washington_malformed_records(gw):
    path = gw / "ground_truth" / "transcription.txt"
    path.write_bytes(path.read_bytes() + b"270-05\n270-01 a-b\n27001 a\n270-06 \xff\xfe\n")
    problems = Problems()
    samples = washington.read(washington.DatasetSpec(gw), problems)
    assert len(samples) == 6
    kinds = [(kind, where.rsplit(":", 1)[1]) for kind, where, _ in problems.entries]
    assert ("malformed record", "9") in kinds and ("duplicate line", "10") in kinds
    assert ("malformed record", "11") in kinds and ("undecodable line", "12") in kinds


def test_washington_detection(gw):
    assert washington.detect(gw) and washington.detect(gw.parent)  # unzipped folder or its parent
    assert washington.detect(gw / "ground_truth" / "transcription.txt")
    assert not saintgall.detect(gw)
    assert detect_format(gw) == "washington"
    assert detect_format(gw.parent) == "washington"
    assert len(read_dataset(str(gw.parent), Problems())) == 6


# --- Saint Gall --------------------------------------------------------------------------------

def test_saintgall_codes():
    assert saintgall.piece("pt") == "." and saintgall.piece("et") == "&"
    assert saintgall.piece("Q") == "Q"
    for bad in ("s_pt", "xy", "1", "-"):
        with pytest.raises(CodeError):
            saintgall.piece(bad)


def test_saintgall_reads_decoded_lines_with_page_groups(sg):
    problems = Problems()
    samples = read_dataset(f"saintgall:{sg}", problems)
    expected = {i: text for i, (_, _, text) in SG_LINES.items() if text is not None}
    assert _texts(samples) == expected
    assert {s.line_id: s.group for s in samples} == {
        "csg562-003-01": "csg562-003", "csg562-003-02": "csg562-003", "csg562-004-01": "csg562-004",
        "csg562-005-01": "csg562-005"}
    [(kind, where, message)] = problems.entries
    assert kind == "unknown code" and where == f"{sg / 'ground_truth' / 'transcription.txt'}:4"
    assert "s_pt" in message
    pixels = load_line(samples[1].image)
    assert pixels.shape == (12, 30) and pixels[5, 10] == 20


def test_saintgall_splits_list_pages(sg):
    problems = Problems()
    assert [s.line_id for s in read_dataset(f"saintgall:{sg}?split=train", problems)] == [
        "csg562-003-01", "csg562-003-02"]
    assert [s.line_id for s in read_dataset(f"saintgall:{sg}?split=val", problems)] == ["csg562-004-01"]
    test = read_dataset(f"saintgall:{sg}?split=test", problems)
    assert [s.line_id for s in test] == ["csg562-005-01"]
    unknown = [where for kind, where, _ in problems.entries if kind == "unknown split id"]
    assert unknown == [f"{sg / 'sets' / 'test.txt'}:2"]
    # a list may also name single lines
    (sg / "sets" / "train.txt").write_text("csg562-003-02\n")
    assert [s.line_id for s in read_dataset(f"saintgall:{sg}?split=train", Problems())] == ["csg562-003-02"]


def test_saintgall_missing_image_and_options(sg):
    (sg / "data" / "line_images_normalized" / "csg562-005-01.png").unlink()
    problems = Problems()
    assert read_dataset(f"saintgall:{sg}?split=test", problems) == []
    assert ("missing image", f"{sg / 'ground_truth' / 'transcription.txt'}:5") in [
        (k, w) for k, w, _ in problems.entries]
    with pytest.raises(DataError, match="unknown option.*fold"):
        read_dataset(f"saintgall:{sg}?split=test&fold=cv1")


def test_saintgall_detection(sg):
    assert saintgall.detect(sg) and saintgall.detect(sg.parent)
    assert not washington.detect(sg)
    assert detect_format(sg) == "saintgall"
    assert detect_format(sg / "ground_truth" / "transcription.txt") == "saintgall"
    samples = read_dataset(str(sg) + "?split=train&name=csg", Problems())
    assert [s.dataset for s in samples] == ["csg", "csg"]
