"""Dataset specs, weighted multi-dataset sampling, the decoded-line cache, and a two-dataset training
run whose report has a row per dataset."""
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from htrjand.config import load_config
from htrjand.datasets import DataError, LineCrop, Sample, spec_of
from htrjand.demo import make_dataset
from htrjand.images import load_line, normalize_height
from htrjand.training.sampler import WidthBucketSampler
from htrjand.training import train
from htrjand.training.linecache import LineCache

from conftest import TINY_MODEL


def test_spec_strings_and_mappings():
    s = spec_of("iam:/data/IAM?split=train&scheme=aachen&weight=2")
    assert (s.format, str(s.path), s.split, s.weight, s.options) == ("iam", "/data/IAM", "train", 2.0, {"scheme": "aachen"})
    assert spec_of(str(s)) == s  # the string form round-trips
    m = spec_of({"path": "pages", "format": "page", "name": "archive", "keep_empty": True, "types": "handwritten"})
    assert (m.format, m.name, m.keep_empty, m.options, m.weight) == ("page", "archive", True, {"types": "handwritten"}, None)
    assert spec_of("C:/scans/x.tsv").format == "auto"  # a prefix that is no format stays part of the path
    with pytest.raises(DataError, match="unknown dataset format 'nope'"):
        spec_of({"path": "x", "format": "nope"})
    with pytest.raises(DataError, match="weight must be positive"):
        spec_of("x.tsv?weight=0")
    with pytest.raises(DataError, match="not a number"):
        spec_of("x.tsv?weight=lots")


def test_weighted_sampling_draws_datasets_in_proportion():
    groups = [0] * 90 + [1] * 10
    widths = list(np.random.default_rng(0).integers(100, 900, size=100))
    sampler = WidthBucketSampler(widths, batch_size=8, seed=3, groups=groups, shares=[1.0, 1.0])
    drawn = [i for b in sampler for i in b]
    per_group = Counter(groups[i] for i in drawn)
    assert len(drawn) == 100 and per_group == {0: 50, 1: 50}  # equal weights: half each, whatever the sizes
    assert len(set(i for i in drawn if groups[i] == 1)) == 10  # the small set is repeated whole, not resampled
    assert sorted(drawn) == sorted(i for b in WidthBucketSampler(widths, 8, seed=3, groups=groups, shares=[1.0, 1.0])
                                   for i in b)  # deterministic per (seed, epoch)
    sampler.set_epoch(1)
    assert [i for b in sampler for i in b] != drawn
    ranks = [[i for b in WidthBucketSampler(widths, 10, seed=3, rank=r, num_replicas=2, groups=groups,
                                            shares=[3.0, 1.0]) for i in b] for r in (0, 1)]
    assert Counter(groups[i] for i in ranks[0] + ranks[1]) == {0: 75, 1: 25}


def _page(tmp_path):
    page = np.full((60, 200), 255, np.uint8)
    page[20:40, 30:170] = 0
    path = tmp_path / "page.png"
    Image.fromarray(page).save(path)
    return path


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_line_cache_matches_direct_loading_and_reports_failures(tmp_path, mode, monkeypatch):
    page = _page(tmp_path)
    samples = [Sample(page, "a", "d", crop=LineCrop(((25, 15), (175, 15), (175, 45), (25, 45)))),
               Sample(tmp_path / "missing.png", "b", "d", source="m.tsv:2"),
               Sample(page, "c", "d", crop=LineCrop.box(0, 0, 100, 59))]
    cache, errors = LineCache.build(samples, 32, 4096, mode, tmp_path / "cache", workers=1)
    assert errors[0] is None and errors[2] is None and "not found" in errors[1]
    for i in (0, 2):
        expected = normalize_height(load_line(samples[i].image, samples[i].crop), 32, max_width=4096)
        assert np.array_equal(cache[i], expected)
    if mode == "disk":  # a second build with the same files reuses the cache without decoding anything
        monkeypatch.setattr("htrjand.training.linecache._decode", lambda job: pytest.fail("decoded again"))
        again, errors2 = LineCache.build(samples, 32, 4096, mode, tmp_path / "cache", workers=1)
        assert errors2 == errors and np.array_equal(again[2], cache[2])


def test_two_datasets_from_one_config_report_a_row_each(rendered, tmp_path):
    other = make_dataset(tmp_path / "second", {"train": 24, "val": 8, "test": 8}, seed=11)
    with other["train"].open("a", encoding="utf-8") as f:  # a line the character mapping changes
        f.write("lines/train_00000.png\tit’s\n")
    out = tmp_path / "run"
    cfg_file = tmp_path / "multi.yaml"
    cfg_file.write_text(
        "preset: student\n"
        f"model: {json.dumps(TINY_MODEL)}\n"
        "data:\n"
        f"  train: [{{path: {rendered['train']}, name: first, weight: 1}}, '{other['train']}?name=second&weight=1']\n"
        f"  val: ['{rendered['val']}?name=first', '{other['val']}?name=second']\n"
        f"  test: ['{rendered['test']}?name=first', '{other['test']}?name=second']\n"
        "  workers: 0\n  batch_size: 8\n  augment: 0\n"
        f"train: {{epochs: 1, warmup_steps: 2, progress: false, output: {out}}}\n", encoding="utf-8")
    summary = train(load_config(cfg_file))
    info = summary["report"]
    assert set(info["val"]["datasets"]) == set(info["test"]["datasets"]) == {"first", "second"}
    assert info["test"]["datasets"]["second"]["lines"] == 8
    assert "| second | 8 |" in (out / "report.md").read_text(encoding="utf-8")
    metrics = (out / "logs" / "version_0" / "metrics.csv").read_text()
    assert "val_cer/first" in metrics and "val_cer/second" in metrics
    # equal weights: the 25-line dataset fills half of the 89 lines drawn per epoch
    from htrjand.checkpoint import read_checkpoint
    shares = read_checkpoint(out / "last.ckpt")["hyper_parameters"]["htrjand"]["training"]["sampling_shares"]
    assert sorted(shares.values()) == [0.5, 0.5]
