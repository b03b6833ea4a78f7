"""The bundled Student: loads with no path, stays within the Student's size, reads real lines at the
accuracy its model card states (src/htrjand/models/student.json), and is what the CLI uses by default."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import htrjand
from htrjand.datasets import Problems, read_datasets, spec_of
from htrjand.evaluation import evaluate
from htrjand.runtime import DEFAULT_MODEL, Result

from conftest import EXAMPLES

CARD = json.loads((DEFAULT_MODEL.parent / "student.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bundled():
    return htrjand.load()


def test_bundled_model_loads_without_a_path_and_is_a_student(bundled):
    assert bundled.meta["path"] == str(DEFAULT_MODEL)
    assert bundled.parameters == CARD["parameters"] <= 750_000
    assert bundled.height == CARD["input_height"] and len(bundled.charset) == CARD["charset_size"]
    assert DEFAULT_MODEL.stat().st_size < 5_000_000  # a few MB: no optimizer state shipped


@pytest.mark.parametrize("dataset", ["copiste", "hooker"])
def test_bundled_model_reads_real_test_lines_as_its_card_says(bundled, shared_data, dataset):
    samples = read_datasets([spec_of(str(shared_data / dataset / "test.tsv"))], Problems())[:100]
    cer = evaluate(bundled, samples, batch_size=16)["overall"]["cer"]
    assert abs(cer - CARD["check"][dataset]["cer"]) <= 0.01, f"{dataset}: CER {cer:.4f}"


def test_bundled_model_reads_the_shipped_examples(bundled):
    cer = evaluate(bundled, read_datasets([spec_of(str(EXAMPLES))], Problems()), batch_size=16)["overall"]["cer"]
    assert cer <= CARD["examples"]["cer"] + 0.005, cer


def test_cli_recognize_uses_the_bundled_model_when_none_is_named(shared_data):
    line, text = (shared_data / "hooker" / "test.tsv").read_text(encoding="utf-8").splitlines()[1].split("\t")
    image = shared_data / "hooker" / line
    out = subprocess.run([sys.executable, "-m", "htrjand", "recognize", str(image), str(image)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 2 and all(row.startswith(str(image) + "\t") for row in out)  # both read as input
    from rapidfuzz.distance import Levenshtein

    assert Levenshtein.distance(out[0].split("\t")[1], text) <= len(text) // 2


def test_info_without_a_model_describes_the_bundled_one_and_survives_a_closed_pipe():
    done = subprocess.run([sys.executable, "-m", "htrjand", "info"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("checkpoint") and str(DEFAULT_MODEL) in done.stdout
    # the reader of our output goes away before we write (`htrjand info | head -0`): no traceback
    proc = subprocess.Popen([sys.executable, "-m", "htrjand", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141 and b"Traceback" not in proc.stderr.read()


def test_tta_averages_the_shifted_lines_log_probabilities(bundled):
    """`tta=3`: one engine call over the line and its copies moved 2 pixels up and down (paper filling
    in), whose log-softmax frames are averaged; other counts are refused."""
    import numpy as np

    from htrjand.images import pad_batch
    from htrjand.decoding import log_softmax
    from htrjand.runtime import shift_rows

    reader = htrjand.load(tta=3)
    assert reader._shifts == (0, -2, 2) and reader.height == 64
    samples = read_datasets([spec_of(str(EXAMPLES))], Problems())[:3]
    x, widths = pad_batch([reader.prepare(s)[0] for s in samples], reader.stride)
    moved = shift_rows(x, 2)
    assert (moved[:, :, :2] == 0).all() and (moved[:, :, 2:] == x[:, :, :-2]).all()
    averaged, lengths = reader.run_averaged(x, widths)
    each = [log_softmax(bundled.run(shift_rows(x, rows), widths)[0]) for rows in (0, -2, 2)]
    assert np.allclose(averaged, np.mean(each, axis=0), atol=1e-5)
    assert (lengths == bundled.run(x, widths)[1]).all()
    with pytest.raises(ValueError, match="tta must be one of 1, 3, 5"):
        htrjand.load(tta=2)


@pytest.mark.parametrize("dataset", ["copiste", "hooker"])
def test_tta_reads_real_test_lines_better(bundled, shared_data, dataset):
    """On 100 real test lines of each set, test-time augmentation lowers the bundled Student's CER
    (19.42 -> 18.85% copiste, 24.91 -> 24.02% hooker when written)."""
    samples = read_datasets([spec_of(str(shared_data / dataset / "test.tsv"))], Problems())[:100]
    plain = evaluate(bundled, samples, batch_size=16)["overall"]["cer"]
    assert evaluate(htrjand.load(tta=3), samples, batch_size=16)["overall"]["cer"] < plain - 0.003


def test_scales_keep_each_lines_most_confident_reading(bundled, tmp_path):
    """`scales`: every line read at each width factor; the kept reading is, line by line, the one a
    single-width reader at that factor gives with the highest confidence, its character positions
    still in the original image's pixels, its `scale` that factor (kept through the JSON record);
    presets and bad factors are checked."""
    from PIL import Image

    samples = read_datasets([spec_of(str(EXAMPLES))], Problems())
    factors = (1.0, 0.6, 1.6)
    alone = {f: htrjand.load(scales=(f,)).recognize(samples) for f in factors}
    kept = htrjand.load(scales=factors).recognize(samples)
    for i, result in enumerate(kept):
        best = max(factors, key=lambda f: (bool(alone[f][i].text), alone[f][i].confidence))
        assert (result.text, result.confidence, result.scale) == (alone[best][i].text, alone[best][i].confidence,
                                                                  best)
        assert Result.from_dict(json.loads(json.dumps(result.to_dict()))).scale == best
        with Image.open(samples[i].image) as im:
            assert all(0 <= x0 < x1 <= im.width for x0, x1 in result.char_positions), result.char_positions
    assert {f for f in factors if any(k.text == alone[f][i].text != alone[1.0][i].text
                                      for i, k in enumerate(kept))}, "some line should be kept at another width"
    assert htrjand.load(scales=3).scales == (1.0, 0.8, 1.25) and bundled.scales == (1.0,)
    assert htrjand.load(scales=1.5).scales == (1.5,) and htrjand.load(scales=[1, 0.9]).scales == (1.0, 0.9)
    for bad in (2, (0.1, 1.0), (1.0, 1.0), (), "3", ("wide",), float("nan")):
        with pytest.raises(ValueError, match="scales"):
            htrjand.load(scales=bad)


def test_scales_read_a_line_squeezed_out_of_shape(bundled, tmp_path):
    """Lines squeezed to 60% of their width (a writer with narrow letters, or a scan resampled) read
    badly at their own width; reading them also 1.6 times as wide recovers most of the text, and the
    report says most lines were kept at 1.6."""
    from PIL import Image

    samples = read_datasets([spec_of(str(EXAMPLES))], Problems())
    rows = []
    for s in samples:
        with Image.open(s.image) as im:
            im.resize((round(im.width * 0.6), im.height), Image.Resampling.BILINEAR).save(tmp_path / s.image.name)
        rows.append(f"{s.image.name}\t{s.text}")
    (tmp_path / "lines.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    squeezed = read_datasets([spec_of(str(tmp_path / "lines.tsv"))], Problems())
    plain = evaluate(bundled, squeezed)["overall"]["cer"]
    report = evaluate(htrjand.load(scales=(1.0, 1.6)), squeezed)
    scaled = report["overall"]["cer"]
    assert report["widths_kept"]["1.6"] > report["widths_kept"].get("1", 0), report["widths_kept"]
    assert [line["scale"] for line in report["lines"]].count(1.6) == report["widths_kept"]["1.6"]
    assert scaled < plain / 2 and scaled < CARD["examples"]["cer"] + 0.03, (plain, scaled)


@pytest.mark.parametrize("dataset", ["copiste", "hooker"])
def test_scales_read_real_test_lines_better(bundled, shared_data, dataset):
    """On 100 real test lines of each set, reading at 3 widths lowers the bundled Student's CER."""
    samples = read_datasets([spec_of(str(shared_data / dataset / "test.tsv"))], Problems())[:100]
    plain = evaluate(bundled, samples, batch_size=16)["overall"]["cer"]
    assert evaluate(htrjand.load(scales=3), samples, batch_size=16)["overall"]["cer"] < plain - 0.003
