"""Context-aware T5 correction: page context, noise statistics, gate, training, save/load, CLI."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")

from htrjand.cli import main  # noqa: E402
from htrjand.correction import (ByteTokenizer, CorrectionError, Corrector, Gate, correct_report,  # noqa: E402
                                model_input, neighbours, page_key, report_lines)
from htrjand.config import ConfigError  # noqa: E402
from htrjand.training.corrector import (STATE_FILE, NoiseModel, TrainSettings, edit_blocks,  # noqa: E402
                                      train_corrector)

WORDS = "the old moment summer memory".split()
TINY = {"d_model": 32, "heads": 4, "d_ff": 64, "layers": 2, "dropout": 0.0, "device": "cpu"}
MICRO = {"d_model": 16, "heads": 2, "d_ff": 32, "layers": 1, "batch_size": 4, "val_lines": 2, "eval_every": 0,
         "warmup": 2, "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run several times faster on one thread (and do not fight other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_line(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 3)))


def misread(text: str) -> str:
    """The toy recogniser's systematic error: it always reads 'm' as 'rn'."""
    return text.replace("m", "rn")


def write_toy_data(folder, pages: int = 40, corpus_lines: int = 300, seed: int = 1):
    """An evaluate-style report (4 lines per page) with the systematic error, and a clean text corpus."""
    rng = random.Random(seed)
    lines = []
    for p in range(pages):
        for k in range(4):
            ref = toy_line(rng)
            lines.append({"image": f"lines/toy_page{p}_{k:04d}.jpg", "dataset": "toy", "reference": ref,
                          "hypothesis": misread(ref)})
    report = folder / "report.json"
    report.write_text(json.dumps({"model": {"path": str(folder / "absent.ckpt")}, "lines": lines}), encoding="utf-8")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(toy_line(rng) for _ in range(corpus_lines)), encoding="utf-8")
    return report, corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny corrector trained on the systematic error (report pairs + synthetic noise on the corpus)."""
    root = tmp_path_factory.mktemp("corrector")
    report, corpus = write_toy_data(root)
    settings = TrainSettings(output=str(root / "model"), reports=[str(report)], corpora=[str(corpus)],
                             lr=1e-2, warmup=20, steps=150, batch_size=64, context_chars=0, max_pair_cer=1.0,
                             eval_every=0, gate_abs=6, gate_rel=0.5, **TINY)
    summary = train_corrector(settings)
    return root, summary


def fake_checkpoint(path, charset: str):
    """A valid, untrained recogniser checkpoint with the given charset."""
    from conftest import TINY_MODEL

    from htrjand.checkpoint import atomic_save
    from htrjand.model import ModelConfig
    from htrjand.training.module import HTRModule

    module = HTRModule(model=ModelConfig.from_dict(TINY_MODEL).to_dict(), charset=list(charset))
    atomic_save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                 "epoch": 0, "global_step": 0}, path)
    return path


def page_of_three_lines(folder):
    """An untrained recogniser checkpoint and `folder/test.tsv`: three noise lines of one page."""
    ckpt = fake_checkpoint(folder / "rec.ckpt", "abcdefghijklmnopqrstuvwxyz ")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 200), dtype=np.uint8)).save(folder / f"page1_{i:04d}.png")
        rows.append(f"page1_{i:04d}.png\tthe old moment")
    (folder / "test.tsv").write_text("\n".join(rows) + "\n")
    return ckpt


# ---------------------------------------------------------------- context and page groups

def test_page_keys_and_neighbours_follow_page_groups():
    report = {"lines": [
        {"image": "lines/hooker_JDH_2_16_144_001_0003.jpg", "dataset": "h", "reference": "a", "hypothesis": "one"},
        {"image": "lines/hooker_JDH_2_16_144_001_0004.jpg", "dataset": "h", "reference": "b", "hypothesis": "two"},
        {"image": "lines/hooker_JDH_2_16_147_001_0002.jpg", "dataset": "h", "reference": "c", "hypothesis": "three"},
        {"image": "/data/page.xml:12", "dataset": "p", "reference": "d", "hypothesis": "four"},
        {"image": "/data/page.xml:40", "dataset": "p", "reference": "e", "hypothesis": "five"},
        {"image": "x_0001.png", "dataset": "g", "group": "w1", "reference": "f", "hypothesis": "six"},
        {"image": "y_0007.png", "dataset": "g", "group": "w1", "reference": "g", "hypothesis": "seven"},
        {"image": "z_0001.png", "dataset": "g", "group": "w2", "reference": "h", "hypothesis": "eight"}]}
    lines = report_lines(report)
    keys = [line["key"] for line in lines]
    assert keys[0] == keys[1] != keys[2]  # same page stem; another page
    assert keys[3] == keys[4] != keys[2]  # lines of one PAGE file
    assert keys[5] == keys[6] != keys[7]  # the dataset's group wins over the image name
    assert page_key("a01-000u-00.png", "iam") == page_key("a01-000u-01.png", "iam") != page_key("a01-000x-00.png", "iam")
    context = neighbours([line["hypothesis"] for line in lines], keys)
    assert context == [("", "two"), ("one", ""), ("", ""), ("", "five"), ("four", ""), ("", "seven"), ("six", ""),
                       ("", "")]
    assert model_input("line", "the previous line", "the next line", 5) == "prev:  line | line: line | next: the n"
    assert model_input("line", context_chars=0) == "line: line"


class ScriptedCorrector(Corrector):
    """A Corrector whose 'model' answers from a table: tests the pipeline around generation."""

    def __init__(self, answers: dict[str, str], charset: str, context_chars: int = 8):
        super().__init__(torch.nn.Linear(1, 1), ByteTokenizer(),
                         {"charset": list(charset), "input": {"context_chars": context_chars, "max_length": 64},
                          "gate": {"absolute": 2, "relative": 0.1}})
        self.answers, self.inputs = answers, []

    def generate(self, inputs, max_new_tokens, beams=1):
        texts = [self.tokenizer.decode(x) for x in inputs]
        self.inputs += texts
        return [self.answers[re.search(r"line: (.*?)(?: \| next:|$)", t).group(1)] for t in texts]


def test_correct_uses_context_of_the_same_page_only():
    lines = ["first line of p", "second line", "other page"]
    c = ScriptedCorrector({t: t for t in lines}, "abcdefghijklmnopqrstuvwxyz ")
    assert c.correct(lines, groups=["p", "p", "q"]) == lines
    assert sorted(c.inputs) == sorted(["prev:  | line: first line of p | next: second l",
                                       "prev: ine of p | line: second line | next: ",
                                       "prev:  | line: other page | next: "])


def test_gate_bounds_edits_never_empties_and_keeps_the_charset():
    gate = Gate(absolute=2, relative=0.1)
    assert gate.bound("short") == 2 and gate.bound("x" * 50) == 5
    assert gate.check("the rnan", "the man") == ""  # 2 edits
    assert gate.check("the rnan", "a woman").startswith("edit distance")
    assert gate.check("abc", "") == "empty"
    assert "outside the charset" in gate.check("the rnan", "the män", set("the man"))
    answers = {"the rnan": "the man", "a cat": "", "sorne day": "some dayÿ", "rnuch": "completely different",
               "a dog": "a dog"}
    c = ScriptedCorrector(answers, "abcdefghijklmnopqrstuvwxyz ")
    out = c.correct_detailed(["the rnan", "a cat", "sorne day", "rnuch", "", "a dog"])
    assert [r.status for r in out] == ["accepted", "rejected", "rejected", "rejected", "skipped", "unchanged"]
    assert [r.text for r in out] == ["the man", "a cat", "sorne day", "rnuch", "", "a dog"]
    assert out[1].reason == "empty" and "outside the charset" in out[2].reason and "edit distance" in out[3].reason
    # a looser gate accepts the far correction; a narrower charset rejects what the first accepted
    assert c.correct(["rnuch"], gate=Gate(30, 0.0)) == ["completely different"]
    assert c.correct(["the rnan"], charset="the rna") == ["the rnan"]


# ---------------------------------------------------------------- noise statistics

def test_noise_model_learns_the_recognisers_confusions():
    assert edit_blocks("the man came", "the rnan carne") == [("m", "rn"), ("m", "rn")]
    assert edit_blocks("hello", "helo") == [("l", "")]
    pairs = [(t, misread(t)) for t in ["moment", "some time", "memory", "the old man"]]
    noise = NoiseModel.from_pairs(pairs)
    assert noise.edits == {"m": {"rn": 7}}
    assert noise.sources == {"m": 7} and noise.rate("m") == pytest.approx(7 / 8)
    rng = random.Random(0)
    noisy = [noise.apply("memory of some", rng) for _ in range(200)]
    assert all(n.replace("rn", "m") == "memory of some" for n in noisy)  # only the learnt confusion
    assert 0.8 < sum(n.count("rn") for n in noisy) / (3 * 200) < 0.95
    assert NoiseModel.from_pairs(pairs, 0.0).apply("plain text", rng) == "plain text"
    assert noise.error_rate() == pytest.approx(7 / sum(len(r) for r, _ in pairs))
    based = NoiseModel.from_pairs(pairs, base_rate=0.5, alphabet="xyz")
    assert any(set(based.apply("plain text", rng)) & set("xyz") for _ in range(20))


# ---------------------------------------------------------------- training and round trip

def test_learns_a_systematic_error_and_fixes_held_out_lines(trained):
    root, summary = trained
    assert summary["real_pairs"] > 100 and summary["corpus_lines"] == 300
    assert summary["noise_error_rate"] > 0.05
    corrector = Corrector.load(root / "model")
    rng = random.Random(99)
    held_out = [toy_line(rng) for _ in range(40)]
    hyps = [misread(t) for t in held_out]
    out = corrector.correct_detailed(hyps)
    from rapidfuzz.distance import Levenshtein

    before = sum(Levenshtein.distance(t, h) for t, h in zip(held_out, hyps))
    after = sum(Levenshtein.distance(t, r.text) for t, r in zip(held_out, out))
    assert after < 0.5 * before, (before, after)
    assert sum(r.text == t for r, t in zip(out, held_out)) >= len(held_out) // 3
    assert all(r.status in ("accepted", "unchanged", "rejected") and r.text for r in out)
    meta = json.loads((root / "model" / "corrector.json").read_text())
    assert meta["charset_source"] == "characters seen" and set(meta["charset"]) == set("".join(WORDS) + " rn")
    assert meta["training"]["steps_done"] == 150 and meta["gate"] == {"absolute": 6, "relative": 0.5}


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no native bfloat16")
def test_bf16_training_on_cpu_learns_like_float32(trained, tmp_path):
    """`--precision bf16-mixed` (docs/correction.md: 1.3x faster steps on a CPU with native bfloat16) learns the
    systematic error as the float32 run does and stores float32 weights."""
    root, _ = trained
    report, corpus = write_toy_data(tmp_path)
    settings = TrainSettings(output=str(tmp_path / "bf16"), reports=[str(report)], corpora=[str(corpus)],
                             lr=1e-2, warmup=20, steps=150, batch_size=64, context_chars=0, max_pair_cer=1.0,
                             eval_every=0, gate_abs=6, gate_rel=0.5, precision="bf16-mixed", **TINY)
    train_corrector(settings)
    full = json.loads((root / "model" / "corrector.json").read_text())["training"]["final_loss"]
    half = json.loads((tmp_path / "bf16" / "corrector.json").read_text())["training"]["final_loss"]
    assert half < 1.5 * full + 0.02, (full, half)
    corrector = Corrector.load(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 for p in corrector.model.parameters())
    rng = random.Random(99)
    held_out = [toy_line(rng) for _ in range(40)]
    fixed = corrector.correct([misread(t) for t in held_out])
    assert sum(f == t for f, t in zip(fixed, held_out)) >= len(held_out) // 3
    with pytest.raises(CorrectionError, match="precision 'fp16'"):
        train_corrector(TrainSettings(output=str(tmp_path / "bad"), reports=[str(report)], precision="fp16", **TINY))


def test_save_load_round_trip_gives_identical_outputs(trained, tmp_path):
    root, _ = trained
    a = Corrector.load(root / "model")
    a.save(tmp_path / "copy")
    b = Corrector.load(tmp_path / "copy")
    hyps = [misread(toy_line(random.Random(i))) for i in range(12)]
    assert a.correct(hyps, batch_size=5) == b.correct(hyps, batch_size=3)
    assert a.correct(hyps, beams=2) == b.correct(hyps, beams=2)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert {k: v for k, v in a.meta.items() if k != "path"} == {k: v for k, v in b.meta.items() if k != "path"}


def test_byte_ids_match_byt5():
    from transformers import ByT5Tokenizer

    text = "Québec, 1850 – naïve ∞"
    assert ByteTokenizer().encode(text) == ByT5Tokenizer()(text)["input_ids"]
    assert ByteTokenizer().decode(ByteTokenizer().encode(text) + [0, 0]) == text


def test_resume_continues_exactly(tmp_path):
    report, corpus = write_toy_data(tmp_path, pages=6, corpus_lines=20)
    common = dict(reports=[str(report)], corpora=[str(corpus)], steps=6, save_every=1, dropout=0.1, max_pair_cer=1.0,
                  **{k: v for k, v in MICRO.items() if k != "dropout"})
    train_corrector(TrainSettings(output=str(tmp_path / "straight"), **common))

    class Stop(Exception):
        pass

    def stop_at_3(step, loss):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train_corrector(TrainSettings(output=str(tmp_path / "resumed"), **common), on_step=stop_at_3)
    assert not (tmp_path / "resumed" / "corrector.json").exists()
    train_corrector(TrainSettings(output=str(tmp_path / "resumed"), resume=True, **common))
    a = Corrector.load(tmp_path / "straight").model.state_dict()
    b = Corrector.load(tmp_path / "resumed").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_stops_after_the_step_with_the_state_saved_and_the_resume_is_exact(tmp_path):
    """SIGTERM part-way (no periodic saves): training stops after the step it is in with its state
    saved (StopRequested, exit code 143, naming step and file); the resumed run ends like a straight one."""
    from htrjand.training.faults import StopRequested

    report, corpus = write_toy_data(tmp_path, pages=6, corpus_lines=20)
    common = dict(reports=[str(report)], corpora=[str(corpus)], steps=6, save_every=1000, dropout=0.1,
                  max_pair_cer=1.0, **{k: v for k, v in MICRO.items() if k != "dropout"})
    train_corrector(TrainSettings(output=str(tmp_path / "straight"), **common))

    def terminate_at_3(step, loss):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StopRequested, match=r"stopped by SIGTERM at step 3: .*with --resume continues") as stop:
        train_corrector(TrainSettings(output=str(tmp_path / "resumed"), **common), on_step=terminate_at_3)
    assert stop.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back
    assert torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)["step"] == 3
    train_corrector(TrainSettings(output=str(tmp_path / "resumed"), resume=True, **common))
    a = Corrector.load(tmp_path / "straight").model.state_dict()
    b = Corrector.load(tmp_path / "resumed").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_time_limit_ends_training_and_its_lr_decay_and_carries_over_a_resume(tmp_path):
    """`max_time` stops a run sized for far more steps, with the learning rate decayed to its floor; the
    time spent is kept in the state, so a resume with a longer limit trains only for the difference."""
    report, corpus = write_toy_data(tmp_path, pages=6, corpus_lines=20)
    common = dict(reports=[str(report)], corpora=[str(corpus)], steps=1_000_000, save_every=1000, max_pair_cer=1.0,
                  lr=1e-3, **MICRO)
    first = train_corrector(TrainSettings(output=str(tmp_path / "c"), max_time="2", **common))
    state = torch.load(tmp_path / "c" / STATE_FILE, weights_only=True)
    assert 5 < first["steps"] == state["step"] < 1_000_000
    assert state["scheduler"]["_last_lr"][0] < 0.2 * 1e-3  # decayed with the time (by steps: still at 1e-3)
    assert 2 <= state["seconds"] < 10
    resumed = train_corrector(TrainSettings(output=str(tmp_path / "c"), max_time="4", resume=True, **common))
    seconds = torch.load(tmp_path / "c" / STATE_FILE, weights_only=True)["seconds"]
    assert first["steps"] < resumed["steps"] and 4 <= seconds < state["seconds"] + 10
    assert json.loads((tmp_path / "c" / "corrector.json").read_text())["training"]["steps_done"] == resumed["steps"]
    with pytest.raises(ConfigError, match=r"--max-time: '1h30' is not a time limit"):
        train_corrector(TrainSettings(output=str(tmp_path / "d"), max_time="1h30", **common))


def test_init_from_a_local_t5_folder(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(T5Config(vocab_size=384, d_model=24, d_kv=8, d_ff=48, num_layers=1, num_heads=3,
                                        decoder_start_token_id=0)).save_pretrained(tmp_path / "t5")
    report, corpus = write_toy_data(tmp_path, pages=3, corpus_lines=10)
    summary = train_corrector(TrainSettings(output=str(tmp_path / "c"), reports=[str(report)], init=str(tmp_path / "t5"),
                                            steps=2, **MICRO))
    assert summary["steps"] == 2
    corrector = Corrector.load(tmp_path / "c")
    assert corrector.model.config.d_model == 24 and corrector.tokenizer.kind == "bytes"
    assert len(corrector.correct(["the rnan"])) == 1
    with pytest.raises(CorrectionError, match="--init folder not found"):
        train_corrector(TrainSettings(output=str(tmp_path / "d"), reports=[str(report)], init=str(tmp_path / "no")))


# ---------------------------------------------------------------- bad input

def test_charset_mismatch_is_refused(trained, tmp_path):
    root, _ = trained
    corrector = Corrector.load(root / "model")
    report = json.loads((root / "report.json").read_text())
    report["lines"] = report["lines"][:4]
    assert corrector.charset_conflict("abcdefghijklmnopqrstuvwxyz ") == ""  # a superset is fine
    assert corrector.charset_conflict("the olmn") == ""  # so is a subset
    with pytest.raises(CorrectionError, match="trained for another charset"):
        correct_report(corrector, report, charset="abcdefgÉ")
    ckpt = fake_checkpoint(tmp_path / "other.ckpt", "abcdefgÉ")
    report["model"]["path"] = str(ckpt)
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert main(["corrector", "apply", str(root / "model"), str(tmp_path / "r.json"), "--out",
                 str(tmp_path / "o.json")]) == 2
    assert not (tmp_path / "o.json").exists()


def test_bad_input_gives_clear_errors(trained, tmp_path, capsys, monkeypatch):
    root, _ = trained
    report, _ = write_toy_data(tmp_path, pages=1)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["corrector", "train", str(tmp_path / "m"), "--corpus", str(empty), "--steps", "1"]) == 2
    assert f"{empty}: no usable training lines" in capsys.readouterr().err
    assert main(["corrector", "train", str(tmp_path / "m"), "--corpus", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt: cannot read corpus" in capsys.readouterr().err
    assert main(["corrector", "apply", str(tmp_path / "absent"), str(report), "--out", str(tmp_path / "o.json")]) == 2
    assert "absent: corrector folder not found" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (root / "model").iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["corrector", "apply", str(broken), str(report), "--out", str(tmp_path / "o.json")]) == 2
    assert "broken: cannot load the corrector's weights" in capsys.readouterr().err
    (broken / "corrector.json").write_text("{not json")
    assert main(["corrector", "apply", str(broken), str(report), "--out", str(tmp_path / "o.json")]) == 2
    assert "corrector.json: unreadable corrector description" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"lines": 3}')
    assert main(["corrector", "apply", str(root / "model"), str(tmp_path / "bad.json"), "--out",
                 str(tmp_path / "x.json")]) == 2
    assert "bad.json: not an htrjand report" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(CorrectionError, match=r"pip install 'htrjand\[t5\]'"):
        Corrector.load(root / "model")


# ---------------------------------------------------------------- command line

def test_cli_train_apply_resume_end_to_end(tmp_path, capsys):
    report, corpus = write_toy_data(tmp_path, pages=6, corpus_lines=20)
    out = tmp_path / "corrector"
    micro = [a for k, v in MICRO.items() for a in ("--" + k.replace("_", "-"), str(v))]
    assert main(["corrector", "train", str(out), "--reports", str(report), "--corpus", str(corpus), "--steps", "3",
                 "--save-every", "2", *micro]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and summary["real_pairs"] > 0
    assert {"corrector.json", "config.json", "train_state.pt", "noise.json"} <= {f.name for f in out.iterdir()}
    assert main(["corrector", "train", str(out), "--reports", str(report), "--steps", "3"]) == 2
    assert "already holds a corrector" in capsys.readouterr().err
    assert main(["corrector", "train", str(out), "--reports", str(report), "--corpus", str(corpus), "--steps", "5",
                 "--resume", *micro]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 5
    assert json.loads((out / "corrector.json").read_text())["training"]["steps_done"] == 5

    assert main(["corrector", "apply", str(out), str(report), "--out", str(tmp_path / "c.json"), "--gate-abs", "1",
                 "--gate-rel", "0"]) == 0
    printed = capsys.readouterr().out
    assert "CER % T5" in printed and "toy" in printed
    result = json.loads((tmp_path / "c.json").read_text())
    section = result["correction"]
    assert section["gate"] == {"absolute": 1, "relative": 0.0} and section["lines"] == 24
    assert section["before"]["overall"]["cer"] > 0 and "toy" in section["after"]["datasets"]
    for line in result["lines"]:
        assert line["correction"]["status"] in ("accepted", "unchanged", "rejected")
        if line["correction"]["status"] != "accepted":
            assert line["corrected"] == line["hypothesis"]
    # a recognize --json list is corrected too (no references: no scores)
    listing = [{"image": line["image"], "text": line["hypothesis"]} for line in result["lines"][:3]]
    (tmp_path / "rec.json").write_text(json.dumps(listing))
    assert main(["corrector", "apply", str(out), str(tmp_path / "rec.json"), "--out", str(tmp_path / "rc.json")]) == 0
    assert [set(x) >= {"text", "corrected", "correction"} for x in json.loads((tmp_path / "rc.json").read_text())] == [True] * 3


def test_evaluate_reports_with_and_without_correction(trained, tmp_path, capsys):
    root, _ = trained
    ckpt = page_of_three_lines(tmp_path)
    assert main(["evaluate", str(ckpt), str(tmp_path / "test.tsv"), "--corrector", str(root / "model"),
                 "--json", str(tmp_path / "e.json")]) == 0
    assert "CER % T5" in capsys.readouterr().out
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["correction"]["before"]["overall"] == report["overall"]
    assert report["correction"]["charset_from"] == str(ckpt)
    assert all("corrected" in line and line["group"] == "page1" for line in report["lines"])


def test_compare_reports_every_decoder_with_and_without_correction(trained, tmp_path, capsys):
    """`evaluate --compare --corrector`: greedy and beam side by side, each also after T5, from one
    model run; the corrected figures are the corrector's on that decoder's output."""
    root, _ = trained
    ckpt = page_of_three_lines(tmp_path)
    assert main(["evaluate", str(ckpt), str(tmp_path / "test.tsv"), "--compare", "--corrector", str(root / "model"),
                 "--beam-width", "4", "--json", str(tmp_path / "c.json")]) == 0
    assert "CER % +T5" in capsys.readouterr().out
    report = json.loads((tmp_path / "c.json").read_text())
    assert [r["decoder"] for r in report["decoders"]] == ["greedy", "beam 4"]
    for row in report["decoders"]:
        c = row["corrected"]
        assert c["lines"] == 3 and c["accepted"] + c["rejected"] + c["unchanged"] + c["skipped"] == 3
        assert 0.0 <= c["cer"] and c["lines_per_second"] > 0
