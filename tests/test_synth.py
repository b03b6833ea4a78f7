"""Synthetic line generator (htrjand.synth, `htrjand synth`): bundled fonts, glyph coverage, seeded
output, a dataset the readers load, and clear errors for unusable input."""
from __future__ import annotations

import shutil
import string
import subprocess
import sys
import warnings

import numpy as np
import pytest

from htrjand.cli import main
from htrjand.datasets import Problems, read_dataset
from htrjand.images import load_line
from htrjand.synth import (FONTS_DIR, FontWarning, SynthConfig, SynthError, SynthGenerator, build_generator,
                           flow_lines, load_fonts)

TEXTS = ["Dear Sir, the plants arrived at Kew.", "Le duo fondé par Elly Jackson", "My dear Dyer",
         "« Où êtes-vous ? » 17 h 30"]


@pytest.fixture(scope="module")
def fonts():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FontWarning)  # every bundled font loads
        return load_fonts()


def by_key(fonts, key):
    return next(f for f in fonts if f.key == key)


def test_bundled_fonts_load_cover_ascii_and_have_licences(fonts):
    assert len(fonts) >= 30
    needed = string.ascii_letters + string.digits + ".,;:!?'\"()-"
    for font in fonts:
        assert not font.missing(needed), (font.name, font.missing(needed))
    folders = sorted(p for p in FONTS_DIR.iterdir() if p.is_dir())
    table = (FONTS_DIR / "FONTS.md").read_text(encoding="utf-8")
    for folder in folders:
        licence = (folder / "LICENSE").read_text(encoding="utf-8")
        assert "SIL Open Font License" in licence or "Apache License" in licence, folder
        assert f"@fontsource/{folder.name}`" in table, folder
    assert sum(f.stat().st_size for f in FONTS_DIR.rglob("*") if f.is_file()) < 4_000_000


def test_font_lacking_a_character_is_never_chosen(fonts):
    nanum, caveat = by_key(fonts, "nanum-pen"), by_key(fonts, "caveat")
    assert 0xE9 not in set().union(*nanum.cmaps)  # the real font's cmap has no é ...
    assert 0xE9 in set().union(*caveat.cmaps)
    gen = SynthGenerator([nanum, caveat], ["le café", "the cafe"], seed=0, length=16)
    assert gen.fonts_for("le café") == [caveat]
    chosen = {gen._render(t, np.random.default_rng(i))[2].key for i in range(12) for t in ["le café"]}
    assert chosen == {"caveat"}
    assert {gen._render("the cafe", np.random.default_rng(i))[2].key for i in range(12)} == {"nanum-pen", "caveat"}
    only_nanum = SynthGenerator([nanum], ["le café", "the cafe"], seed=0)
    assert only_nanum.texts == ["the cafe"] and sum(only_nanum.report.skipped.values()) == 1
    assert "U+00E9" in only_nanum.report.summary()
    with pytest.raises(SynthError, match="U\\+00E9"):
        only_nanum.render("le café")


def test_glyph_mapped_but_empty_counts_as_missing(fonts):
    italianno = by_key(fonts, "italianno")
    assert 0x5F in set().union(*italianno.cmaps) and "_" in italianno.missing("a_b")  # its `_` has no outline
    assert not SynthGenerator([italianno], ["x"]).fonts_for("snake_case")


def test_broken_font_file_is_skipped_with_a_warning(tmp_path):
    for f in (FONTS_DIR / "caveat").glob("*.woff2"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "broken.ttf").write_bytes(b"\x00\x01\x00\x00 not a font")
    with pytest.warns(FontWarning, match="broken.ttf"):
        loaded = load_fonts(tmp_path)
    assert [f.name for f in loaded] == ["Caveat"] and len(loaded[0].files) == 2
    with pytest.raises(SynthError, match="no usable font"), pytest.warns(FontWarning):
        load_fonts(tmp_path / "broken.ttf")


def test_image_is_light_paper_with_dark_ink_of_the_requested_height(fonts):
    gen = SynthGenerator(fonts, TEXTS, seed=5, height=48, length=8)
    for i in range(len(gen)):
        image, text = gen[i]
        assert image.dtype == np.uint8 and image.ndim == 2 and image.shape[0] == 48
        assert text in TEXTS and image.shape[1] > 2 * 48
        paper = np.median(image)
        assert paper > 150, (i, paper)
        dark = image < paper - 60
        assert 0.005 < dark.mean() < 0.4, (i, dark.mean())
    clean = SynthGenerator(fonts, TEXTS, seed=5, config=SynthConfig(height=32, strength=0))
    image, _ = clean.render("plain text")
    assert image.shape[0] == 32 and np.median(image) > 150 and image.min() < 100


def test_written_dataset_reloads_through_the_readers(fonts, tmp_path):
    gen = SynthGenerator(fonts, TEXTS, seed=2, height=40, length=6)
    done = (tmp_path / "out")
    from htrjand.synth import write_dataset

    summary = write_dataset(gen, done, 6, val_fraction=1 / 3)
    assert (summary["train"], summary["val"]) == (4, 2)
    problems = Problems()
    train = read_dataset(done / "train.tsv", problems)
    val = read_dataset(str(done / "val.tsv"), problems)
    assert not problems.entries and len(train) == 4 and len(val) == 2
    for i, sample in enumerate(train + val):
        assert sample.text == gen[i][1] and sample.text in TEXTS
        assert sample.group in {f.key for f in fonts}  # group = the font (like a writer)
        assert np.array_equal(load_line(sample.image), gen[i][0])  # what was written is line i
    with pytest.raises(SynthError, match="already holds"):
        write_dataset(gen, done, 2)


