import pytest

from htrjand.charset import BLANK, Charset, normalize_text
from htrjand.metrics import ErrorCounter, ErrorTotals, cer, wer


def test_charset_built_by_frequency_and_round_trips():
    cs = Charset.from_texts(["abba", "cab"])
    assert cs.chars == ["a", "b", "c"]
    assert cs.num_classes == 4
    labels = cs.encode("cab")
    assert BLANK not in labels and cs.decode(labels) == "cab"


def test_greedy_decoding_merges_repeats_drops_blanks_and_scores():
    import torch

    from htrjand.decoding import greedy_decode

    cs = Charset(list("lo"))
    l, o = cs.encode("l")[0], cs.encode("o")[0]
    frames = [0, l, l, 0, l, o, o, 0, 0, l]  # the last frame is beyond the line's length
    logits = torch.full((1, len(frames), cs.num_classes), -10.0)
    for t, f in enumerate(frames):
        logits[0, t, f] = 10.0
    logits[0, 5, o], logits[0, 5, 0] = 0.6, 0.5  # an uncertain first frame of 'o'; its second is certain
    (decoded,) = greedy_decode(logits, torch.tensor([9]), cs)
    assert decoded.text == "llo"
    assert decoded.char_frames == [(1, 3), (4, 5), (5, 7)]
    assert min(decoded.char_confidences) > 0.99 and 0.99 < decoded.confidence <= 1.0
    (empty,) = greedy_decode(torch.zeros(1, 4, cs.num_classes), torch.tensor([4]), cs)
    assert empty.text == "" and empty.confidence == pytest.approx(1 / 3)


def test_unknown_characters_are_counted_not_dropped():
    cs = Charset(list("abc "))
    assert cs.unknown("abcxx y") == {"x": 2, "y": 1}
    with pytest.raises(KeyError, match="'x'"):
        cs.encode("ax")
    assert cs.encode("ax", skip_unknown=True) == cs.encode("a")


def test_nfc_and_whitespace_normalisation():
    decomposed = "e\u0301te\u0301"  # é as e + combining acute
    assert normalize_text(f"  {decomposed}\t\n  x ") == "\u00e9t\u00e9 x"
    cs = Charset.from_texts([decomposed])
    assert "\u00e9" in cs and "\u0301" not in cs


def test_charset_rejects_duplicates():
    with pytest.raises(ValueError):
        Charset(["a", "a"])


def test_cer_wer_hand_computed():
    # kitten -> sitting: 3 edits over 6 reference characters
    assert cer(["kitten"], ["sitting"]) == pytest.approx(3 / 6)
    # corpus level: (1 + 0) / (4 + 4), not the mean of line CERs
    assert cer(["abcd", "efgh"], ["abxd", "efgh"]) == pytest.approx(1 / 8)
    assert cer(["ab", "cdefghij"], ["", "cdefghij"]) == pytest.approx(2 / 10)
    # words: one substitution and one deletion over 4 reference words
    assert wer(["the cat sat down"], ["the bat sat"]) == pytest.approx(2 / 4)
    assert cer(["same"], ["same"]) == 0.0


def test_scoring_normalises_unicode_before_comparing():
    assert cer(["\u00e9t\u00e9"], ["e\u0301te\u0301"]) == 0.0


def test_error_counter_per_dataset():
    counter = ErrorCounter()
    counter.add("abc", "abd", "x")
    counter.add("hello world", "hello world", "y")
    assert counter.per_dataset["x"].cer == pytest.approx(1 / 3)
    assert counter.per_dataset["y"].cer == 0.0
    assert counter.total.cer == pytest.approx(1 / 14)
    assert counter.total.wer == pytest.approx(1 / 3)
    assert ErrorTotals().cer == 0.0


def test_character_errors_split_into_substitutions_deletions_insertions():
    t = ErrorTotals()
    t.add("the cat", "tha ct")  # e->a substituted, a deleted
    t.add("dog", "dogs")  # s inserted
    assert (t.substitutions, t.deletions, t.insertions) == (1, 1, 1)
    assert t.char_errors == 3 == t.substitutions + t.deletions + t.insertions
    assert t.confusions == {("e", "a"): 1, ("a", ""): 1, ("", "s"): 1}
    t.add("cat", "ct")
    d = t.as_dict(confusions=1)
    assert d["confusions"] == [["a", "", 2]] and d["deletions"] == 2
    assert "confusions" not in t.as_dict()


def test_evaluation_report_shows_errors_by_kind_and_top_confusions():
    from htrjand.evaluation import format_report

    counter = ErrorCounter()
    counter.add("never", "neer", "hooker")
    counter.add("rover", "rorer", "hooker")
    header, _, row, total, confusions = format_report(counter.as_dict(confusions=5)).splitlines()
    assert header.split()[-3:] == ["sub", "del", "ins"]
    assert row.split()[-3:] == ["1", "1", "0"] and total.split()[0] == "all"
    assert "'v'->'' 1" in confusions and "'v'->'r' 1" in confusions
