"""N-gram LMs: modified Kneser-Ney training, ARPA round trip, KenLM parity, bad files, lexicons."""
import math

import pytest

from htrjand.charset import Charset
from htrjand.datasets import Problems
from htrjand.lm import (BOS, LMError, Lexicon, NGramLM, build_lm, check_alphabet, corpus_lines, load_lm, read_arpa,
                        tokenize, write_sidecar)

LINES = ["the cat sat on the mat", "the dog sat", "a cat and a dog", "on the mat the cat", "hello world",
         "the cat, the dog."]


def _vocab(lm: NGramLM) -> list[str]:
    return [t for t in lm.vocab if t != BOS]


def test_unigram_probabilities_by_hand():
    # tokens a a b </s>: counts 2, 1, 1; counts-of-counts too sparse -> fallback discounts 0.5, 1, 1.5
    lm, stats = build_lm(["a a b"], 1, "word")
    assert stats["fallback_discounts"] == [1]
    gamma = (0.5 * 2 + 1.0 * 1) / 4  # discounted mass, spread uniformly over a, b, </s>, <unk>
    expected = {"a": (2 - 1.0) / 4 + gamma / 4, "b": (1 - 0.5) / 4 + gamma / 4, "</s>": 0.5 / 4 + gamma / 4,
                "<unk>": gamma / 4}
    for token, p in expected.items():
        assert 10 ** lm.table[(token,)][0] == pytest.approx(p, abs=1e-9)


def test_modified_kneser_ney_discounts_from_counts_of_counts():
    from collections import Counter

    from htrjand.lm import _discounts

    counts = Counter({f"g{i}": c for i, c in enumerate([1] * 10 + [2] * 5 + [3] * 3 + [4] * 2 + [7] * 4)})
    (d1, d2, d3), valid = _discounts(counts)
    y = 10 / (10 + 2 * 5)  # n1 = 10, n2 = 5, n3 = 3, n4 = 2 (counts above 4 do not enter)
    assert valid and (d1, d2, d3) == pytest.approx((1 - 2 * y * 5 / 10, 2 - 3 * y * 3 / 5, 3 - 4 * y * 2 / 3))


def test_lower_orders_use_continuation_counts():
    # 'c' is frequent but follows few different tokens; 'b' is rarer but follows many
    lm, _ = build_lm(["a b", "d b", "e b", "c c c c c c"], 2, "word")
    assert lm.table[("b",)][0] > lm.table[("c",)][0]
    assert lm.score(("c",), "c")[0] > lm.score(("c",), "b")[0]  # but after 'c', 'c' is what was seen


@pytest.mark.parametrize("unit,order", [("char", 5), ("word", 3), ("char", 1)])
def test_each_context_sums_to_one(unit, order):
    lm, _ = build_lm(LINES, order, unit)
    contexts = [lm.begin(), ("t", "h"), ("x", "y", "z"), ("<space>",), ("a",)] if unit == "char" else \
        [lm.begin(), ("the",), ("unseen",), ("the", "cat"), ("dog", "sat")]
    for context in contexts:
        context = context[-(order - 1):] if order > 1 else ()
        total = sum(10 ** lm.score(context, w)[0] for w in _vocab(lm))
        assert total == pytest.approx(1.0, abs=1e-6), context


@pytest.mark.parametrize("unit,order", [("char", 6), ("word", 3)])
def test_arpa_round_trip_keeps_probabilities(tmp_path, unit, order):
    lm, _ = build_lm(LINES, order, unit)
    path = tmp_path / "lm.arpa"
    lm.write_arpa(path)
    again = read_arpa(path)
    assert again.order == order and again.unit == unit and set(again.table) == set(lm.table)
    for g, (logp, bo) in lm.table.items():
        assert again.table[g][0] == pytest.approx(logp, abs=1e-6) and again.table[g][1] == pytest.approx(bo, abs=1e-6)
    for text in ["the cat sat", "a zebra sat on the mat", "xyz"]:
        tokens = tokenize(text, unit)
        assert again.sentence_logprob(tokens) == pytest.approx(lm.sentence_logprob(tokens), abs=1e-5)
    assert lm.sentence_logprob(tokenize("the cat sat", unit)) > lm.sentence_logprob(tokenize("sat cat the", unit))


