"""`htrjand pipeline`: stages from one config, each starting from the previous stage's best
checkpoint, synthetic lines rendered and mixed in, a Student distilled per stage, resumable, and
clear errors before any training."""
from __future__ import annotations

import json

import pytest
import yaml

from htrjand.checkpoint import read_checkpoint
from htrjand.cli import main
from htrjand.config import ConfigError
from htrjand.pipeline import Pipeline

from conftest import TINY_MODEL

TEXT = """the quick brown fox jumps over the lazy dog
une lettre de Paris, le 3 mars 1850.
My dear Dyer, I have gone into the question.
Nous avons reçu vos plantes hier soir."""


def _config(tmp_path, rendered, **changes) -> dict:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 3, encoding="utf-8")
    config = {
        "output": str(tmp_path / "pipe"),
        "preset": "student",
        "model": dict(TINY_MODEL),
        "data": {"train": [str(rendered["train"])], "val": [str(rendered["val"])], "batch_size": 8,
                 "workers": 0, "augment": 0},
        "train": {"epochs": 2, "lr": 5e-3, "warmup_steps": 2, "progress": False},
        "synth": {"text": [str(corpus)], "seed": 3, "min_chars": 5, "max_chars": 30},
        "student": {"preset": "student", **TINY_MODEL, "d_model": 16},
        "stages": [
            {"name": "synthetic", "synth": {"lines": 24, "val_fraction": 0.25}, "data": {"train": [], "val": []}},
            {"name": "real", "synth": {"lines": 8, "weight": 0.5, "weight_end": 0.1}},
        ],
    }
    config.update(changes)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def test_pipeline_runs_its_stages_in_order_and_resumes(tmp_path, rendered, capsys):
    path = _config(tmp_path, rendered)
    assert main(["pipeline", str(path)]) == 0
    out = tmp_path / "pipe"
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["stages"]] == ["synthetic", "real"]
    assert "| real | student |" in (out / "report.md").read_text()
    # stage 1 trained on synthetic lines only, validated on their val split
    synthetic = read_checkpoint(out / "synthetic" / "teacher" / "best.ckpt")["hyper_parameters"]["htrjand"]["training"]
    assert synthetic["datasets"] == ["synthetic"] and synthetic["val_lines"] == 6
    # stage 2 started from stage 1 and mixed synthetic lines in
    real = read_checkpoint(out / "real" / "teacher" / "best.ckpt")["hyper_parameters"]["htrjand"]
    assert real["init"]["from"] == str(out / "synthetic" / "teacher" / "best.ckpt")
    assert len(real["training"]["datasets"]) == 2 and "synthetic" in real["training"]["datasets"]
    shares = [real["training"][k][next(s for s in real["training"][k] if "synthetic" in s)]
              for k in ("sampling_shares", "sampling_shares_end")]
    assert shares == [pytest.approx(0.5 / 1.5, abs=1e-4), pytest.approx(0.1 / 1.1, abs=1e-4)]  # decaying share
    # the Student of each stage: distilled from that stage's Teacher, started from the previous Student
    student = json.loads((out / "real" / "student" / "summary.json").read_text())
    assert student["distillation"]["teacher"] == str(out / "real" / "teacher" / "best.ckpt")
    assert student["parameters"] < json.loads((out / "real" / "teacher" / "summary.json").read_text())["parameters"]
    # a second run finds every stage finished and changes nothing
    before = (out / "real" / "student" / "best.ckpt").stat().st_mtime_ns
    assert main(["pipeline", str(path)]) == 0
    assert (out / "real" / "student" / "best.ckpt").stat().st_mtime_ns == before
    # an interrupted stage continues from its last checkpoint
    (out / "real" / "student" / "summary.json").unlink()
    assert main(["pipeline", str(path)]) == 0
    resumed = json.loads((out / "real" / "student" / "summary.json").read_text())
    assert resumed["resumed_from"].endswith("last.ckpt")


@pytest.mark.parametrize("change, message", [
    ({"stages": [{"name": "a"}, {"name": "b", "data": {"train": ["nowhere/train.tsv"]}}]}, "nowhere/train.tsv not found"),
    ({"stages": [{"name": "a", "init": "missing.ckpt"}]}, "missing.ckpt not found"),
    ({"stages": [{"name": "a", "synth": {"lines": 5}}], "synth": {}}, "synth needs 'text'"),
    ({"stages": []}, "non-empty list"),
    ({"stages": [{"name": "a"}, {"name": "a"}]}, "unique"),
    ({"stagess": []}, "unknown keys"),
])
def test_bad_pipelines_fail_before_any_training(tmp_path, rendered, capsys, change, message):
    path = _config(tmp_path, rendered, **change)
    with pytest.raises(ConfigError, match=message):
        Pipeline(path)
    assert main(["pipeline", str(path)]) == 2 and message.split()[0] in capsys.readouterr().err
    assert not (tmp_path / "pipe").exists()


def test_training_with_loader_workers_after_rendering_does_not_hang(tmp_path, rendered):
    """Rendering synthetic lines uses OpenCV's thread pool in the main process; loader workers forked
    after it once hung in `cv2.setNumThreads` (a fresh process reproduces it: the pool is warm)."""
    import subprocess
    import sys

    path = _config(tmp_path, rendered, student=None, stages=[
        {"name": "synthetic", "synth": {"lines": 16, "val_fraction": 0.25}, "data": {"train": [], "val": []},
         "train": {"max_steps": 2}}])
    raw = yaml.safe_load(path.read_text())
    raw["data"].update(workers=1, augment=1.0)
    raw.pop("student")
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "htrjand", "pipeline", str(path)], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "pipe" / "synthetic" / "teacher" / "best.ckpt").is_file()
