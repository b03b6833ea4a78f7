"""benchmarks/compare.py: checkpoints side by side on the same lines (the bundling decision's table)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from htrjand.runtime import DEFAULT_MODEL

from conftest import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "compare.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_compare_reads_the_same_lines_with_each_model(tmp_path):
    card = json.loads((DEFAULT_MODEL.parent / "student.json").read_text(encoding="utf-8"))
    done = _run(f"a={DEFAULT_MODEL}", f"b={DEFAULT_MODEL}", "--test", str(EXAMPLES), "--threads", "1",
                "--repeats", "1", "--out", str(tmp_path), "--name", "same")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "same.json").read_text())
    assert list(report["models"]) == ["a", "b"] and report["test_lines"] == card["examples"]["lines"]
    for model in report["models"].values():  # the card's figure for these lines, reproduced
        assert abs(model["overall"]["cer"] - card["examples"]["cer"]) < 1e-4
        assert model["parameters"] == card["parameters"] and model["lines_per_second"] > 0
    md = (tmp_path / "same.md").read_text()
    assert f"| a | {card['parameters']:,} |" in md and "speed vs a" in md


def test_compare_names_a_missing_checkpoint(tmp_path):
    done = _run(f"x={tmp_path / 'nope.ckpt'}", "--test", str(EXAMPLES), "--out", str(tmp_path))
    assert done.returncode == 2 and "nope.ckpt" in done.stderr and "Traceback" not in done.stderr
    done = _run(str(DEFAULT_MODEL), "--test", str(EXAMPLES), "--out", str(tmp_path))
    assert done.returncode == 2 and "NAME=CKPT" in done.stderr
    done = _run(f"a={DEFAULT_MODEL}", f"a={DEFAULT_MODEL}", "--test", str(EXAMPLES), "--out", str(tmp_path))
    assert done.returncode == 2 and "its own NAME" in done.stderr
