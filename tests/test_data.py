import numpy as np
import pytest
from PIL import Image

from htrjand.charset import Charset
from htrjand.datasets import DataError, Problems, read_dataset
from htrjand.images import ImageError, load_gray, pad_batch, preprocess
from htrjand.training.sampler import WidthBucketSampler
from htrjand.training.data import ctc_frames_needed, prepare_samples


def _line(path, width=80, height=32):
    arr = np.full((height, width), 255, np.uint8)
    arr[10:20, 5: width - 5] = 0
    Image.fromarray(arr).save(path)
    return path


def test_manifest_reader_reports_bad_lines(tmp_path):
    _line(tmp_path / "a.png")
    (tmp_path / "m.tsv").write_bytes(
        "a.png\thello  world\nno tab here\nb.png\t   \n".encode() + b"c.png\t\xff\xfe bad\n" + "\n# comment\n".encode())
    problems = Problems()
    samples = read_dataset(tmp_path / "m.tsv", problems)
    assert [s.text for s in samples] == ["hello world"]
    assert samples[0].image == tmp_path / "a.png" and samples[0].source.endswith("m.tsv:1")
    assert problems.counts() == {"malformed line": 1, "empty transcription": 1, "undecodable line": 1}
    assert [where.rsplit(":", 1)[1] for _, where, _ in problems.entries] == ["2", "3", "4"]
    assert "3 samples skipped" in problems.summary()