def test_same_seed_same_bytes_other_seed_other_images(fonts, tmp_path):
    from htrjand.synth import write_dataset

    def files(seed, name):
        write_dataset(SynthGenerator(fonts, TEXTS, seed=seed, height=32), tmp_path / name, 4)
        return {p.name: p.read_bytes() for p in sorted((tmp_path / name / "lines").iterdir())} | {
            "train.tsv": (tmp_path / name / "train.tsv").read_bytes()}

    a, b, c = files(7, "a"), files(7, "b"), files(8, "c")
    assert a == b
    assert a != c and list(a.values())[0] != list(c.values())[0]
    gen = SynthGenerator(fonts, TEXTS, seed=7, height=32, length=4)
    last = gen[3][0]
    assert np.array_equal(SynthGenerator(fonts, TEXTS, seed=7, height=32, length=4)[3][0], last)  # any order


def test_flow_lines_cuts_at_word_boundaries():
    text = [("one two three four five six seven eight nine ten eleven twelve", "a:1"),
            ("thirteen fourteen fifteen", "a:2"), ("incomprehensibilities", "a:3")]
    lines = flow_lines(text, 10, 20, seed=1)
    words = " ".join(t for t, _ in text).split()
    assert " ".join(t for t, _ in lines).split() == words[: len(" ".join(t for t, _ in lines).split())]
    assert all(len(t) <= 20 or " " not in t for t, _ in lines)
    for (line, _), (following, _) in zip(lines, lines[1:]):  # short only where the next word did not fit
        assert len(line) >= 10 or len(line) + 1 + len(following.split()[0]) > 20, (line, following)
    assert lines[0][1] == "a:1" and ("incomprehensibilities", "a:3") in lines


def test_clear_errors_before_rendering(tmp_path, fonts):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(SynthError, match="empty.txt: no text"):
        build_generator([str(empty)])
    cjk = tmp_path / "cjk.txt"
    cjk.write_text("中文\n", encoding="utf-8")
    with pytest.raises(SynthError, match="no line can be drawn.*U\\+4E2D"):
        build_generator([str(cjk)])
    ok = tmp_path / "ok.txt"
    ok.write_text("hello world\n", encoding="utf-8")
    charset = tmp_path / "charset.txt"
    charset.write_text("中文", encoding="utf-8")
    with pytest.raises(SynthError, match="charset.txt: no font draws any character"):
        build_generator([str(ok)], charset=str(charset))
    with pytest.raises(SynthError, match="cannot draw"):
        SynthGenerator(fonts, TEXTS).render("中")


@pytest.mark.parametrize("args, message", [
    (["--text", "{tmp}/empty.txt"], "no text to draw"),
    (["--text", "{tmp}/ok.txt", "--fonts", "{tmp}/nofonts"], "nofonts: no usable font"),
    (["--text", "{tmp}/ok.txt", "--fonts", "{tmp}/missing"], "missing: no such font folder"),
])
def test_cli_errors_exit_2_without_traceback(tmp_path, capsys, args, message):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "ok.txt").write_text("hello\n", encoding="utf-8")
    (tmp_path / "nofonts").mkdir()
    (tmp_path / "nofonts" / "bad.woff2").write_bytes(b"wOF2 broken")
    code = main(["synth", *[a.format(tmp=tmp_path) for a in args], "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    if "nofonts" in args[-1]:
        assert "bad.woff2: cannot load font" in err


def test_cli_writes_a_dataset_without_importing_torch(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("Il est également certain que la fin est proche, dit-il.\n%\nA second line of text.\n",
                    encoding="utf-8")
    code = ("import sys; from htrjand.cli import main; "
            f"rc = main(['synth', '--text', {str(text)!r}, '--lines', '3', '--out', {str(tmp_path / 'out')!r}, "
            "'--height', '32', '--max-chars', '30', '--min-chars', '12', '--val-fraction', '0.34']); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    samples = read_dataset(tmp_path / "out" / "train.tsv") + read_dataset(tmp_path / "out" / "val.tsv")
    assert len(samples) == 3 and all(len(s.text) <= 30 for s in samples)
    assert all(load_line(s.image).shape[0] == 32 for s in samples)


def test_parallel_rendering_writes_the_same_dataset(tmp_path):
    from htrjand.synth import build_generator, write_dataset

    corpus = tmp_path / "c.txt"
    corpus.write_text("one line of text\nune autre ligne\nthird line, 1850\n", encoding="utf-8")
    generator = build_generator([str(corpus)], seed=4)
    generator[0]  # OpenCV's pool used in the parent before the workers fork
    digests = []
    for workers in (1, 3):
        out = tmp_path / f"w{workers}"
        write_dataset(generator, out, 12, workers=workers)
        digests.append([(p.name, p.read_bytes()) for p in sorted((out / "lines").iterdir())]
                       + [(out / "train.tsv").read_bytes()])
    assert digests[0] == digests[1]
