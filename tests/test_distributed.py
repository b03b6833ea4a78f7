"""DDP on two CPU processes (gloo): disjoint data per rank, validation reduced over ranks, rank-zero-only
writes, and 2 ranks x batch 8 training as 1 process x batch 16 does."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from htrjand.checkpoint import read_checkpoint
from htrjand.training.sampler import WidthBucketSampler

from conftest import TINY_MODEL

# Runs the `htrjand` CLI and records, per process (Lightning re-runs this script for rank 1), the
# line indices of every training and validation batch and every file that the process creates,
# changes or removes under $PROBE_WATCH (Python audit hooks see every open-for-writing, rename,
# mkdir, remove, mkstemp). Written to $PROBE_LOG/PID.json at exit. Test-only: no production hook.
PROBE = r'''
import atexit, json, os, sys

LOG, WATCH = os.environ["PROBE_LOG"], os.path.realpath(os.environ["PROBE_WATCH"])
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
EVENTS = ("open", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate", "tempfile.mkstemp",
          "os.link", "os.symlink", "shutil.rmtree", "shutil.copyfile")
record = {"pid": os.getpid(), "rank": None, "sync": None, "writes": [], "batches": []}
busy = []


def watched(path):
    if path is None or isinstance(path, int):
        return None
    full = os.path.realpath(os.fsdecode(path))
    return full if full == WATCH or full.startswith(WATCH + os.sep) else None


def hook(event, args):
    if busy or event not in EVENTS:
        return
    busy.append(1)
    try:
        if event == "open" and not (args[2] & WRITE):
            return
        if event == "os.mkdir" and os.path.isdir(os.fsdecode(args[0])):
            return  # mkdir(exist_ok=True) of a folder that is already there creates nothing
        two = event in ("os.rename", "os.link", "os.symlink", "shutil.copyfile")
        paths = [p for p in map(watched, args[:2] if two else args[:1]) if p]
        if paths:
            record["writes"].append([event] + paths)
    finally:
        busy.pop()


sys.addaudithook(hook)

from htrjand.model.layers import MaskedBatchNorm2d
from htrjand.training.module import HTRModule


def logged(step, stage):
    def wrapper(self, batch, batch_idx):
        record["rank"] = self.global_rank
        record["sync"] = sorted({m.sync for m in self.modules() if isinstance(m, MaskedBatchNorm2d)})
        record["batches"].append({"stage": stage, "epoch": self.current_epoch, "step": self.global_step,
                                  "indices": batch["indices"].tolist()})
        return step(self, batch, batch_idx)
    return wrapper


HTRModule.training_step = logged(HTRModule.training_step, "train")
HTRModule.validation_step = logged(HTRModule.validation_step, "val")


@atexit.register
def dump():
    busy.append(1)
    with open(os.path.join(LOG, f"{os.getpid()}.json"), "w") as f:
        json.dump(record, f)


from htrjand.cli import main

sys.exit(main(sys.argv[1:]))
'''

TRAIN_LINES, VAL_LINES = 64, 16  # conftest's `rendered` data set


def _model_flags() -> list[str]:
    return ["--channels", json.dumps(TINY_MODEL["channels"]), "--d-model", str(TINY_MODEL["d_model"]),
            "--heads", str(TINY_MODEL["heads"]), "--blocks", str(TINY_MODEL["blocks"]),
            "--dropout", "0", "--cnn-dropout", "0"]


@pytest.fixture(scope="module")
def ddp(rendered, tmp_path_factory) -> dict:
    """One 2-rank DDP run (batch 8 per rank, one epoch = 4 steps); its output folder and per-rank records."""
    root = tmp_path_factory.mktemp("ddp")
    probe, logs, out = root / "probe.py", root / "logs", root / "out"
    probe.write_text(PROBE, encoding="utf-8")
    logs.mkdir()
    cmd = [sys.executable, str(probe), "train", "--preset", "student", "--train", str(rendered["train"]),
           "--val", str(rendered["val"]), "--output", str(out), "--epochs", "1", "--batch-size", "8",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--workers", "0", "--augment", "0",
           "--warmup-steps", "2", "--progress", "false", *_model_flags()]
    env = {**os.environ, "PROBE_LOG": str(logs), "PROBE_WATCH": str(out)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in logs.glob("*.json")]
    by_rank = {r["rank"]: r for r in records}
    assert sorted(by_rank) == [0, 1] and len(records) == 2, records
    return {"out": out, "ranks": by_rank}


@pytest.fixture(scope="module")
def single(rendered, tmp_path_factory) -> dict:
    """The same training in this process: 1 device, batch 16 (the DDP run's global batch)."""
    from htrjand.config import load_config
    from htrjand.training import train
    from htrjand.training.module import HTRModule

    out = tmp_path_factory.mktemp("single") / "run"
    batches, initial = [], {}
    step = HTRModule.training_step

    def logged(self, batch, batch_idx):
        if not initial:
            initial.update({k: v.detach().clone() for k, v in self.state_dict().items()})
        batches.append(batch["indices"].tolist())
        return step(self, batch, batch_idx)

    cfg = load_config(preset_name="student", overrides={
        "data": {"train": [str(rendered["train"])], "val": [str(rendered["val"])], "batch_size": 16,
                 "workers": 0, "augment": 0},
        "train": {"output": str(out), "epochs": 1, "warmup_steps": 2, "progress": False, "accelerator": "cpu",
                  "devices": "1"},
        "model": dict(TINY_MODEL)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HTRModule, "training_step", logged)
        summary = train(cfg)
    return {"out": out, "summary": summary, "batches": batches, "initial": initial}


def _batches(record: dict, stage: str) -> list[list[int]]:
    return [b["indices"] for b in record["batches"] if b["stage"] == stage]


def test_ranks_train_and_validate_on_disjoint_shares(ddp, single):
    r0, r1 = ddp["ranks"][0], ddp["ranks"][1]
    train0, train1 = _batches(r0, "train"), _batches(r1, "train")
    assert len(train0) == len(train1) == 4 and all(len(b) == 8 for b in train0 + train1)
    seen0, seen1 = {i for b in train0 for i in b}, {i for b in train1 for i in b}
    assert not seen0 & seen1  # no line trained twice in the epoch
    assert seen0 | seen1 == set(range(TRAIN_LINES))  # and none left out
    # step k of the two ranks together is step k of one process with the global batch
    assert [sorted(a + b) for a, b in zip(train0, train1)] == [sorted(b) for b in single["batches"]]
    val0, val1 = ({i for b in _batches(r, "val") for i in b} for r in (r0, r1))
    assert len(val0) == len(val1) == VAL_LINES // 2 and not val0 & val1 and val0 | val1 == set(range(VAL_LINES))
    assert r0["sync"] == r1["sync"] == [True]  # BatchNorm statistics over the global batch


def test_validation_cer_is_reduced_over_ranks(ddp, rendered):
    """Each rank validated half of the lines; the logged CER is the corpus CER of all of them, as one
    process computes it from the same checkpoint."""
    from htrjand.datasets import read_dataset
    from htrjand.evaluation import evaluate
    from htrjand.runtime import load

    out = ddp["out"]
    rows = list(csv.DictReader((out / "logs" / "version_0" / "metrics.csv").open(encoding="utf-8")))
    logged = [float(r["val_cer"]) for r in rows if r.get("val_cer")]
    assert len(logged) == 1
    report = evaluate(load(out / "best.ckpt"), read_dataset(rendered["val"]), batch_size=5)["overall"]
    assert report["lines"] == VAL_LINES and 0 < report["char_errors"] < report["chars"]  # not a trivial 0 or 1
    assert logged[0] == pytest.approx(report["char_errors"] / report["chars"], abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_val_cer"] == pytest.approx(logged[0], abs=1e-6)


def test_only_rank_zero_writes_files(ddp):
    out, r0, r1 = ddp["out"], ddp["ranks"][0], ddp["ranks"][1]
    assert r1["writes"] == []  # rank 1 created, changed or removed nothing in the output folder
    written = {os.path.relpath(w[-1], out) for w in r0["writes"]}
    assert {"best.ckpt", "last.ckpt", "summary.json", "logs/version_0/metrics.csv"} <= written
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    events = [f for f in files if "tfevents" in f]
    assert len(events) == 1 and f".{r0['pid']}." in events[0]  # TensorBoard names its file by PID
    assert set(files) <= written  # every file there was written by rank 0
    assert {"report.json", "report.md", "logs/version_0/hparams.yaml", "tensorboard/version_0/hparams.yaml"} <= set(files)
    assert not [f for f in files if "version_1" in f or f.endswith(".tmp")]  # one logger version, no leftovers


def test_two_ranks_match_one_process_with_the_global_batch(ddp, single):
    """2 ranks x batch 8 vs 1 process x batch 16, same seed: the same global batches in the same order,
    gradients averaged over the ranks, BatchNorm statistics summed over the ranks. The weight updates
    agree to 0.2% (float sums in another order; AdamW turns gradients that are zero up to rounding,
    e.g. attention key biases, into full-size steps of either sign); per-rank BatchNorm gives 6%,
    the earlier round-robin batch dealing 9%."""
    from htrjand.checkpoint import read_checkpoint

    a = read_checkpoint(ddp["out"] / "last.ckpt")["state_dict"]
    b = read_checkpoint(single["out"] / "last.ckpt")["state_dict"]
    init = single["initial"]
    assert a.keys() == b.keys() == init.keys()
    diff = update = 0.0
    for name, start in init.items():
        if start.is_floating_point():
            diff += float(((a[name] - b[name]) ** 2).sum())
            update += float(((b[name] - start) ** 2).sum())
    assert update > 0
    assert math.sqrt(diff / update) < 0.01
    summary = json.loads((ddp["out"] / "summary.json").read_text())
    assert summary["steps"] == single["summary"]["steps"] == 4
    assert summary["best_val_cer"] == pytest.approx(single["summary"]["best_val_cer"], abs=0.01)


@pytest.mark.parametrize("replicas,max_pixels", [(2, None), (3, None), (3, 64 * 900 * 2)])
def test_sampler_deals_global_batches(replicas, max_pixels):
    """Every rank gets the same number of batches, none empty; together they are the single-process
    batches of `batch * replicas` lines (each rank's share within `max_pixels`)."""
    widths = [int(w) for w in torch.randint(80, 1000, (37,), generator=torch.Generator().manual_seed(0))]
    single = list(WidthBucketSampler(widths, 4 * replicas, seed=5, max_pixels=max_pixels and max_pixels * replicas))
    ranks = [list(WidthBucketSampler(widths, 4, seed=5, rank=r, num_replicas=replicas, max_pixels=max_pixels))
             for r in range(replicas)]
    assert all(len(r) == len(ranks[0]) for r in ranks) and all(b for r in ranks for b in r)
    for step, parts in enumerate(zip(*ranks)):
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        merged = sorted({i for p in parts for i in p})
        if max_pixels is None:
            assert merged == sorted(single[step])
        for p in parts:
            assert max_pixels is None or len(p) * max(widths[i] for i in p) * 64 <= max_pixels
    dealt = [i for r in ranks for b in r for i in b]
    assert set(dealt) == set(range(len(widths)))  # every line, and repeated only to fill a short last batch
    assert len(dealt) - len(widths) <= replicas - 1


def test_train_passes_num_nodes_and_devices_to_lightning(monkeypatch, rendered, tmp_path):
    """`htrjand train --num-nodes 2 --devices 4 --strategy ddp` reaches `lightning.Trainer` as given
    (Lightning then reads the cluster's ranks from torchrun or SLURM variables)."""
    import lightning

    from htrjand.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(lightning, "Trainer", fake_trainer)
    with pytest.raises(Stop):
        main(["train", "--preset", "student", "--train", str(rendered["train"]), "--val", str(rendered["val"]),
              "--output", str(tmp_path / "run"), "--num-nodes", "2", "--devices", "4", "--strategy", "ddp",
              "--accelerator", "cpu", "--workers", "0", "--progress", "false", *_model_flags()])
    assert seen["num_nodes"] == 2 and seen["devices"] == 4 and seen["strategy"] == "ddp"


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_sigterm_to_one_rank_stops_every_rank_after_the_same_step(rendered, tmp_path):
    """SIGTERM to rank 1 alone, part-way through a 2-rank DDP run: both ranks agree to stop after the same
    step (rank 0 learns it through the per-step reduction), save it once and exit with 143; nothing hangs
    in a collective that one rank left."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "htrjand", "train", "--preset", "student", "--train", str(rendered["train"]),
           "--val", str(rendered["val"]), "--output", str(out), "--epochs", "50", "--batch-size", "8",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--workers", "0", "--augment", "0",
           "--warmup-steps", "2", "--progress", "false", "--checkpoint-every", "1000", *_model_flags()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        last, deadline = out / "last.ckpt", time.time() + 300
        while not last.with_name("last.ckpt.sha256").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)  # epoch 0's checkpoint (4 steps)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        ranks = [pid for pid in _children(proc.pid) if "htrjand" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(ranks) == 1, ranks
        os.kill(ranks[0], signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)  # a rank left waiting in a collective would hang here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, stderr[-3000:]
    step = read_checkpoint(last)["global_step"]
    assert step >= 4 and f"stopped by SIGTERM at step {step}" in stderr  # 4: the signal came during epoch 0's end
    assert "Traceback" not in stderr