def test_kenlm_scores_our_arpa_identically(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    for unit, order in (("char", 4), ("word", 3)):
        lm, _ = build_lm(LINES, order, unit)
        path = tmp_path / f"{unit}.arpa"
        lm.write_arpa(path)
        model = kenlm.Model(str(path))
        for text in ["the cat sat", "hello dog sat", "zebra the", "a"]:
            tokens = tokenize(text, unit)
            assert model.score(" ".join(tokens), bos=True, eos=True) == pytest.approx(lm.sentence_logprob(tokens),
                                                                                     abs=1e-4)
        wrapped, _ = load_lm(path, "kenlm")
        state, total = wrapped.begin(), 0.0
        for tok in tokenize("the cat", unit):
            logp, state = wrapped.score(state, tok)
            total += logp
        assert total + wrapped.end(state) == pytest.approx(lm.sentence_logprob(tokenize("the cat", unit)), abs=1e-4)


def test_bad_arpa_files_name_file_and_line(tmp_path):
    lm, _ = build_lm(LINES, 3, "word")
    good = tmp_path / "good.arpa"
    lm.write_arpa(good)
    lines = good.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if line == "\\2-grams:") + 5
    truncated = tmp_path / "truncated.arpa"
    truncated.write_text("\n".join(lines[:cut]) + "\n")
    with pytest.raises(LMError, match=r"truncated\.arpa:\d+: the file ends after 4 2-grams"):
        read_arpa(truncated)
    bad = tmp_path / "bad.arpa"
    bad.write_text("\n".join(line.replace("-", "x", 1) if i == cut else line for i, line in enumerate(lines)))
    with pytest.raises(LMError, match=rf"bad\.arpa:{cut + 1}: probability or backoff is not a number"):
        read_arpa(bad)
    (tmp_path / "plain.arpa").write_text("just some text\n")
    with pytest.raises(LMError, match="plain.arpa: no \\\\data\\\\ header"):
        read_arpa(tmp_path / "plain.arpa")
    no_end = tmp_path / "noend.arpa"
    no_end.write_text("\n".join(lines[:-1]).rstrip("\\end") + "\n")
    with pytest.raises(LMError, match="noend.arpa:.*end"):
        read_arpa(no_end)
    (tmp_path / "model.bin").write_bytes(b"mmap lm http://kheafield.com/code format version 5\0\0")
    with pytest.raises(LMError, match="model.bin: this is a KenLM binary file"):
        read_arpa(tmp_path / "model.bin")
    with pytest.raises(LMError, match="missing.arpa: language model not found"):
        load_lm(tmp_path / "missing.arpa")


def test_alphabet_and_unit_mismatches_are_refused(tmp_path):
    latin = Charset(list("abcdefghijklmnopqrstuvwxyz .,"))
    greek, _ = build_lm(["αβγ δεζ ηθι κλμ", "νξο πρσ τυφ χψω"], 3, "char")
    with pytest.raises(LMError, match="alphabet does not match the model: 24 of 25 LM characters"):
        check_alphabet(greek, latin, "greek.arpa")
    words, _ = build_lm(LINES, 2, "word")
    assert check_alphabet(words, latin, "words.arpa") == []
    chars, _ = build_lm(LINES, 3, "char")
    warnings = check_alphabet(chars, latin, "chars.arpa")
    assert len(warnings) == 1 and "get its <unk> probability" in warnings[0]
    # a word LM written where the sidecar says char
    path = tmp_path / "words.arpa"
    words.write_arpa(path)
    write_sidecar(path, {"unit": "char"})
    with pytest.raises(LMError, match="unit mismatch: words.arpa.json says char"):
        load_lm(path, "python")
    # a character LM used as a word LM
    letters = "abcdefghijklmnopqrstuvwxyz"
    many, _ = build_lm([" ".join(letters[i:] + letters[:i]) for i in range(26)], 2, "char")
    many.unit = "word"
    with pytest.raises(LMError, match="unit mismatch: this looks like a character LM"):
        check_alphabet(many, latin, "chars.arpa")


def test_lexicon_matching_and_errors(tmp_path):
    lex = Lexicon(["The", "cat", "don't"])
    assert lex.word_ok("the") and lex.word_ok("THE") and lex.word_ok("cat,") and lex.word_ok('"cat".')
    assert lex.word_ok("don't") and lex.word_ok("1851") and lex.word_ok("--")
    assert not lex.word_ok("cats") and not lex.word_ok("ca")
    assert lex.prefix_ok("ca") and lex.prefix_ok("cat.") and lex.prefix_ok("(th") and lex.prefix_ok("12")
    assert not lex.prefix_ok("cx") and not lex.prefix_ok("cat.x")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(LMError, match="empty.txt: lexicon is empty"):
        Lexicon.load(empty)
    counts = tmp_path / "words.txt"
    counts.write_text("the 120\ncat\t7\n")
    assert Lexicon.load(counts).words == {"the", "cat"}
    counts.write_text('"Dyer,"\n(1851)\n--\n')  # stored as matched: 'Dyer,' is the word 'dyer'
    assert Lexicon.load(counts).words == {"dyer"} and Lexicon.load(counts).word_ok("Dyer.")
    counts.write_text("1851\n--\n")
    with pytest.raises(LMError, match="words.txt: lexicon is empty"):
        Lexicon.load(counts)
    with pytest.raises(LMError, match="none of the lexicon's 2 words can be written"):
        Lexicon(["αβ", "γδ"], "greek.txt").check(Charset(list("abc")))