def test_folder_reader(tmp_path):
    _line(tmp_path / "x.png")
    (tmp_path / "x.gt.txt").write_text("line one\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    _line(tmp_path / "sub" / "y.jpg")
    (tmp_path / "sub" / "y.jpg.gt.txt").write_text("line two", encoding="utf-8")
    _line(tmp_path / "z.png")  # no transcription
    problems = Problems()
    samples = read_dataset(tmp_path, problems)
    assert sorted(s.text for s in samples) == ["line one", "line two"]
    assert problems.counts() == {"missing transcription": 1}


def test_missing_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such manifest"):
        read_dataset(tmp_path / "nope.tsv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no line images"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(ImageError, match="not found"):
        load_gray(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="bad.png: cannot read image"):
        load_gray(tmp_path / "bad.png")


def test_preprocess_normalises_height_and_inverts(tmp_path):
    x = preprocess(_line(tmp_path / "a.png", width=80, height=32), 64)
    assert x.shape == (64, 160) and x.dtype == np.float32
    assert x[0, 0] == pytest.approx(0.0) and x[30, 80] == pytest.approx(1.0)  # paper 0, ink 1
    rgba = Image.new("RGBA", (20, 10), (0, 0, 0, 0))  # transparent = paper
    assert preprocess(rgba, 10).max() == 0.0
    assert preprocess(np.zeros((10, 30), np.uint8), 20).shape == (20, 60)


def test_pad_batch_rounds_widths_to_the_stride():
    images, widths = pad_batch([np.ones((4, 10), np.float32), np.ones((4, 3), np.float32)], 8)
    assert images.shape == (2, 1, 4, 16) and widths.tolist() == [16, 8]
    assert images[1, 0, :, 3:].sum() == 0


def test_width_buckets_keep_padding_low_and_shard_for_ddp():
    widths = [100, 900, 110, 950, 105, 880, 120, 920]
    sampler = WidthBucketSampler(widths, batch_size=4, shuffle=True, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert {frozenset(b) for b in batches} == {frozenset({0, 2, 4, 6}), frozenset({1, 3, 5, 7})}
    capped = list(WidthBucketSampler(widths, batch_size=4, max_pixels=64 * 950 * 2, shuffle=False))
    assert all(len(b) <= 2 for b in capped if max(widths[i] for i in b) > 800)
    ranks = [list(WidthBucketSampler(widths, 2, shuffle=True, rank=r, num_replicas=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}
    sampler.set_epoch(1)
    sampler.skip_batches = 1
    assert len(list(sampler)) == 1


def test_prepare_skips_unusable_training_samples(tmp_path):
    _line(tmp_path / "ok.png", width=80, height=64)  # 10 frames at stride 8
    (tmp_path / "m.tsv").write_text("ok.png\tabc\nok.png\taaaaaa\nok.png\tabcdefghijk\nmissing.png\tabc\n"
                                    "ok.png\tabz\n", encoding="utf-8")
    problems = Problems()
    samples = read_dataset(tmp_path / "m.tsv", problems)
    charset = Charset(list("abcdefghijk"))
    prepared = prepare_samples(samples, charset, 64, 8, 4096, problems)
    assert [s.text for s in prepared.samples] == ["abc"]
    assert problems.counts() == {"label too long": 2, "missing image": 1, "unknown characters": 1}
    assert prepared.unknown == {"z": 1}
    # evaluation keeps lines with unknown characters (they count as errors) and does not check CTC length
    val = prepare_samples(samples, charset, 64, 8, 4096, Problems(), training=False)
    assert len(val.samples) == 4


def test_ctc_frames_needed_counts_repeats():
    assert ctc_frames_needed([1, 2, 3]) == 3
    assert ctc_frames_needed([1, 1, 1]) == 5


def test_real_manifests_read(shared_data):
    for name in ("copiste", "hooker"):
        problems = Problems()
        samples = read_dataset(shared_data / name / "val.tsv", problems)
        assert len(samples) > 400 and not problems
        assert all(s.dataset == name and s.text for s in samples)
        x = preprocess(samples[0].image, 64)
        assert x.shape[0] == 64 and 0.0 <= x.min() and x.max() <= 1.0 and x.mean() < 0.5


def test_augmentation_never_makes_a_label_ctc_infeasible(tmp_path):
    from htrjand.training.data import LineDataset

    _line(tmp_path / "tight.png", width=65, height=64)  # 9 frames at stride 8
    (tmp_path / "m.tsv").write_text("tight.png\tabcdefghi\n", encoding="utf-8")
    charset = Charset(list("abcdefghi"))
    problems = Problems()
    prepared = prepare_samples(read_dataset(tmp_path / "m.tsv", problems), charset, 64, 8, 4096, problems)
    dataset = LineDataset(prepared, charset, 64, 4096, 8, augment=1.0, seed=0)
    widths = {dataset[(0, epoch)][0].shape[1] for epoch in range(40)}
    assert min(widths) > 64 and len(widths) > 1  # augmented (widths vary), never below 9 frames


def test_stretch_scales_only_the_width_within_its_range_and_keeps_resume_exact(tmp_path):
    """`stretch 0.25` alone: about half the readings keep the line's width, the others are 0.8 to 1.25 times
    as wide, both ways, at the same height; the same (epoch, index) gives the same image (exact resume)."""
    from htrjand.training.data import LineDataset

    _line(tmp_path / "l.png", width=400, height=64)
    (tmp_path / "m.tsv").write_text("l.png\tab\n", encoding="utf-8")
    charset = Charset(list("ab"))
    problems = Problems()
    prepared = prepare_samples(read_dataset(tmp_path / "m.tsv", problems), charset, 64, 8, 4096, problems)
    base = prepared.widths[0]
    dataset = LineDataset(prepared, charset, 64, 4096, 8, augment=0.0, seed=0, stretch=0.25)
    images = [dataset[(0, epoch)][0] for epoch in range(60)]
    ratios = [im.shape[1] / base for im in images]
    assert all(im.shape[0] == 64 for im in images) and all(0.79 <= r <= 1.26 for r in ratios)
    assert 10 < sum(abs(r - 1) < 0.01 for r in ratios) < 50  # p = 0.5
    assert min(ratios) < 0.9 and max(ratios) > 1.12
    assert np.array_equal(dataset[(0, 7)][0], images[7])
    assert LineDataset(prepared, charset, 64, 4096, 8).augmenter is None


def test_curriculum_draws_short_lines_first_and_keeps_epochs_the_same_length():
    lengths = [5 + (i * 37) % 100 for i in range(200)]  # label lengths 5..104
    widths = [8 * n for n in lengths]
    sampler = WidthBucketSampler(widths, 8, seed=1, difficulty=lengths, curriculum=(4, 0.3))
    plain = WidthBucketSampler(widths, 8, seed=1)
    drawn = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(plain)  # same number of batches every epoch: the LR schedule holds
        drawn.append([lengths[i] for b in batches for i in b])
    assert sampler.competence(0) == pytest.approx(0.3) and sampler.competence(4) == 1.0
    assert max(drawn[0]) <= sorted(lengths)[int(0.3 * 200)]  # epoch 0: the shortest 30% only
    assert max(drawn[0]) < max(drawn[2]) < max(drawn[4]) == max(lengths)
    assert sorted(drawn[5]) == sorted(lengths)  # after the curriculum: every line once
    sampler.set_epoch(1)
    assert [lengths[i] for b in sampler for i in b] == drawn[1]  # deterministic per epoch (exact resume)


def test_dataset_shares_can_decay_over_the_epochs():
    from htrjand.datasets import DataError
    from htrjand.datasets.spec import parse_spec

    groups = [0] * 100 + [1] * 100  # e.g. 0 = synthetic, 1 = real
    sampler = WidthBucketSampler([64] * 200, 10, seed=2, groups=groups, shares=[1.0, 1.0], shares_end=[0.2, 1.0],
                                 epochs=5)
    counts = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        drawn = [i for b in sampler for i in b]
        assert len(drawn) == 200  # same epoch length
        counts.append(sum(1 for i in drawn if groups[i] == 0))
    assert counts[0] == 100 and counts[-1] == round(200 * 0.2 / 1.2) and counts == sorted(counts, reverse=True)
    assert parse_spec("s.tsv?weight=2&weight_end=0.5").weight_end == 0.5
    with pytest.raises(DataError, match="weight_end needs"):
        parse_spec("s.tsv?weight_end=0.5")
    with pytest.raises(DataError, match="weight end must be positive"):
        parse_spec("s.tsv?weight=1&weight_end=-1")
