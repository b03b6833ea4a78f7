"""Temperature scaling: correctness target, fit, ECE, reliability diagram, checkpoint storage."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from htrjand.calibration import (CalibrationError, CalibrationSet, calibrate, char_correctness, fit_temperature,
                                 reliability, reliability_diagram)
from htrjand.charset import Charset

from conftest import posterior_frames


def test_char_correctness_from_the_edit_alignment():
    assert char_correctness("hello", "hello") == [True] * 5
    assert char_correctness("hallo", "hello") == [True, False, True, True, True]
    assert char_correctness("helllo", "hello").count(False) == 1  # one extra 'l'
    assert char_correctness("helo", "hello") == [True] * 4  # a deletion has no hypothesis character
    assert char_correctness("", "abc") == []


def _synthetic(true_temperature: float, n: int = 4000, classes: int = 12, seed: int = 0) -> CalibrationSet:
    """One frame per character; the label is the frame's argmax and it is right with probability
    softmax(z / true_temperature)[label]: the raw confidences are over-confident when T > 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1, (n, classes)) * rng.uniform(1, 6, (n, 1))
    labels = z.argmax(1)
    p = np.exp(z / true_temperature) / np.exp(z / true_temperature).sum(1, keepdims=True)
    correct = rng.random(n) < p[np.arange(n), labels]
    return CalibrationSet(z.astype(np.float32), labels, np.arange(n), correct)


def test_temperature_fit_reduces_ece_on_an_overconfident_model():
    data = _synthetic(3.0)
    t = fit_temperature(data)
    assert t == pytest.approx(3.0, rel=0.15)
    report = calibrate(data)
    assert report["ece_before"] > 0.1 and report["ece_after"] < report["ece_before"] / 3
    assert report["nll_after"] < report["nll_before"]
    assert sum(report["after"]["counts"]) == len(data)
    # an already calibrated model keeps T close to 1
    assert fit_temperature(_synthetic(1.0, seed=1)) == pytest.approx(1.0, rel=0.15)


def test_confidence_is_the_best_frame_of_each_character():
    rows = np.log(np.array([[0.1, 0.9], [0.4, 0.6], [0.3, 0.7]], dtype=np.float32))
    data = CalibrationSet(rows, np.array([1, 1, 1]), np.array([0, 0, 1]), np.array([True, False]))
    assert data.confidences() == pytest.approx([0.9, 0.7])
    assert data.confidences(2.0)[0] == pytest.approx(3 / 4)  # sqrt(.9) / (sqrt(.9) + sqrt(.1))


def test_collect_from_logits_and_references():
    cs = Charset(list("ab"))
    z = np.full((6, 3), -9.0)
    for t, c in enumerate([1, 0, 2, 0, 1, 1]):  # greedy: "aba"
        z[t, c] = 3.0
    data = CalibrationSet.collect([z, np.zeros((3, 3))], ["abb", "x"], cs.decode)
    assert data.correct.tolist() == [True, True, False]  # the third character should be 'b'
    assert data.owner.tolist() == [0, 1, 2, 2]  # the last 'a' spans two frames
    with pytest.raises(CalibrationError, match="no recognised characters"):
        CalibrationSet.collect([np.zeros((3, 3))], ["x"], cs.decode)


def test_reliability_bins_and_diagram(tmp_path):
    conf = np.array([0.05, 0.95, 0.95, 0.55])
    correct = np.array([False, True, False, True])
    rel = reliability(conf, correct, bins=10)
    assert rel["counts"][0] == 1 and rel["counts"][9] == 2 and rel["counts"][5] == 1
    assert rel["ece"] == pytest.approx(0.25 * 0.05 + 0.5 * 0.45 + 0.25 * 0.45)
    from PIL import Image

    path = reliability_diagram(calibrate(_synthetic(2.0, n=500)), tmp_path / "r.png")
    with Image.open(path) as im:
        assert im.size[0] > 2 * im.size[1] * 0.9 and len(set(im.convert("L").getdata())) > 5


def test_calibrated_checkpoint_stays_loadable(rendered, tiny_checkpoint, tmp_path):
    from htrjand import load
    from htrjand.calibration import calibrate_recognizer
    from htrjand.checkpoint import read_checkpoint, update_metadata
    from htrjand.datasets import read_dataset

    src = Path(shutil.copy(tiny_checkpoint, tmp_path / "last.ckpt"))
    samples = read_dataset(rendered["val"])
    recognizer = load(src)
    report = calibrate_recognizer(recognizer, samples)
    assert report["lines"] == 16 and report["characters"] > 0
    dst = tmp_path / "calibrated.ckpt"
    assert update_metadata(src, {"calibration": {"temperature": 2.5}}, dst) is None
    assert load(src).temperature == 1.0  # the source is untouched when writing a new file
    calibrated = load(dst)
    assert calibrated.temperature == 2.5
    before, after = recognizer.recognize(samples[:4]), calibrated.recognize(samples[:4])
    assert [r.text for r in before] == [r.text for r in after]  # temperature never changes the text
    assert all(a.confidence <= b.confidence + 1e-9 for a, b in zip(after, before) if a.text)
    weights = read_checkpoint(dst)["state_dict"]
    assert all(torch.equal(weights[k], v) for k, v in read_checkpoint(src)["state_dict"].items())


