"""`htrjand dataset stats|validate|extract` and `htrjand charset`."""
import json

import numpy as np
from PIL import Image

from htrjand.cli import main
from htrjand.datasets import Problems, read_dataset


def _line(path, width, height=32):
    arr = np.full((height, width), 255, np.uint8)
    arr[10:20, 4: width - 4] = 0
    Image.fromarray(arr).save(path)


def _messy(tmp_path):
    _line(tmp_path / "ok.png", 200)
    _line(tmp_path / "tight.png", 40)  # 80 px at height 64: 10 frames at stride 8
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "m.tsv").write_text("ok.png\t“quoted” text\ntight.png\tfar too long a label\nbroken.png\tabc\n"
                                    "no-tab line\nok.png\tœuvre\n", encoding="utf-8")
    return tmp_path / "m.tsv"


def test_stats_counts_lines_sizes_and_infeasible_labels(tmp_path, capsys):
    manifest = _messy(tmp_path)
    assert main(["dataset", "stats", str(manifest), "--json", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())[str(manifest)]
    assert s["lines"] == 4 and s["unreadable_headers"] == 1 and s["ctc_infeasible"] == 1
    assert s["width_at_height_64"]["max"] == 400 and s["original_height"]["median"] == 32
    assert "CTC-infeasible labels: 1" in capsys.readouterr().out


def test_validate_lists_every_problem_with_file_and_line(tmp_path, capsys):
    manifest = _messy(tmp_path)
    assert main(["dataset", "validate", str(manifest), "--json", str(tmp_path / "v.json")]) == 1
    report = json.loads((tmp_path / "v.json").read_text())
    where = {p["kind"]: p["where"] for p in report["problems"]}
    assert where == {"malformed line": f"{manifest}:4", "label too long": f"{manifest}:2",
                     "unreadable image": f"{manifest}:3"}
    assert "4 lines checked: 3 problems" in capsys.readouterr().out
    _line(tmp_path / "fine.png", 300)
    (tmp_path / "clean.tsv").write_text("fine.png\tabc\n", encoding="utf-8")
    assert main(["dataset", "validate", str(tmp_path / "clean.tsv")]) == 0


def test_charset_report_counts_per_dataset_and_mapping(tmp_path, capsys):
    manifest = _messy(tmp_path)
    (tmp_path / "b").mkdir()
    _line(tmp_path / "b" / "x.png", 100)
    (tmp_path / "b" / "x.gt.txt").write_text("tt’", encoding="utf-8")
    assert main(["charset", f"{manifest}?name=first", str(tmp_path / "b"), "--json", str(tmp_path / "c.json")]) == 0
    report = json.loads((tmp_path / "c.json").read_text())
    rows = {r["char"]: r for r in report["characters"]}
    assert report["datasets"] == ["b", "first"]
    assert rows["t"]["count:first"] == 4 and rows["t"]["count:b"] == 2 and rows["'"]["total"] == 1
    assert "“" not in rows and {"from": "“", "to": '"', "count": 1} in report["mapping_changes"]
    out = capsys.readouterr().out
    assert "'’' -> \"'\"  x1" in out and "LATIN SMALL LIGATURE OE" in out


def test_extract_real_alto_pages_to_a_manifest(shared_data, tmp_path):
    pages = shared_data / "pages" / "alto" / "copiste_wikitexte_0003_1.xml"
    original = read_dataset(pages)
    assert main(["dataset", "extract", str(pages), "--out", str(tmp_path / "out"), "--height", "64"]) == 0
    extracted = read_dataset(tmp_path / "out" / "lines.tsv", Problems())
    assert [s.text for s in extracted] == [s.text for s in original] and len(extracted) > 10
    first = np.asarray(Image.open(extracted[1].image))
    assert first.shape[0] == 64 and first.shape[1] > 300
    assert first[:, :3].min() == 255 or first.mean() > 200  # margins are paper, the line is mostly paper


def _untrained_checkpoint(path):
    """A valid checkpoint of an untrained tiny model (recognition output is arbitrary but well-formed)."""
    from htrjand.checkpoint import atomic_save, model_checkpoint
    from htrjand.model import HTRNet, ModelConfig

    from conftest import TINY_MODEL

    chars = list("abcdefghij ")
    atomic_save(model_checkpoint(HTRNet(ModelConfig.from_dict(TINY_MODEL), len(chars) + 1), chars), path)
    return path


def test_recognize_reads_every_page_line_in_reading_order(shared_data, tmp_path, capsys):
    page = shared_data / "pages" / "page" / "hooker_JDH_2_16_151_001.xml"
    ckpt = _untrained_checkpoint(tmp_path / "m.ckpt")
    transcribed = read_dataset(page)
    assert main(["recognize", str(ckpt), str(page), "--json", str(tmp_path / "r.json")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert len(results) == len(transcribed) + 6  # the 6 lines without transcription are read too
    lines = [int(r["image"].rsplit(":", 1)[1]) for r in results]
    assert lines == sorted(lines) and all(r["image"].startswith(str(page)) for r in results)
