"""CTC decoding: greedy vs beam, LM and lexicon effects, alignment, positions, and the CLI end to end."""
import importlib.util
import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from htrjand.charset import Charset
from htrjand.decoding import (Decoder, DecodingError, LanguageScorer, align, beam_search, greedy_path,
                              log_softmax)
from htrjand.lm import Lexicon, build_lm

from conftest import posterior_frames


def _ctc_logp(log_probs: np.ndarray, labels: list[int]) -> float:
    """log P(labels | frames) summed over all alignments (torch's CTC)."""
    lp = torch.from_numpy(log_probs).float()[:, None, :]
    if not labels:
        return float(lp[:, 0, 0].sum())
    return -float(F.ctc_loss(lp, torch.tensor([labels]), torch.tensor([len(lp)]), torch.tensor([len(labels)]),
                             reduction="sum"))


def test_beam_width_one_equals_greedy_on_peaky_random_logits():
    """Prefix beam search sums alignments, so width 1 equals best path when posteriors are peaky
    (as a trained CTC model's are); checked on random frames whose best class has p > 0.99."""
    rng = np.random.default_rng(0)
    cs = Charset(list("abcdefghij "))
    greedy, beam1 = Decoder(cs), Decoder(cs, "beam", beam_width=1)
    for _ in range(100):
        z = rng.normal(0, 1, (40, cs.num_classes))
        z[np.arange(40), rng.choice(cs.num_classes, 40, p=[0.5] + [0.5 / len(cs)] * len(cs))] += 10
        g, b = greedy.decode_line(z), beam1.decode_line(z)
        assert g.text == b.text
        assert g.char_frames == b.char_frames and g.char_confidences == pytest.approx(b.char_confidences)


def test_wide_beam_finds_the_more_probable_text_where_greedy_is_wrong():
    # blank 0.6 / a 0.4 in both frames: best path "" (0.36) but P("a") = 0.16 + 0.24 + 0.24 = 0.64
    cs = Charset(list("a"))
    z = posterior_frames(cs, [{"": 0.6, "a": 0.4}] * 2)
    assert Decoder(cs).decode_line(z).text == ""
    best = Decoder(cs, "beam", beam_width=8).decode_line(z)
    assert best.text == "a"
    lp = log_softmax(z)
    assert _ctc_logp(lp, cs.encode("a")) > _ctc_logp(lp, []) + 0.5
    assert best.nbest[0].acoustic == pytest.approx(math.log(0.64), abs=1e-6)
    assert [c.text for c in best.nbest] == ["a", ""]  # "aa" needs three frames


def test_unpruned_beam_search_is_exact_on_a_small_case():
    """With a beam wider than the number of prefixes, the result is the most probable label sequence
    (brute force over all sequences) and its score is its full CTC probability."""
    rng = np.random.default_rng(1)
    cs = Charset(list("ab"))
    for _ in range(5):
        lp = log_softmax(rng.normal(0, 1.5, (5, cs.num_classes)))
        sequences = [list(s) for n in range(6) for s in itertools.product([1, 2], repeat=n)]
        scores = {tuple(s): _ctc_logp(lp, s) for s in sequences}
        (hyp,) = beam_search(lp, beam_width=1000, nbest=1, token_min_logp=-math.inf, prune_logp=math.inf)
        assert scores[tuple(hyp.labels)] == pytest.approx(max(scores.values()), abs=1e-5)
        assert hyp.acoustic == pytest.approx(scores[tuple(hyp.labels)], abs=1e-5)


def test_forced_alignment_spans():
    cs = Charset(list("ab"))
    z = posterior_frames(cs, [{"": 0.9}, {"a": 0.9}, {"a": 0.9}, {"": 0.9}, {"a": 0.9}, {"b": 0.9}, {"": 0.9}])
    lp = log_softmax(z)
    assert align(lp, cs.encode("aab")) == [(1, 3), (4, 5), (5, 6)]
    assert align(lp, cs.encode("aab")) == greedy_path(lp)[1]
    with pytest.raises(DecodingError, match="do not fit"):
        align(lp[:2], cs.encode("aab"))


def test_character_lm_changes_the_answer():
    cs = Charset(list("aeht "))
    # "th?" where the last frame slightly prefers 'a' over 'e'
    z = posterior_frames(cs, [{"t": 0.98}, {"": 0.98}, {"h": 0.98}, {"": 0.98}, {"a": 0.55, "e": 0.44}, {"": 0.98}])
    assert Decoder(cs).decode_line(z).text == "tha"
    assert Decoder(cs, "beam", 8).decode_line(z).text == "tha"
    lm, _ = build_lm(["the", "the hat", "then the", "the the"], 4, "char")
    with_lm = Decoder(cs, "beam", 8, LanguageScorer(cs, lm, alpha=1.0, beta=0.0)).decode_line(z)
    assert with_lm.text == "the"
    assert with_lm.nbest[0].lm > with_lm.nbest[1].lm and {c.text for c in with_lm.nbest[:2]} == {"the", "tha"}
    weak = Decoder(cs, "beam", 8, LanguageScorer(cs, lm, alpha=0.0, beta=0.0)).decode_line(z)
    assert weak.text == "tha"  # alpha 0: the LM has no say