def test_lexicon_matches_elisions_and_compounds_from_their_parts():
    lex = Lexicon(["l", "homme", "peut", "être", "qu", "il", "can't"])
    assert lex.word_ok("l'homme") and lex.word_ok("L’Homme,") and lex.word_ok("peut-être") and lex.word_ok("qu'il")
    assert lex.word_ok("can't") and not lex.word_ok("won't")  # a whole word in the list still matches as such
    assert not lex.word_ok("l'hxmme") and not lex.word_ok("x'homme") and not lex.word_ok("peut-xtre")
    assert lex.prefix_ok("l'hom") and lex.prefix_ok("l'") and lex.prefix_ok("peut-") and lex.prefix_ok("l'homme,")
    assert not lex.prefix_ok("l'hx") and not lex.prefix_ok("x'ho")


def test_cli_lexicon_adds_a_languages_frequent_words_from_wordfreq(tmp_path, capsys):
    from htrjand.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("Hooker wrote to Dyer\nthe seeds\n", encoding="utf-8")
    out = tmp_path / "words.txt"
    assert main(["lm", "lexicon", str(corpus), "--wordfreq", "en:300", "--wordfreq", "fr:300", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 words (of 6 distinct) from the texts" in printed and "more from wordfreq en:300" in printed
    words = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert words[:6] == ["Dyer", "Hooker", "seeds", "the", "to", "wrote"]  # the texts' words first
    assert len(words) == len({w.lower() for w in words}) and 500 < len(words) <= 606  # no word twice
    lexicon = Lexicon.load(out)
    assert lexicon.word_ok("Hooker") and lexicon.word_ok("which") and lexicon.word_ok("avec")
    assert lexicon.word_ok("l'homme") and not lexicon.word_ok("xqzw")  # French elisions from the split list
    # a language alone is enough; mistakes are named
    assert main(["lm", "lexicon", "--wordfreq", "en:50", "--out", str(tmp_path / "en.txt")]) == 0
    assert len((tmp_path / "en.txt").read_text(encoding="utf-8").split()) >= 45
    assert main(["lm", "lexicon", "--wordfreq", "xx", "--out", str(tmp_path / "x.txt")]) == 2
    assert "no word list for 'xx'" in capsys.readouterr().err
    assert main(["lm", "lexicon", "--wordfreq", "en:lots", "--out", str(tmp_path / "x.txt")]) == 2
    assert "LANG:N" in capsys.readouterr().err
    assert main(["lm", "lexicon", "--out", str(tmp_path / "x.txt")]) == 2
    assert "give texts or datasets, --wordfreq LANG, or both" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()


def test_corpus_lines_reads_text_files_and_manifests(tmp_path):
    (tmp_path / "a.txt").write_text("first  line\n\nsecond\u00a0line\n", encoding="utf-8")
    (tmp_path / "b").write_text("plain text without suffix\n", encoding="utf-8")
    manifest = tmp_path / "m.tsv"
    manifest.write_text("x.png\tfrom e\u0301 manifest\nno tab here\n", encoding="utf-8")
    problems = Problems()
    lines = corpus_lines([str(tmp_path / "a.txt"), f"text:{tmp_path / 'b'}", str(manifest)], problems)
    assert lines == ["first line", "second line", "plain text without suffix", "from \u00e9 manifest"]
    assert [e[1].endswith("m.tsv:2") for e in problems.entries] == [True]
    assert math.isfinite(build_lm(lines, 3, "char")[0].sentence_logprob(tokenize("first", "char")))


def test_cli_lexicon_writes_the_corpus_words_most_frequent_first(tmp_path, capsys):
    from htrjand.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    out = tmp_path / "lex" / "words.txt"
    assert main(["lm", "lexicon", str(corpus), "--out", str(out), "--min-count", "2"]) == 0
    assert "7 words (of 10 distinct) from the texts" in capsys.readouterr().out
    words = out.read_text(encoding="utf-8").split()
    # counted as the decoder matches them: 'the' x6, 'cat' x4 (with 'cat,'), 'dog' x3 (with 'dog.'), then by name
    assert words == ["the", "cat", "dog", "a", "mat", "on", "sat"]
    lexicon = Lexicon.load(out)  # the file is a lexicon the decoder reads
    assert lexicon.word_ok("The") and not lexicon.word_ok("hello")
    assert main(["lm", "lexicon", str(corpus), "--out", str(tmp_path / "none.txt"), "--min-count", "99"]) == 2
    assert "c.txt: no word occurs 99 times or more" in capsys.readouterr().err
    assert not (tmp_path / "none.txt").exists()
