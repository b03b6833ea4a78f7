"""Multi-task training heads: an auxiliary CTC head on the CNN features and a dataset classifier on
the attention features learn during training and are absent from inference and exported models."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image, ImageFilter

from htrjand.checkpoint import read_checkpoint
from htrjand.config import ConfigError, load_config
from htrjand.datasets import read_dataset
from htrjand.model import HTRNet, ModelConfig, count_parameters
from htrjand.recognition import load
from htrjand.runtime import DEFAULT_MODEL
from htrjand.training import train

from conftest import TINY_MODEL


@pytest.fixture(scope="module")
def two_datasets(rendered, tmp_path_factory):
    """32 rendered lines, and the same lines blurred: two datasets a classifier can tell apart."""
    root = tmp_path_factory.mktemp("two")
    samples = read_dataset(rendered["train"])[:32]
    sharp, blurred = root / "sharp.tsv", root / "blurred.tsv"
    sharp.write_text("".join(f"{s.image}\t{s.text}\n" for s in samples), encoding="utf-8")
    rows = []
    for i, s in enumerate(samples):
        path = root / f"b{i}.png"
        Image.open(s.image).convert("L").filter(ImageFilter.GaussianBlur(2.5)).save(path)
        rows.append(f"{path}\t{s.text}\n")
    blurred.write_text("".join(rows), encoding="utf-8")
    return [f"{sharp}?name=sharp", f"{blurred}?name=blurred"]


def _metric(path, name):
    rows = csv.DictReader((path / "logs" / "version_0" / "metrics.csv").open())
    return [float(r[name]) for r in rows if r.get(name)]


def test_heads_learn_and_stay_out_of_the_inference_model(two_datasets, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(preset_name="student", overrides={
        "data": {"train": two_datasets, "val": two_datasets[:1], "batch_size": 8, "workers": 0, "augment": 0,
                 "curriculum_epochs": 0},
        "train": {"output": str(out), "epochs": 8, "lr": 1e-2, "warmup_steps": 5, "progress": False,
                  "aux_ctc_weight": 0.5, "dataset_head_weight": 0.5, "val_every": 8},
        "model": dict(TINY_MODEL)})
    train(cfg)
    aux, dataset_loss, accuracy = (_metric(out, n) for n in ("aux_ctc_loss", "dataset_loss", "dataset_acc"))
    assert len(aux) >= 5 and aux[-1] < 0.8 * aux[0], aux
    assert dataset_loss[-1] < 0.5 * dataset_loss[0] and np.mean(accuracy[-3:]) > 0.9, (dataset_loss, accuracy)
    state = read_checkpoint(out / "last.ckpt")["state_dict"]
    assert {"aux_head.weight", "dataset_head.weight"} <= set(state)
    recognizer = load(out / "last.ckpt")
    plain = HTRNet(ModelConfig.from_dict(TINY_MODEL), recognizer.charset.num_classes)
    assert recognizer.parameters == count_parameters(plain)  # the heads are not part of the model that reads


def test_heads_are_refused_with_distillation(rendered, tmp_path):
    cfg = load_config(preset_name="student", overrides={
        "data": {"train": [str(rendered["train"])], "val": [str(rendered["val"])], "workers": 0},
        "train": {"output": str(tmp_path / "d"), "aux_ctc_weight": 0.3, "progress": False},
        "distill": {"teacher": str(DEFAULT_MODEL)}, "model": dict(TINY_MODEL)})
    with pytest.raises(ConfigError, match="multi-task"):
        train(cfg)
