"""Training survives kills and numerical faults (docs/reliability.md, "Kill and resume", "Numerical faults").

HTRJAND_KILLS=N (default 3) sets how many times the kill test SIGKILLs the training process.
"""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from htrjand.checkpoint import (CheckpointError, atomic_save, check_digest, digest_path, previous_path,
                                read_checkpoint, slim_checkpoint, update_metadata)
from htrjand.cli import main
from htrjand.config import load_config
from htrjand.training import train

from conftest import TINY_MODEL

KILLS = int(os.environ.get("HTRJAND_KILLS", "3"))
EPOCHS = 3 + KILLS // 2  # 8 steps an epoch: room for KILLS kills of at most 4 steps' progress each
TOLERANCE = 1e-5


def _config(rendered, output, **train_options):
    return load_config(preset_name="student", overrides={
        "data": {"train": [str(rendered["train"])], "val": [str(rendered["val"])], "batch_size": 8,
                 "workers": 0, "augment": 0.5},
        "train": {"output": str(output), "warmup_steps": 2, "progress": False, "checkpoint_every": 1,
                  **train_options},
        "model": dict(TINY_MODEL)})


def _command(rendered, output):
    """`htrjand train` with the same settings as `_config(rendered, output, epochs=EPOCHS)`."""
    return [sys.executable, "-m", "htrjand", "train", "--preset", "student", "--train", str(rendered["train"]),
            "--val", str(rendered["val"]), "--output", str(output), "--epochs", str(EPOCHS), "--batch-size", "8",
            "--workers", "0", "--augment", "0.5", "--warmup-steps", "2", "--progress", "false",
            "--checkpoint-every", "1", "--resume", "auto", "--channels", json.dumps(TINY_MODEL["channels"]),
            "--d-model", "32", "--heads", "2", "--blocks", "1", "--dropout", "0", "--cnn-dropout", "0"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def _largest_difference(a: Path, b: Path) -> float:
    wa, wb = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(rendered, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    summary = train(_config(rendered, out, epochs=EPOCHS))
    return out / "last.ckpt", summary


# ---- exact resume at an epoch's end -----------------------------------------------------------
@pytest.mark.parametrize("limit", ["max_steps", "max_epochs"])
def test_resume_from_an_epoch_end_is_exact(rendered, tmp_path, limit):
    """Stop exactly at the end of epoch 0 (max_steps = 8 = one epoch, or epochs = 1), resume, and
    end where an uninterrupted run ends. The plateau schedule (patience 0) also checks that the
    resumed run steps the schedule as the uninterrupted one did."""
    opts = {"schedule": "plateau", "plateau_patience": 0, "checkpoint_every": 3}
    first, second = ({"max_steps": 8, "epochs": 3}, {"max_steps": 16, "epochs": 3}) if limit == "max_steps" \
        else ({"epochs": 1}, {"epochs": 2})
    full = train(_config(rendered, tmp_path / "full", **second, **opts))
    part = train(_config(rendered, tmp_path / "part", **first, **opts))
    assert part["steps"] == 8
    resumed = train(_config(rendered, tmp_path / "part", resume="auto", **second, **opts))
    assert resumed["steps"] == full["steps"] == 16 and resumed["epochs"] == full["epochs"] == 2
    a, b = read_checkpoint(tmp_path / "full" / "last.ckpt"), read_checkpoint(tmp_path / "part" / "last.ckpt")
    assert _largest_difference(tmp_path / "full" / "last.ckpt", tmp_path / "part" / "last.ckpt") <= TOLERANCE
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert a["loops"]["fit_loop"]["epoch_progress"] == b["loops"]["fit_loop"]["epoch_progress"]


# ---- SIGKILL at random moments ------------------------------------------------------------------
def _digest_id(path: Path):
    try:
        st = digest_path(path).stat()
        return st.st_ino, st.st_mtime_ns
    except FileNotFoundError:
        return None


def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(rendered, tmp_path, uninterrupted):
    """`htrjand train --resume auto` SIGKILLed KILLS times (each time after a seeded random number of
    new checkpoints and a random delay, so kills land in steps, validation and checkpoint writes),
    then run to the end: the weights are those of a run never interrupted."""
    reference, full = uninterrupted
    out = tmp_path / "killed"
    rng = random.Random(20240509)
    last = out / "last.ckpt"
    kills, landed = 0, []  # last checkpoint's step at each kill, and whether a write was cut
    while kills < KILLS:
        proc = subprocess.Popen(_command(rendered, out), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        wanted, seen, before = rng.randint(1, 4), 0, _digest_id(last)
        while proc.poll() is None and seen < wanted:
            now = _digest_id(last)
            if now != before:
                seen, before = seen + 1, now
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is not None:  # finished before the kill: the run is too short for KILLS kills
            pytest.fail(f"training ended before kill {kills + 1}: {proc.stderr.read()[-2000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        kills += 1
        landed.append(f"step {read_checkpoint(last)['global_step']}" + (" (mid-write)" if list(out.glob(".*.tmp")) else ""))
    done = subprocess.run(_command(rendered, out), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == full["steps"] == 8 * EPOCHS
    difference = _largest_difference(reference, last)
    print(f"\n{kills} SIGKILLs survived (after {', '.join(landed)}); largest weight difference from the "
          f"uninterrupted run: {difference:.3g}")
    assert difference <= TOLERANCE
    assert not list(out.glob(".*.tmp"))  # half-written files of killed runs are cleaned up


# ---- SIGTERM / Ctrl-C: stop after the step, saved ---------------------------------------------------
def _stop(rendered, out, signum, workers: str) -> tuple[subprocess.CompletedProcess, int]:
    """Start `htrjand train` (no step checkpoints) in its own session, send `signum` to the whole
    session (as a terminal's Ctrl-C or a scheduler does) once epoch 0's checkpoint is written, and
    return the finished process with the step of that epoch-end checkpoint."""
    command = _command(rendered, out)
    command[command.index("--checkpoint-every") + 1] = "1000"
    command[command.index("--workers") + 1] = workers
    last = out / "last.ckpt"
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while _digest_id(last) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"training ended before the signal: {proc.stderr.read()[-2000:]}"
    saved = read_checkpoint(last)["global_step"]
    os.killpg(proc.pid, signum)
    _, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(command, proc.returncode, "", stderr), saved


def test_ctrl_c_stops_after_the_step_with_it_saved_and_the_resumed_run_matches_uninterrupted(
        rendered, tmp_path, uninterrupted):
    """A Ctrl-C part-way through epoch 1 of a run that writes no step checkpoints: the run finishes its
    step, saves it and exits with 130 and a message naming the step (no traceback), so nothing after
    epoch 0's checkpoint is lost; `--resume auto` then ends with the uninterrupted run's weights."""
    reference, full = uninterrupted
    out = tmp_path / "stopped"
    stopped, epoch_end = _stop(rendered, out, signal.SIGINT, workers="0")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    step = read_checkpoint(out / "last.ckpt")["global_step"]
    assert f"stopped by SIGINT at step {step}: {out / 'last.ckpt'}" in stopped.stderr
    assert epoch_end == 8 < step < full["steps"]
    assert not (out / "summary.json").exists()  # a stopped run is not a finished one
    done = subprocess.run(_command(rendered, out), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == full["steps"]
    assert _largest_difference(reference, out / "last.ckpt") <= TOLERANCE


def test_sigterm_to_the_whole_job_with_loader_workers_stops_cleanly(rendered, tmp_path):
    """SIGTERM to every process of the job (Slurm's preemption and scancel, `kill -- -PGID`) with a
    loader worker: the worker does not die mid-batch (before, the main process then failed with
    "DataLoader worker ... is killed by signal: Terminated" and lost every step since the last save);
    the run saves the step it was in and exits with 143."""
    out = tmp_path / "stopped"
    stopped, epoch_end = _stop(rendered, out, signal.SIGTERM, workers="1")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr and "DataLoader worker" not in stopped.stderr
    step = read_checkpoint(out / "last.ckpt")["global_step"]
    assert f"stopped by SIGTERM at step {step}" in stopped.stderr and step > epoch_end


_KILL_IN_WRITE = """
import os, signal, sys
from pathlib import Path
import htrjand.checkpoint as ck
real, calls = ck._write_temporary, []
def slow_write(path, data):
    if path.name == "last.ckpt":
        calls.append(path)
        if len(calls) == 3:  # the third last.ckpt: write half of it, then die
            half = path.parent / f".{path.name}.killed.tmp"
            with open(half, "wb") as f:
                f.write(bytes(data[: len(data) // 2]))
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path, data)
ck._write_temporary = slow_write
from htrjand.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_in_the_middle_of_a_checkpoint_write(rendered, tmp_path, uninterrupted):
    """SIGKILL while last.ckpt is half written: the previous checkpoint is intact and verifies, the
    temporary file is ignored, then removed when the run resumes, and the run ends as if never killed."""
    reference, _ = uninterrupted
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", _KILL_IN_WRITE, *_command(rendered, out)[3:]], env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / ".last.ckpt.killed.tmp").is_file()
    assert check_digest(out / "last.ckpt") is True and check_digest(out / "last.prev.ckpt") is True
    assert read_checkpoint(out / "last.ckpt")["global_step"] == 2  # steps 1 and 2 saved, the third was cut
    assert read_checkpoint(out / "last.prev.ckpt")["global_step"] == 1
    train(_config(rendered, out, epochs=EPOCHS, resume="auto"))
    assert not list(out.glob(".*.tmp"))
    assert _largest_difference(reference, out / "last.ckpt") <= TOLERANCE


# ---- crash windows of the atomic write, and corrupt checkpoints ---------------------------------
def _tiny_checkpoint(version: int) -> dict:
    from htrjand.checkpoint import model_checkpoint
    from htrjand.model import HTRNet, ModelConfig

    chars = list("ab ")
    model = HTRNet(ModelConfig.from_dict(TINY_MODEL), len(chars) + 1)
    return {**model_checkpoint(model, chars), "global_step": version}


class _Crash(BaseException):
    pass


@pytest.mark.parametrize("crash_at", range(6))
def test_a_crash_anywhere_in_a_save_leaves_a_good_checkpoint(tmp_path, monkeypatch, crash_at):
    """Crash at each step of saving version 3 of last.ckpt (mid-write, each of the four renames, or
    before the digest): `--resume auto` then finds version 2 or 3, complete and never mismatching."""
    from htrjand import checkpoint
    from htrjand.training.run import open_resume

    last = tmp_path / "last.ckpt"
    atomic_save(_tiny_checkpoint(1), last, digest=True, keep_previous=True)
    atomic_save(_tiny_checkpoint(2), last, digest=True, keep_previous=True)
    steps = []
    real_replace, real_temporary = os.replace, checkpoint._write_temporary

    def step():
        steps.append(1)
        if len(steps) == crash_at + 1:
            raise _Crash()

    def replace(src, dst):
        step()
        real_replace(src, dst)

    def temporary(path, data):
        if path.name == "last.ckpt":
            step()
        return real_temporary(path, data)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    monkeypatch.setattr(checkpoint, "_write_temporary", temporary)
    try:
        atomic_save(_tiny_checkpoint(3), last, digest=True, keep_previous=True)
    except _Crash:
        pass
    monkeypatch.undo()
    assert crash_at < len(steps) or crash_at == 5  # every step was reached (5 = no crash)
    cfg = load_config(overrides={"train": {"output": str(tmp_path), "resume": "auto"}})
    path, ckpt = open_resume(cfg)
    assert ckpt["global_step"] == (3 if crash_at >= 4 else 2)  # version 3 once renamed in place
    for name in (last, previous_path(last)):  # a digest beside a file always describes it
        assert check_digest(name) is not False if name.exists() else True


def test_corrupt_checkpoints_are_detected_and_the_previous_one_is_used(rendered, tmp_path, caplog, capsys):
    out = tmp_path / "run"
    train(_config(rendered, out, epochs=1, max_steps=3))
    last, prev = out / "last.ckpt", out / "last.prev.ckpt"
    assert read_checkpoint(last)["global_step"] == 3 and read_checkpoint(prev)["global_step"] == 2
    assert digest_path(last).read_text().endswith("  last.ckpt\n")  # `sha256sum -c` format
    good = last.read_bytes()

    last.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(CheckpointError, match=r"last\.ckpt: content does not match its sha256 digest .*"
                                              r"previous checkpoint .*last\.prev\.ckpt"):
        read_checkpoint(last)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01  # one bit in the middle of the tensor data
    last.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="does not match its sha256 digest"):
        read_checkpoint(last)
    assert main(["info", str(last)]) == 2
    assert "last.ckpt: content does not match" in capsys.readouterr().err
    assert main(["train", "--preset", "student", "--train", str(rendered["train"]), "--val", str(rendered["val"]),
                 "--output", str(out), "--resume", str(last), "--progress", "false"]) == 2
    assert "last.prev.ckpt" in capsys.readouterr().err  # an explicit --resume is refused, naming the good one

    # --resume auto falls back to last.prev.ckpt with a warning and keeps the bad file aside
    summary = train(_config(rendered, out, epochs=1, max_steps=5, resume="auto"))
    assert "resuming from the previous checkpoint" in caplog.text and "last.prev.ckpt (step 2)" in caplog.text
    assert summary["steps"] == 5 and summary["resumed_from"] == str(prev)
    assert (out / "last.ckpt.corrupt").read_bytes() == bytes(flipped)
    assert check_digest(last) is True and check_digest(prev) is True


def test_digest_follows_metadata_updates_and_slim_copies(tmp_path):
    src = tmp_path / "m.ckpt"
    atomic_save(_tiny_checkpoint(1), src, digest=True)
    backup = update_metadata(src, {"note": "calibrated"})
    assert check_digest(src) is True and check_digest(backup) is True
    assert read_checkpoint(src)["hyper_parameters"]["htrjand"]["note"] == "calibrated"
    slim_checkpoint(src, tmp_path / "slim.ckpt")
    assert check_digest(tmp_path / "slim.ckpt") is True
    atomic_save(_tiny_checkpoint(2), src)  # rewritten without a digest: the old digest must go
    assert check_digest(src) is None and read_checkpoint(src)["global_step"] == 2


# ---- numerical faults ---------------------------------------------------------------------------
def _inject(monkeypatch, bad: dict[int, str]):
    """Make the training step at global step s bad in the way bad[s] says: 'nan-loss', 'inf-loss',
    'nan-image' (every pixel NaN: also poisons the BatchNorm statistics) or 'inf-grad'."""
    from htrjand.training.module import HTRModule

    step = HTRModule.training_step

    def training_step(self, batch, batch_idx):
        kind = bad.get(self.global_step)
        if kind == "nan-image":
            batch = {**batch, "images": torch.full_like(batch["images"], float("nan"))}
        loss = step(self, batch, batch_idx)
        return {"nan-loss": loss * float("nan"), "inf-loss": loss + float("inf")}.get(kind, loss)

    def on_after_backward(self):
        if bad.get(self.global_step) == "inf-grad":
            next(self.parameters()).grad.view(-1)[0] = float("inf")

    monkeypatch.setattr(HTRModule, "training_step", training_step)
    monkeypatch.setattr(HTRModule, "on_after_backward", on_after_backward)


def test_nan_and_inf_steps_are_skipped_and_counted(rendered, tmp_path, monkeypatch, caplog):
    bad = {2: "nan-loss", 5: "inf-loss", 9: "nan-image", 10: "nan-image", 13: "inf-grad"}
    _inject(monkeypatch, bad)
    out = tmp_path / "run"
    summary = train(_config(rendered, out, epochs=2))
    assert summary["steps"] == 16 and summary["bad_steps"] == len(bad)
    ckpt = read_checkpoint(out / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert ckpt["callbacks"]["NumericalGuard"]["bad_steps"] == len(bad)
    assert caplog.text.count("optimiser step skipped") == len(bad)
    assert "step 9: non-finite loss" in caplog.text and "step 13: non-finite gradient" in caplog.text
    metrics = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    assert "bad_steps" in metrics[0].split(",")
    assert summary["best_val_cer"] is not None and math.isfinite(summary["best_val_cer"])


def test_repeated_nan_steps_stop_with_the_batch_files(rendered, tmp_path, monkeypatch, capsys):
    _inject(monkeypatch, {s: "nan-loss" for s in range(3, 100)})
    out = tmp_path / "run"
    code = main(["train", "--preset", "student", "--train", str(rendered["train"]), "--val", str(rendered["val"]),
                 "--output", str(out), "--epochs", "3", "--batch-size", "8", "--workers", "0", "--progress", "false",
                 "--warmup-steps", "2", "--max-bad-steps", "4", "--checkpoint-every", "2", "--channels", json.dumps(TINY_MODEL["channels"]),
                 "--d-model", "32", "--heads", "2", "--blocks", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "4 consecutive steps had a non-finite (NaN/inf) loss or gradient" in err
    assert "(step 6)" in err and str(Path(rendered["train"]).parent) in err and ".png" in err
    assert read_checkpoint(out / "last.ckpt")["global_step"] == 6  # written during the faults: weights kept finite
    assert all(torch.isfinite(v).all() for v in read_checkpoint(out / "last.ckpt")["state_dict"].values()
               if v.is_floating_point())
