"""Shared fixtures: the real datasets when present, and small rendered ones otherwise."""
from __future__ import annotations

import os
from pathlib import Path

# Tiny test models run several times faster on one thread than on two contending ones; subprocesses
# (the DDP test) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "lines.tsv"  # the README's example lines

TINY_MODEL = {"channels": [8, 12, 16, 16, 16, 16], "d_model": 32, "heads": 2, "blocks": 1,
              "dropout": 0.0, "cnn_dropout": 0.0}


def posterior_frames(charset, spec: list[dict[str, float]], floor: float = -12.0):
    """Decoder test logits from per-frame posteriors: {'': p_blank, 'a': p_a, ...}; unlisted classes get ~0."""
    import numpy as np

    z = np.full((len(spec), charset.num_classes), floor)
    for t, probs in enumerate(spec):
        for ch, p in probs.items():
            z[t, 0 if ch == "" else charset.chars.index(ch) + 1] = np.log(p)
    return z


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "hooker" / "train.tsv").is_file():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """A small rendered dataset: train (64 lines), val (16), test (16) manifests."""
    from htrjand.demo import make_dataset

    root = tmp_path_factory.mktemp("rendered")
    return make_dataset(root, {"train": 64, "val": 16, "test": 16}, seed=3)


@pytest.fixture(scope="session")
def tiny_checkpoint(rendered, tmp_path_factory) -> Path:
    """A tiny Student trained 2 steps on the rendered lines (untrained in all but format): copy it before
    changing it."""
    from htrjand.config import load_config
    from htrjand.training import train

    out = tmp_path_factory.mktemp("tiny-run")
    train(load_config(preset_name="student", overrides={
        "data": {"train": [str(rendered["train"])], "val": [str(rendered["val"])], "batch_size": 16, "workers": 0},
        "train": {"output": str(out), "epochs": 1, "max_steps": 2, "warmup_steps": 1, "progress": False},
        "model": dict(TINY_MODEL)}))
    return out / "last.ckpt"
