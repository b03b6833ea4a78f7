"""The C++ beam engine (flashlight-text): same answers as the Python beam search, its own alignment, clear errors."""
import numpy as np
import pytest

from htrjand.charset import Charset
from htrjand.decoding import Decoder, DecodingError
from htrjand.lm import LMError, build_lm

from conftest import posterior_frames

pytest.importorskip("flashlight.lib.text.decoder")


def _arpa(tmp_path, lines, order=4, unit="char"):
    lm, stats = build_lm(lines, order, unit)
    path = tmp_path / f"{unit}.arpa"
    lm.write_arpa(path)
    from htrjand.lm import write_sidecar

    write_sidecar(path, stats)
    return path


def test_flashlight_beam_reads_as_the_python_beam_without_lm():
    """Random frames as confident as a trained model's: both searches find the same text (flashlight
    cannot start a line with a space: its first frame continues the separator it puts before the line)."""
    rng = np.random.default_rng(0)
    cs = Charset(list("abcdefgh "))
    python, fast = Decoder(cs, "beam", 8), Decoder.from_options(cs, "beam", beam_width=8, engine="flashlight")
    assert fast.describe() == "flashlight beam 8"
    same = 0
    for _ in range(60):
        z = rng.normal(0, 1, (30, cs.num_classes))
        z[np.arange(30), rng.integers(0, cs.num_classes, 30)] += 5
        a, b = python.decode_line(z), fast.decode_line(z)
        same += a.text.lstrip(" ") == b.text
        # the engine's own alignment: one span per character, in order, inside the frames, and each
        # character's frames are frames where it beats blank or continues it
        assert len(b.char_frames) == len(b.text) == len(b.char_confidences)
        assert all(0 <= t0 < t1 <= 30 for t0, t1 in b.char_frames)
        assert all(p[1] <= q[0] for p, q in zip(b.char_frames, b.char_frames[1:]))
        assert b.nbest[0].text == b.text and b.nbest[0].acoustic < 0
    assert same >= 57


def test_flashlight_character_lm_changes_the_answer(tmp_path):
    cs = Charset(list("aeht "))
    z = posterior_frames(cs, [{"t": .98}, {"": .98}, {"h": .98}, {"": .98}, {"a": .55, "e": .44}, {"": .98}])
    arpa = _arpa(tmp_path, ["the", "the hat", "then the", "the the"])
    with_lm = Decoder.from_options(cs, "beam", 8, lm=arpa, alpha=1.0, beta=0.0, engine="flashlight").decode_line(z)
    assert with_lm.text == "the"
    assert {c.text for c in with_lm.nbest[:2]} == {"the", "tha"} and with_lm.nbest[0].lm > with_lm.nbest[1].lm
    assert with_lm.char_frames == [(0, 1), (2, 3), (4, 5)]
    weak = Decoder.from_options(cs, "beam", 8, lm=arpa, alpha=0.0, beta=0.0, engine="flashlight").decode_line(z)
    assert weak.text == "tha"  # alpha 0: the LM has no say


def test_flashlight_engine_errors(tmp_path, monkeypatch):
    cs = Charset(list("abc "))
    arpa = _arpa(tmp_path, ["ab c", "cab"])
    words = tmp_path / "words.txt"
    words.write_text("ab\n")
    with pytest.raises(DecodingError, match="no lexicon"):
        Decoder.from_options(cs, lm=arpa, lexicon=words, engine="flashlight")
    word_lm = _arpa(tmp_path, ["ab c", "c ab"], 2, "word")
    with pytest.raises(DecodingError, match="word.arpa: the flashlight beam engine takes character LMs only"):
        Decoder.from_options(cs, lm=word_lm, engine="flashlight")
    cut = tmp_path / "cut.arpa"
    cut.write_text("\n".join(arpa.read_text().splitlines()[:12]))
    with pytest.raises(LMError, match="cut.arpa: KenLM"):
        Decoder.from_options(cs, lm=cut, engine="flashlight")
    with pytest.raises(DecodingError, match="beam engine must be python or flashlight"):
        Decoder.from_options(cs, lm=arpa, engine="cuda")
    assert Decoder.from_options(cs, engine="flashlight").kind == "greedy"  # no beam asked: the engine is not used

    import builtins

    real_import = builtins.__import__

    def no_flashlight(name, *args, **kwargs):
        if name == "flashlight" or name.startswith("flashlight."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_flashlight)
    with pytest.raises(DecodingError, match=r"pip install 'htrjand\[flashlight\]'"):
        Decoder.from_options(cs, lm=arpa, engine="flashlight")


def test_flashlight_lm_decoding_of_real_lines_matches_the_python_search(shared_data, tmp_path):
    """The bundled Student on 100 validation lines of each dataset with a character 5-gram of the training
    transcriptions: the LM gains as much with either engine (docs/decoding.md measures all 1182 lines)."""
    import htrjand
    from htrjand.datasets import Problems, read_datasets, spec_of
    from htrjand.evaluation import compare
    from htrjand.lm import corpus_lines

    train = [str(shared_data / d / "train.tsv") for d in ("copiste", "hooker")]
    lm, stats = build_lm(corpus_lines(train, Problems()), 5, "char")
    arpa = tmp_path / "char5.arpa"
    lm.write_arpa(arpa)
    samples = [s for d in ("copiste", "hooker")
               for s in read_datasets([spec_of(str(shared_data / d / "val.tsv"))], Problems())[:100]]
    reader = htrjand.load()
    options = {"lm": arpa, "alpha": 0.7, "beta": 2.0}
    decoders = [reader.make_decoder("greedy"), reader.make_decoder("beam", **options),
                reader.make_decoder("beam", **options, engine="flashlight")]
    greedy, python, fast = (row["cer"] for row in compare(reader, samples, decoders)["decoders"])
    assert python < greedy - 0.02 and fast < greedy - 0.02, (greedy, python, fast)
    assert abs(fast - python) < 0.01, (python, fast)
