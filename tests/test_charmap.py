"""Character standardisation: the built-in table, mapping files, per-dataset tables, clear errors."""
import pytest

from htrjand.charmap import DEFAULT_TABLE, CharMapping, MappingError


def test_default_table_folds_variants():
    m = CharMapping.load("default")
    assert m.apply("“Hello” — it’s ſo ﬁne…") == '"Hello" - it\'s so fine...'
    assert m.apply("e\u0301t\u00e9") == "\u00e9t\u00e9"  # NFC first: the combining accent composes
    assert m.apply("soft\u00adhyphen  and\u200bzero") == "softhyphen andzero"
    assert m.apply("«guillemets» stay") == "«guillemets» stay"  # letters/punctuation of a language are kept
    assert CharMapping.load("none").apply("“x”") == "“x”"


def test_changes_are_listed_in_order():
    text, changes = CharMapping.load("default").apply_with_changes("a–b ‘c’")
    assert text == "a-b 'c'" and changes == [("–", "-"), ("‘", "'"), ("’", "'")]


def test_mapping_file_with_datasets_keep_and_longest_match(tmp_path):
    f = tmp_path / "map.yaml"
    f.write_text('base: default\nmap: {"&": "et", "ct": "X", "c": "k"}\nkeep: ["—"]\n'
                 'datasets: {hooker: {"^": ""}}\n', encoding="utf-8")
    m = CharMapping.load(f)
    assert m.apply("a & b — act c") == "a et b — aX k"  # "ct" wins over "c"; the em dash is kept
    assert m.apply("^an insertion", "hooker") == "an insertion"
    assert m.apply("^an insertion", "copiste") == "^an insertion"
    assert CharMapping.from_dict(m.to_dict()).apply("^a&", "hooker") == m.apply("^a&", "hooker")
    assert m.table["’"] == DEFAULT_TABLE["’"]


@pytest.mark.parametrize("content, message", [
    ("base: fancy\n", "base must be one of"),
    ("map: [1, 2]\n", "must map characters"),
    ("colour: red\n", "unknown keys colour"),
    ("map: {a: 3}\n", "must map a non-empty string to a string"),
    ("map: {a: [\n", "not valid YAML"),
])
def test_bad_mapping_files_name_the_file(tmp_path, content, message):
    f = tmp_path / "bad.yaml"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(MappingError, match=message) as err:
        CharMapping.load(f)
    assert str(f) in str(err.value)
    with pytest.raises(MappingError, match="not found"):
        CharMapping.load(tmp_path / "missing.yaml")
