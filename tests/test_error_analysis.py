"""benchmarks/error_analysis.py: errors by kind and by frames per character from an evaluate report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "error_analysis.py"


def test_error_analysis_splits_errors_by_kind_density_and_lost_lines(tmp_path):
    lines = []
    for i, (width, reference, hypothesis) in enumerate([
            (320, "abcdefghij", "abcdefhij"),      # 4 frames per char, one deletion
            (640, "abcdefghij", "abcdefghij"),     # 8 frames per char, correct
            (160, "abcdefghij", "abxdefghijk"),    # 2 frames per char, a substitution and an insertion
            (1280, "abcdefghij", "ab")]):          # 16 frames per char, lost: 8 deletions
        path = tmp_path / f"line{i}.png"
        Image.new("L", (width, 64), 255).save(path)
        lines.append({"image": str(path), "dataset": "d", "reference": reference, "hypothesis": hypothesis,
                      "group": f"page{i // 2}"})
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"lines": lines, "model": {}}))
    done = subprocess.run([sys.executable, str(SCRIPT), str(report), "--out", str(tmp_path), "--name", "ea"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    d = json.loads((tmp_path / "ea.json").read_text())["datasets"]["d"]
    assert d["all"] == {"lines": 4, "chars": 40, "sub %": 2.5, "del %": 22.5, "ins %": 2.5, "CER %": 27.5}
    assert [q["lines"] for q in d["quartiles"]] == [1, 1, 1, 1]
    assert [q["CER %"] for q in d["quartiles"]] == [20.0, 10.0, 0.0, 80.0]  # sparsest frames first
    assert d["lost_lines"] == 1 and d["lost_share_of_errors %"] == round(100 * 8 / 11, 1)
    assert d["CER % without lost lines"] == 10.0
    assert "| d | all | 4 | 27.5 |" in (tmp_path / "ea.md").read_text()
    assert d["worst_pages"] == [  # the page holding the lost line first: 10 of the 11 errors
        {"page": "page1", "lines": 2, "CER %": 50.0, "lost lines": 1, "share of errors %": 90.9},
        {"page": "page0", "lines": 2, "CER %": 5.0, "lost lines": 0, "share of errors %": 9.1}]
    assert "| d | page1 | 2 | 50.0 | 1 | 90.9 |" in (tmp_path / "ea.md").read_text()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for line in lines:
        line["image"] = Path(line["image"]).name  # relative to tmp_path, where evaluate would have run
    report.write_text(json.dumps({"lines": lines, "model": {}}))
    done = subprocess.run([sys.executable, str(SCRIPT), str(report), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=elsewhere)
    assert done.returncode == 2 and "none of its 4 lines has an image file" in done.stderr
    done = subprocess.run([sys.executable, str(SCRIPT), str(report), "--out", str(tmp_path), "--name", "rel",
                           "--root", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=elsewhere)
    assert done.returncode == 0 and json.loads((tmp_path / "rel.json").read_text())["datasets"]["d"]["all"]["lines"] == 4

    report.write_text("{}")
    done = subprocess.run([sys.executable, str(SCRIPT), str(report), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "report.json: not an `htrjand evaluate --json` report" in done.stderr