def test_word_lm_and_lexicon():
    cs = Charset(list("acot "))
    spec = [{"c": 0.98}, {"": 0.98}, {"o": 0.6, "a": 0.39}, {"": 0.98}, {"t": 0.98}, {"": 0.98}]
    z = posterior_frames(cs, spec)
    assert Decoder(cs, "beam", 8).decode_line(z).text == "cot"
    lm, _ = build_lm(["a cat", "cat", "the cat", "a cat a cat"], 2, "word")
    assert Decoder(cs, "beam", 8, LanguageScorer(cs, lm, alpha=1.0, beta=0.0)).decode_line(z).text == "cat"
    # strict lexicon forces an in-lexicon word even against strong evidence
    z = posterior_frames(cs, [{"c": 0.98}, {"": 0.98}, {"o": 0.9, "a": 0.09}, {"": 0.98}, {"t": 0.98}])
    lexicon = Lexicon(["cat", "act"])
    strict = LanguageScorer(cs, None, lexicon, strict=True)
    assert Decoder(cs, "beam", 8, strict).decode_line(z).text == "cat"
    assert Decoder(cs, "beam", 8, LanguageScorer(cs, None, lexicon, oov_penalty=0.0)).decode_line(z).text == "cot"
    assert Decoder(cs, "beam", 8, LanguageScorer(cs, None, lexicon, oov_penalty=5.0)).decode_line(z).text == "cat"


def test_positions_confidences_and_words():
    cs = Charset(list("abc "))
    spec = [{"": 0.9}, {"a": 0.9}, {"a": 0.8}, {"": 0.9}, {"b": 0.7}, {" ": 0.9}, {"": 0.9}, {"c": 0.6}]
    z = posterior_frames(cs, spec, floor=-6.0)
    # 8 frames at stride 8 = 64 normalised pixels; the original image was 120 px wide: 15 px per frame
    for decoder in (Decoder(cs), Decoder(cs, "beam", 4)):
        d = decoder.decode_line(z, px_per_frame=8 * 120 / 64, width=120)
        assert d.text == "ab c"
        assert d.char_frames == [(1, 3), (4, 5), (5, 6), (7, 8)]
        assert d.char_x == [(15, 45), (60, 75), (75, 90), (105, 120)]
        assert [(w.text, w.x) for w in d.words] == [("ab", (15, 75)), ("c", (105, 120))]
        p = np.exp(log_softmax(z))
        a, b = cs.encode("a")[0], cs.encode("b")[0]
        assert d.char_confidences[0] == pytest.approx(p[1, a]) and d.char_confidences[1] == pytest.approx(p[4, b])
        assert d.words[0].confidence == pytest.approx(p[1, a] * p[4, b])
        assert d.confidence == pytest.approx(sum(d.char_confidences) / 4)
    hot = Decoder(cs).decode_line(z, temperature=2.0)
    assert hot.text == "ab c" and all(h < c for h, c in zip(hot.char_confidences, d.char_confidences))


def test_recognizer_maps_frames_to_original_pixels():
    """A 32 px high, 100 px wide line is read at 64 x 200: one frame (8 px) is 4 original pixels."""
    from htrjand.model import HTRNet, ModelConfig
    from htrjand.recognition import Recognizer

    from conftest import TINY_MODEL

    torch.manual_seed(0)
    cs = Charset(list("abc "))
    recognizer = Recognizer(HTRNet(ModelConfig.from_dict(TINY_MODEL), cs.num_classes), cs)
    image = (np.random.default_rng(0).random((32, 100)) * 255).astype(np.uint8)
    (out,) = recognizer.forward(image)
    assert out.width == 100 and out.px_per_frame == pytest.approx(4.0) and out.logits.shape == (25, 5)
    r = recognizer.result(out, decoder=Decoder(cs, "beam", 4))
    d = Decoder(cs, "beam", 4).decode_line(out.logits)
    assert r.char_positions == [(4 * t0, 4 * t1) for t0, t1 in d.char_frames]
    assert r.text == d.text and len(r.char_positions) > 1 and len(r.nbest) >= 1
    assert all(x1 <= 100 for _, x1 in r.char_positions)