def test_blank_penalty_keeps_uncertain_characters_and_their_true_confidence():
    from htrjand.decoding import Decoder

    charset = Charset("ab")  # classes: blank, a, b
    z = posterior_frames(charset, [{"a": 0.9, "": 0.1}, {"": 0.6, "b": 0.4}, {"": 1.0}])  # "a", then a "b" the blank outweighs
    assert Decoder(charset).decode_line(z).text == "a"
    penalised = Decoder(charset, blank_penalty=0.5).decode_line(z)  # log(0.6 / 0.4) = 0.41 < 0.5
    assert penalised.text == "ab"
    assert penalised.char_confidences[1] == pytest.approx(0.4, abs=1e-3)  # the model's posterior, not penalised
    assert Decoder(charset, blank_penalty=0.5, kind="beam").decode_line(z).text == "ab"
    assert "blank penalty 0.5" in Decoder(charset, blank_penalty=0.5).name
    with pytest.raises(ValueError, match="blank penalty"):
        Decoder(charset, blank_penalty=float("nan"))


def test_blank_penalty_fit_picks_the_penalty_that_lowers_cer_and_none_when_none_helps():
    from htrjand.calibration import fit_blank_penalty
    from htrjand.datasets import Sample
    from htrjand.runtime import LineOutput, LineReader

    charset = Charset("ab")
    reader = LineReader(charset, {}, height=64, stride=8)
    # each line holds an "a" read with certainty and a "b" the blank outweighs by 0.6 : 0.4 (log ratio 0.41)
    outputs = [LineOutput(posterior_frames(charset, [{"a": 0.9}, {"": 0.6, "b": 0.4}, {"": 1.0}]), 8.0, 24)] * 3
    samples = [Sample(f"l{i}.png", "ab", "d") for i in range(3)]
    fit = fit_blank_penalty(reader, samples, outputs, (0.25, 0.5, 1.0))
    assert fit["blank_penalty"] == 0.5 and fit["cer"] == 0.0 and fit["cer_without"] == pytest.approx(0.5)
    assert [g["blank_penalty"] for g in fit["grid"]] == [0.0, 0.25, 0.5, 1.0]  # 0 is always tried
    # where the uncertain "b" is not in the reference, no penalty helps: 0 stays
    assert fit_blank_penalty(reader, [Sample("x.png", "a", "d")] * 3, outputs, (0.25, 0.5, 1.0))["blank_penalty"] == 0.0


def test_calibrate_stores_the_blank_penalty_used_by_decoders_without_lm(rendered, tiny_checkpoint, tmp_path, capsys):
    from htrjand import load
    from htrjand.checkpoint import update_metadata
    from htrjand.cli import main

    src, out = tiny_checkpoint, tmp_path / "cal.ckpt"
    assert main(["calibrate", str(src), str(rendered["val"]), "--output", str(out), "--blank-penalties", "0.5,1",
                 "--scales", "1,1.25"]) == 0
    printed = capsys.readouterr().out
    assert "blank penalty: 0 -> CER" in printed and "1 -> CER" in printed
    stored = load(out).meta["calibration"]
    assert stored["blank_penalty"] in (0.0, 0.5, 1.0) and stored["tta"] == 1 and stored["scales"] == [1.0, 1.25]
    for bad, message in (("0.1,1", "from 0.25 to 4"), ("4", "one of 1, 3, 5, 7"), ("wide", "comma-separated numbers")):
        with pytest.raises(SystemExit) as stop:
            main(["calibrate", str(src), str(rendered["val"]), "--output", str(out), "--scales", bad])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    # a chosen penalty reaches the default decoder and the LM-free ones, not a decoder with an LM
    update_metadata(out, {"calibration": {**stored, "blank_penalty": 0.75}})
    reader = load(out)
    assert reader.blank_penalty == 0.75 and reader.decoder.blank_penalty == 0.75
    assert reader.make_decoder("beam").blank_penalty == 0.75
    assert reader.make_decoder("greedy", blank_penalty=0.0).blank_penalty == 0.0
    lm = tmp_path / "c.arpa"
    assert main(["lm", "build", str(rendered["train"]), "--unit", "char", "--order", "3", "--out", str(lm)]) == 0
    assert reader.make_decoder("beam", lm=str(lm)).blank_penalty == 0.0
    assert reader.make_decoder("beam", lm=str(lm), blank_penalty=0.25).blank_penalty == 0.25
