"""End to end: CLI train/evaluate/recognize/info, exact resume, bad checkpoints, and a learning test."""
import json

import pytest
import torch

from htrjand import load
from htrjand.checkpoint import CheckpointError, atomic_save, read_checkpoint
from htrjand.cli import main
from htrjand.config import ConfigError, duration_seconds, load_config
from htrjand.datasets import read_dataset
from htrjand.metrics import cer
from htrjand.training import train

from conftest import TINY_MODEL


def _config(rendered, output, **train_options):
    return load_config(preset_name="student", overrides={
        "data": {"train": [str(rendered["train"])], "val": [str(rendered["val"])], "batch_size": 8,
                 "workers": 0, "augment": 0.5},
        "train": {"output": str(output), "warmup_steps": 2, "progress": False, **train_options},
        "model": dict(TINY_MODEL)})


def _weights(path):
    return read_checkpoint(path)["state_dict"]


def test_cli_end_to_end(rendered, tmp_path, capsys):
    out = tmp_path / "run"
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"preset: student\nmodel: {json.dumps(TINY_MODEL)}\n"
                        f"data: {{train: [{rendered['train']}], val: [{rendered['val']}], workers: 0}}\n"
                        "train: {epochs: 1, warmup_steps: 2, progress: false}\n")
    assert main(["train", "--config", str(cfg_file), "--output", str(out), "--batch-size", "16"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_lines"] == 64 and summary["steps"] == 4  # 64 lines / batch 16 from the flag
    assert (out / "best.ckpt").is_file() and (out / "last.ckpt").is_file()
    assert (out / "logs" / "version_0" / "metrics.csv").is_file() and any((out / "tensorboard").iterdir())

    report = tmp_path / "report.json"
    assert main(["evaluate", str(out / "best.ckpt"), str(rendered["test"]), "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["datasets"][rendered["test"].parent.name]["lines"] == 16 and len(data["lines"]) == 16
    assert "CER %" in capsys.readouterr().out

    image = read_dataset(rendered["test"])[0].image
    assert main(["recognize", str(out / "best.ckpt"), str(image), "--json", str(tmp_path / "r.json")]) == 0
    path, _, conf = capsys.readouterr().out.strip().split("\t")
    assert path == str(image) and 0.0 <= float(conf) <= 1.0
    assert main(["info", str(out / "best.ckpt")]) == 0
    info = capsys.readouterr().out
    assert "parameters" in info and "charset" in info and "64 lines" in info


def test_train_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--lr", "--batch-size", "--devices", "--strategy", "--precision", "--resume", "--schedule",
                 "--grad-clip", "--patience", "--d-model", "--attention", "--augment", "--max-batch-pixels"):
        assert flag in text


def test_bad_config_and_data_give_clear_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: fast}\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "train.lr" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown option 'lrr'"):
        load_config(overrides={"train": {"lrr": 1}})
    assert main(["train", "--train", str(tmp_path / "none.tsv"), "--val", str(tmp_path / "none.tsv")]) == 2
    assert "none.tsv: no such manifest" in capsys.readouterr().err
    assert main(["train", "--train", str(tmp_path / "none.tsv"), "--val", str(tmp_path / "none.tsv"),
                 "--stretch", "-0.5"]) == 2
    assert "data.stretch must be 0 (off) or positive, got -0.5" in capsys.readouterr().err


def test_resume_continues_exactly(rendered, tmp_path):
    # uninterrupted: 12 steps (1.5 epochs); interrupted: stop after 6 steps (mid-epoch), then resume to 12.
    # A constant schedule after warm-up, so that the shorter first run has the same learning rates.
    # (A stop exactly at an epoch's end, and kills: tests/test_kill_resume.py.)
    opts = {"epochs": 2, "checkpoint_every": 3, "schedule": "constant"}
    full = train(_config(rendered, tmp_path / "full", max_steps=12, **opts))
    part = train(_config(rendered, tmp_path / "part", max_steps=6, **opts))
    assert part["steps"] == 6
    resumed = train(_config(rendered, tmp_path / "part", max_steps=12, resume="auto", **opts))
    assert full["steps"] == resumed["steps"] == 12
    a, b = _weights(tmp_path / "full" / "last.ckpt"), _weights(tmp_path / "part" / "last.ckpt")
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-5), name


def test_every_epoch_gets_its_own_batches_and_augmentation(rendered):
    """Lightning sets the epoch on `loader.batch_sampler.sampler`: the batch order and the epoch tag
    (which seeds augmentation) must follow it."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from htrjand.charset import Charset
    from htrjand.datasets import Problems
    from htrjand.training.data import LineDataModule, prepare_samples

    samples = read_dataset(rendered["train"])
    charset = Charset.from_texts(s.text for s in samples)
    prepared = prepare_samples(samples, charset, 64, 8, 4096, Problems())
    loader = LineDataModule(prepared, prepared, charset, 64, 8, 8, 0, 0, 1.0, 4096, 0).train_dataloader()
    epochs = []
    for epoch in (0, 1):
        _set_sampler_epoch(loader, epoch)
        epochs.append(list(loader.batch_sampler))
    assert {e for batch in epochs[1] for _, e in batch} == {1}
    assert [[i for i, _ in b] for b in epochs[0]] != [[i for i, _ in b] for b in epochs[1]]


def test_bad_checkpoints_are_refused(rendered, tmp_path, capsys):
    out = tmp_path / "run"
    train(_config(rendered, out, epochs=1, max_steps=2))
    good = out / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated.ckpt: not a readable checkpoint"):
        load(truncated)
    ckpt = torch.load(good, weights_only=True)
    ckpt["hyper_parameters"]["htrjand"]["format_version"] = 99
    atomic_save(ckpt, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load(tmp_path / "future.ckpt")
    ckpt = torch.load(good, weights_only=True)
    ckpt["hyper_parameters"]["charset"] = ckpt["hyper_parameters"]["charset"][:-1]
    ckpt["hyper_parameters"]["htrjand"]["charset"] = ckpt["hyper_parameters"]["charset"]
    atomic_save(ckpt, tmp_path / "charset.ckpt")
    with pytest.raises(CheckpointError, match="does not match the stored charset"):
        load(tmp_path / "charset.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    assert main(["info", str(tmp_path / "foreign.ckpt")]) == 2
    assert "not an htrjand checkpoint" in capsys.readouterr().err
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_recognize_api_accepts_paths_pil_and_arrays(rendered, tmp_path):
    from PIL import Image
    import numpy as np

    out = tmp_path / "run"
    train(_config(rendered, out, epochs=1, max_steps=2))
    model = load(out / "last.ckpt")
    path = read_dataset(rendered["test"])[0].image
    pil = Image.open(path)
    results = model.recognize([path, pil, np.asarray(pil), tmp_path / "missing.png"])
    assert len(results) == 4
    assert results[0].text == results[1].text == results[2].text
    assert results[3].error and "missing.png" in results[3].error and results[3].text == ""
    assert model.recognize(path)[0].text == results[0].text
    paths = [s.image for s in read_dataset(rendered["test"])][:7]
    whole = [r.text for r in model.recognize(paths, batch_size=2)]
    assert [r.text for r in model.recognize(paths, batch_size=2, chunk=3)] == whole  # order kept across chunks
    assert [r.source for r in model.recognize(paths, chunk=3)] == [str(p) for p in paths]


def test_small_model_overfits_32_real_lines(shared_data, tmp_path):
    torch.set_num_threads(2)  # a larger model than the other tests: both cores pay off here
    manifest = tmp_path / "h32.tsv"
    lines = (shared_data / "hooker" / "train.tsv").read_text(encoding="utf-8").splitlines()[:32]
    manifest.write_text("\n".join(f"{shared_data / 'hooker'}/{line}" for line in lines) + "\n", encoding="utf-8")
    cfg = load_config(preset_name="student", overrides={
        "data": {"train": [str(manifest)], "val": [str(manifest)], "workers": 0, "augment": 0, "batch_size": 32},
        "train": {"output": str(tmp_path / "run"), "epochs": 400, "warmup_steps": 20, "lr": 3e-3,
                  "schedule": "constant", "progress": False, "val_every": 10, "stop_cer": 0.01},
        # three light blocks, as the bundled Student: the same 120 steps to 0.2% CER in 139 s instead of 310 s
        "model": {"channels": [16, 24, 32, 48, 48, 64], "d_model": 96, "heads": 2, "dropout": 0.0,
                  "cnn_dropout": 0.0, "light_blocks": 3}})
    summary = train(cfg)
    samples = read_dataset(manifest)
    results = load(tmp_path / "run" / "best.ckpt").recognize([s.image for s in samples])
    score = cer([s.text for s in samples], [r.text for r in results])
    assert score < 0.05, score
    assert summary["best_val_cer"] < 0.05
    assert summary["steps"] < 400  # stopped early on reaching the target CER
    torch.set_num_threads(1)


def test_ddp_on_two_cpu_processes(rendered, tmp_path):
    """`--devices 2 --strategy ddp` passes straight to Lightning: two gloo ranks share the batches (and,
    with a time limit, rank 0's clock for the cosine)."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "htrjand", "train", "--preset", "student", "--train", str(rendered["train"]),
           "--val", str(rendered["val"]), "--output", str(out), "--epochs", "1", "--batch-size", "16",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--workers", "0", "--progress", "false",
           "--channels", "[8,12,16,16,16,16]", "--d-model", "32", "--heads", "2", "--max-time", "3600",
           "--warmup-steps", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2  # 64 lines = 4 batches of 16, two per rank
    assert summary["best_val_cer"] is not None and (out / "best.ckpt").is_file()


@pytest.mark.parametrize("cache", ["off", "memory"])
def test_training_survives_an_image_that_breaks_mid_run(rendered, tmp_path, cache):
    """A file whose header reads but whose data is cut off is skipped, counted, and training goes on:
    found while decoding the line cache before training, or mid-run without a cache."""
    samples = read_dataset(rendered["train"])
    broken = tmp_path / "broken.png"
    data = samples[0].image.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    manifest = tmp_path / "train.tsv"
    rows = [f"{s.image}\t{s.text}" for s in samples] + [f"{broken}\t{samples[0].text}"]
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = _config(rendered, tmp_path / "run", epochs=1)
    cfg.data.train = [str(manifest)]
    cfg.data.cache = cache
    summary = train(cfg)
    if cache == "off":
        assert summary["unreadable_training_images"] == 1
        assert summary["steps"] == 9 and (tmp_path / "run" / "best.ckpt").is_file()
    else:
        assert summary["skipped"] == {"unreadable image": 1} and summary["unreadable_training_images"] == 0
        assert summary["steps"] == 8 and (tmp_path / "run" / "best.ckpt").is_file()


def test_throughput_separates_data_waits_from_steps():
    """Steps take 10 ms, fetching each batch 30 ms: the callback reports ~75% data wait and skips
    each epoch's warm-up steps and the gap between epochs."""
    import time

    from htrjand.training.throughput import Throughput

    class Module:
        logged: list = []

        def log_dict(self, values, **kwargs):
            self.logged.append(values)

    speed, module, batch = Throughput(warmup=1), Module(), {"indices": [0, 1, 2, 3]}
    for _ in range(2):
        speed.on_train_epoch_start(None, module)
        for step in range(5):
            speed.on_train_batch_start(None, module, batch, step)
            time.sleep(0.01)
            speed.on_train_batch_end(None, module, None, batch, step)
            time.sleep(0.03)
        speed.on_train_epoch_end(None, module)
        time.sleep(0.1)  # validation: not a data wait
    summary = speed.summary()
    assert summary["timed_steps"] == 8  # 5 steps per epoch, the first (warm-up) not timed
    assert 0.6 < summary["data_wait"] < 0.85, summary
    assert 80 < summary["lines_per_second"] < 110, summary  # 4 lines per ~40 ms
    assert len(module.logged) == 2 and 0.6 < module.logged[0]["data_wait"] < 0.85


def test_curriculum_training_keeps_the_epoch_length(rendered, tmp_path):
    plain = train(_config(rendered, tmp_path / "plain", epochs=2))
    curriculum = _config(rendered, tmp_path / "cur", epochs=2)
    curriculum.data.curriculum_epochs = 2
    summary = train(curriculum)
    assert summary["steps"] == plain["steps"] and summary["best_val_cer"] is not None
    assert read_checkpoint(tmp_path / "cur" / "last.ckpt")["hyper_parameters"]["data"]["curriculum_epochs"] == 2


def _logged(output, column):
    import csv

    with open(output / "logs" / "version_0" / "metrics.csv", encoding="utf-8") as f:
        return [float(row[column]) for row in csv.DictReader(f) if row.get(column)]


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no native bfloat16")
def test_bf16_mixed_precision_learns_on_cpu_like_full_precision(rendered, tmp_path):
    """`--precision bf16-mixed` on a CPU with native bfloat16 (docs/decisions.md: 1.4x faster training):
    from the same seed its validation loss follows float32's, and the checkpoint holds float32 weights."""
    runs = {}
    for precision in ("32", "bf16-mixed"):
        summary = train(_config(rendered, tmp_path / precision, epochs=8, lr=1e-2, precision=precision))
        assert summary["bad_steps"] == 0
        runs[precision] = _logged(tmp_path / precision, "val_loss")
    full, half = runs["32"], runs["bf16-mixed"]
    assert len(full) == len(half) == 8 and half[-1] < 0.95 * half[0], half  # validation loss falls ...
    assert all(abs(h - f) < 0.03 * f for f, h in zip(full, half)), (full, half)  # ... epoch by epoch as in float32
    assert all(w.dtype == torch.float32 for w in _weights(tmp_path / "bf16-mixed" / "best.ckpt").values()
               if w.is_floating_point())


def test_cpu_bf16_support_is_read_from_cpuinfo_and_emulated_bf16_is_warned_about(tmp_path, monkeypatch, caplog):
    """bf16 on a CPU without native bfloat16 is emulated and trains slower than float32 (docs/decisions.md):
    asking for it there warns; a CPU with AVX512-BF16 (or Arm BF16) and GPUs do not."""
    from htrjand import config

    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\nflags\t\t: fpu avx512f\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert config.cpu_has_native_bf16(x86) is False
    assert config.cpu_has_native_bf16(arm) is True
    assert config.cpu_has_native_bf16(tmp_path / "missing") is None
    x86.write_text(x86.read_text().replace("avx512bw", "avx512bw avx512_bf16"))
    assert config.cpu_has_native_bf16(x86) is True

    for native, warned in ((False, True), (True, False), (None, False)):
        monkeypatch.setattr(config, "cpu_has_native_bf16", lambda native=native: native)
        caplog.clear()
        with caplog.at_level("WARNING", logger="htrjand"):
            assert config.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
            assert config.resolve_precision("32", "cpu") == "32"
            assert config.resolve_precision("bf16-mixed", "gpu") == "bf16-mixed"  # a GPU's own bf16
        assert any("without native bfloat16" in r.getMessage() for r in caplog.records) is warned, native


def test_time_limits_in_every_usual_form_and_a_clear_error_otherwise(rendered, tmp_path, capsys):
    assert [duration_seconds(v) for v in ("", "90", "90m", "2h", "1d", "01:30:00", "00:01:38:00", "1.5h")] == \
        [None, 90, 5400, 7200, 86400, 5400, 5880, 5400]
    for bad in ("1h30", "0", "-5", "soon", "1:2", "nan"):
        with pytest.raises(ConfigError, match="is not a time limit"):
            duration_seconds(bad)
    # a bad limit is refused with the option named before any training starts (it was a Lightning traceback)
    assert main(["train", "--preset", "student", "--train", str(rendered["train"]), "--val", str(rendered["val"]),
                 "--output", str(tmp_path / "run"), "--max-time", "1h30", "--progress", "false"]) == 2
    assert "train.max_time: '1h30' is not a time limit" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_time_limit_ends_the_cosine_and_keeps_the_stopping_step(rendered, tmp_path):
    """`train.max_time` stops a run long before its steps run out: the cosine follows the time spent (the
    LR ends at its floor, not near its peak) and last.ckpt holds the step where it stopped, to resume from."""
    summary = train(_config(rendered, tmp_path / "run", epochs=1000, max_steps=100_000, lr=1e-2, max_time="4",
                            checkpoint_every=100_000))
    checkpoint = read_checkpoint(tmp_path / "run" / "last.ckpt")
    assert 2 < checkpoint["global_step"] == summary["steps"] < 100_000
    (scheduler,) = checkpoint["lr_schedulers"]
    assert scheduler["_last_lr"][0] < 0.05 * 1e-2, scheduler["_last_lr"]