def test_decoder_option_errors(tmp_path):
    cs = Charset(list("abc "))
    with pytest.raises(DecodingError, match="need --decoder beam"):
        Decoder.from_options(cs, "greedy", lm="x.arpa")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    from htrjand.lm import LMError

    with pytest.raises(LMError, match="empty.txt: lexicon is empty"):
        Decoder.from_options(cs, lexicon=str(empty))
    assert Decoder.from_options(cs).kind == "greedy"


def test_cli_lm_build_tune_calibrate_recognize(rendered, tiny_checkpoint, tmp_path, capsys):
    import shutil

    from PIL import Image

    from htrjand import load
    from htrjand.cli import main
    from htrjand.datasets import read_dataset

    ckpt = str(shutil.copy(tiny_checkpoint, tmp_path / "last.ckpt"))
    arpa = tmp_path / "char.arpa"
    assert main(["lm", "build", str(rendered["train"]), "--order", "4", "--out", str(arpa)]) == 0
    assert "char 4-gram LM" in capsys.readouterr().out
    assert json.loads((tmp_path / "char.arpa.json").read_text())["unit"] == "char"

    assert main(["lm", "tune", ckpt, str(rendered["val"]), "--lm", str(arpa), "--alphas", "0,0.5",
                 "--betas", "0,1", "--beam-width", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") >= 6 and "best: alpha" in out
    settings = json.loads((tmp_path / "char.arpa.json").read_text())
    assert settings["alpha"] in (0.0, 0.5) and settings["tuned"]["lines"] == 16

    assert main(["calibrate", ckpt, str(rendered["val"]), "--json", str(tmp_path / "cal.json")]) == 0
    assert "temperature" in capsys.readouterr().out
    assert (tmp_path / "last.ckpt.bak").is_file()
    assert Image.open(tmp_path / "last.reliability.png").size[0] > 400
    model = load(ckpt)
    assert model.temperature == pytest.approx(json.loads((tmp_path / "cal.json").read_text())["temperature"])

    sample = read_dataset(rendered["test"])[0]
    width = Image.open(sample.image).size[0]
    result_file = tmp_path / "r.json"
    assert main(["recognize", ckpt, str(sample.image), "--decoder", "beam", "--lm", str(arpa),
                 "--beam-width", "4", "--nbest", "3", "--json", str(result_file)]) == 0
    (record,) = json.loads(result_file.read_text())
    assert 1 <= len(record["nbest"]) <= 3 and record["nbest"][0]["text"] == record["text"]
    assert len(record["char_positions"]) == len(record["char_confidences"]) == len(record["text"])
    assert all(0 <= x0 <= x1 <= width for x0, x1 in record["char_positions"])
    assert [w["text"] for w in record["words"]] == record["text"].split()

    if importlib.util.find_spec("flashlight") is not None:  # the C++ engine: same record, its own alignment
        assert main(["recognize", ckpt, str(sample.image), "--lm", str(arpa), "--beam-width", "4",
                     "--beam-engine", "flashlight", "--json", str(result_file)]) == 0
        (fast,) = json.loads(result_file.read_text())
        assert fast["nbest"][0]["text"] == fast["text"] and len(fast["char_positions"]) == len(fast["text"])
        assert all(0 <= x0 <= x1 <= width for x0, x1 in fast["char_positions"])
        assert main(["recognize", ckpt, str(sample.image), "--lm", str(arpa), "--lexicon", str(arpa),
                     "--beam-engine", "flashlight"]) == 2
        assert "no lexicon" in capsys.readouterr().err
        assert main(["lm", "tune", ckpt, str(rendered["val"]), "--lm", str(arpa), "--alphas", "0,0.5", "--betas", "0,1",
                     "--beam-width", "4", "--beam-engine", "flashlight", "--no-save"]) == 0
        out = capsys.readouterr().out  # four settings, each decoded by the C++ engine
        assert out.count("\n") >= 6 and "best: alpha" in out
        words = tmp_path / "words.txt"
        assert main(["lm", "lexicon", str(rendered["train"]), "--out", str(words)]) == 0
        assert main(["evaluate", ckpt, str(rendered["test"]), "--compare", "--lm", str(arpa), "--lexicon", str(words),
                     "--beam-width", "4", "--beam-engine", "flashlight"]) == 0
        table = capsys.readouterr().out  # lexicon rows run in Python, the others in flashlight
        assert "flashlight beam 4 + character LM" in table and "beam 4 + char 4-gram LM" in table

    assert main(["evaluate", ckpt, str(rendered["test"]), "--compare", "--lm", str(arpa), "--beam-width", "4"]) == 0
    table = capsys.readouterr().out
    assert "greedy" in table and "beam 4 + char 4-gram LM" in table

    bad = tmp_path / "bad.arpa"
    bad.write_text("\n".join(arpa.read_text().splitlines()[:20]))
    assert main(["recognize", ckpt, str(sample.image), "--lm", str(bad)]) == 2
    assert "bad.arpa:20:" in capsys.readouterr().err
