"""RIMES (ICDAR 2011 XML and RIMES-2011-Lines) and ICFHR 2014 Bentham readers on fixtures laid out
like the real distributions."""
import numpy as np
import pytest
from PIL import Image

from htrjand.datasets import DataError, Problems, detect_format, read_dataset
from htrjand.images import load_line

# --- RIMES, ICDAR 2011 line competition XML ------------------------------------------------------

TRAIN_XML = """\
<?xml version="1.0" encoding="utf-8"?>
<DocumentList>
 <SinglePage FileName="images/train2011-9.png" Index="0">
\t<Paragraph Value="Je vous adresse ce courrier afin\\nd&apos;obtenir un devis."><Line Bottom="30" Left="10" Right="110" Top="8" Value="Je vous adresse  ce courrier afin" /><Line Bottom="62" Left="-4" Right="90" Top="36" Value="d&apos;obtenir ¤un¤ devis." /></Paragraph>
 </SinglePage>
 <SinglePage FileName="images/train2011-10.png" Index="0">
\t<Paragraph Value="Madame, Monsieur,">
\t\t<Line Bottom="40" Left="20" Right="100" Top="12" Value="Madame, Monsieur," />
\t\t<Line Left="20" Right="100" Top="44" Value="no bottom" />
\t</Paragraph>
 </SinglePage>
 <SinglePage FileName="images/train2011-11.png" Index="0">
\t<Paragraph Value="x"><Line Bottom="30" Left="10" Right="110" Top="8" Value="page image missing" /></Paragraph>
 </SinglePage>
</DocumentList>
"""
EVAL_XML = """\
<?xml version="1.0" encoding="utf-8"?>
<DocumentList>
 <SinglePage FileName="images/eval2011-0.png" Index="0">
\t<Paragraph Value="Veuillez agréer"><Line Bottom="50" Left="5" Right="115" Top="20" Value="Veuillez agréer, Madame, Monsieur, mes salutations." /></Paragraph>
 </SinglePage>
</DocumentList>
"""


def _page(seed: int, h: int = 80, w: int = 120) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


@pytest.fixture
def rimes_xml(tmp_path):
    root = tmp_path / "RIMES"
    (root / "images_gray").mkdir(parents=True)  # training_2011_gray.tar
    (root / "eval_2011" / "images").mkdir(parents=True)  # eval_2011.tar unpacked in its own folder
    (root / "training_2011.xml").write_text(TRAIN_XML, encoding="utf-8")
    (root / "eval_2011_annotated.xml").write_text(EVAL_XML, encoding="utf-8")
    Image.fromarray(_page(9)).save(root / "images_gray" / "train2011-9.png")
    Image.fromarray(_page(10)).save(root / "images_gray" / "train2011-10.png")
    Image.fromarray(_page(0)).save(root / "eval_2011" / "images" / "eval2011-0.png")
    return root


def _window(page: np.ndarray, left: int, top: int, right: int, bottom: int) -> np.ndarray:
    """The region crop_line cuts for a box: 3 pixels of margin, clipped to the page."""
    return page[max(top - 3, 0): bottom + 4, max(left - 3, 0): right + 4]


def test_rimes_xml_lines_are_cut_from_their_pages(rimes_xml):
    assert detect_format(rimes_xml) == "rimes"
    problems = Problems()
    samples = read_dataset(rimes_xml, problems)
    assert [s.text for s in samples] == [
        "Je vous adresse ce courrier afin", "d'obtenir un devis.", "Madame, Monsieur,",
        "Veuillez agréer, Madame, Monsieur, mes salutations."]
    assert [s.line_id for s in samples] == ["train2011-9_000001", "train2011-9_000002", "train2011-10_000001",
                                             "eval2011-0_000001"]
    assert [s.group for s in samples] == ["train2011-9", "train2011-9", "train2011-10", "eval2011-0"]
    first, second = samples[0], samples[1]
    assert first.image == rimes_xml / "images_gray" / "train2011-9.png"
    assert first.crop.bounds == (10, 8, 110, 30) and second.crop.bounds == (0, 36, 90, 62)  # Left=-4 clamped
    np.testing.assert_array_equal(load_line(first.image, first.crop), _window(_page(9), 10, 8, 110, 30))
    np.testing.assert_array_equal(load_line(second.image, second.crop), _window(_page(9), 0, 36, 90, 62))
    np.testing.assert_array_equal(load_line(samples[3].image, samples[3].crop), _window(_page(0), 5, 20, 115, 50))
    train = rimes_xml / "training_2011.xml"
    assert first.source == f"{train}:4"
    assert [(k, w) for k, w, _ in problems.entries] == [("malformed record", f"{train}:9"),
                                                        ("missing image", f"{train}:12")]
    assert "Bottom" in problems.entries[0][2] and "train2011-11.png" in problems.entries[1][2]


def test_rimes_xml_splits(rimes_xml):
    assert [s.group for s in read_dataset(f"rimes:{rimes_xml}?split=train")] == ["train2011-9"] * 2 + ["train2011-10"]
    assert [s.group for s in read_dataset(f"rimes:{rimes_xml}?split=test")] == ["eval2011-0"]
    with pytest.raises(DataError, match="no validation set; set val_pages=N"):
        read_dataset(f"rimes:{rimes_xml}?split=val")
    # the last pages by number (9 < 10 < 11, not by text), counting pages whose lines were skipped
    assert [s.group for s in read_dataset(f"rimes:{rimes_xml}?split=val&val_pages=2")] == ["train2011-10"]
    assert [s.group for s in read_dataset(f"rimes:{rimes_xml}?split=train&val_pages=2")] == ["train2011-9"] * 2
    with pytest.raises(DataError, match="RIMES has no split 'dev'"):
        read_dataset(f"rimes:{rimes_xml}?split=dev")
    (rimes_xml / "eval_2011_annotated.xml").unlink()  # only the training half at hand
    assert len(read_dataset(rimes_xml)) == 3
    with pytest.raises(DataError, match="eval_2011_annotated.xml not found"):
        read_dataset(f"rimes:{rimes_xml}?split=test")


def test_rimes_xml_prefers_the_patched_training_file_and_reads_one_file(rimes_xml):
    (rimes_xml / "training_2011.patched.xml").write_text(TRAIN_XML.replace("Madame, Monsieur,", "Monsieur,"),
                                                         encoding="utf-8")
    assert "Monsieur," in [s.text for s in read_dataset(f"rimes:{rimes_xml}?split=train")]
    one = rimes_xml / "eval_2011_annotated.xml"
    assert detect_format(one) == "rimes"
    assert [s.line_id for s in read_dataset(one)] == ["eval2011-0_000001"]
    with pytest.raises(DataError, match="give the RIMES folder"):
        read_dataset(f"rimes:{one}?split=test")
    (rimes_xml / "broken.xml").write_text("<DocumentList><SinglePage FileName='a.png'>\n</DocumentList>")
    with pytest.raises(DataError, match=r"broken\.xml:2: malformed XML"):
        read_dataset(f"rimes:{rimes_xml / 'broken.xml'}")


# --- RIMES-2011-Lines (Teklia) -------------------------------------------------------------------

LINES = {
    "train2011-9_000001": "Je vous adresse ce courrier afin\n",
    "train2011-9_000002": "d'obtenir  un devis.",
    "train2011-10_000001": "Madame, Monsieur,",
    "eval2011-0_000001": "Veuillez agréer, Madame, Monsieur,",
}


def _line_pixels(k: int) -> np.ndarray:
    arr = np.full((32, 90 + 10 * k), 255, np.uint8)
    arr[8:24, 6:-6] = 30 * k
    return arr


@pytest.fixture
def rimes_lines(tmp_path):
    root = tmp_path / "rimes" / "RIMES-2011-Lines"
    for sub in ("Images", "Transcriptions", "Sets"):
        (root / sub).mkdir(parents=True)
    for k, (line_id, text) in enumerate(LINES.items()):
        Image.fromarray(_line_pixels(k)).save(root / "Images" / f"{line_id}.jpg", quality=95)
        (root / "Transcriptions" / f"{line_id}.txt").write_text(text, encoding="utf-8")
    (root / "Sets" / "TrainLines.txt").write_text("train2011-9_000001\ntrain2011-9_000002\n")
    (root / "Sets" / "ValidationLines.txt").write_text("train2011-10_000001\n")
    (root / "Sets" / "TestLines.txt").write_text("eval2011-0_000001\neval2011-0_000009\n")
    return root


def test_rimes_lines_layout(rimes_lines):
    parent = rimes_lines.parent
    assert detect_format(parent) == "rimes" and detect_format(rimes_lines) == "rimes"
    samples = read_dataset(parent)
    assert {s.line_id: s.text for s in samples} == {
        "train2011-9_000001": "Je vous adresse ce courrier afin", "train2011-9_000002": "d'obtenir un devis.",
        "train2011-10_000001": "Madame, Monsieur,", "eval2011-0_000001": "Veuillez agréer, Madame, Monsieur,"}
    by_id = {s.line_id: s for s in samples}
    assert by_id["train2011-10_000001"].group == "train2011-10"
    for k, line_id in enumerate(LINES):
        s = by_id[line_id]
        assert s.source == str(rimes_lines / "Transcriptions" / f"{line_id}.txt")
        got = load_line(s.image, s.crop).astype(int)
        assert got.shape == _line_pixels(k).shape and np.abs(got - _line_pixels(k)).mean() < 3  # JPEG


def test_rimes_lines_splits_report_unknown_ids(rimes_lines):
    assert [s.line_id for s in read_dataset(f"rimes:{rimes_lines}?split=train")] == \
        ["train2011-9_000001", "train2011-9_000002"]
    assert [s.line_id for s in read_dataset(f"rimes:{rimes_lines}?split=validation")] == ["train2011-10_000001"]
    (rimes_lines / "Images" / "train2011-9_000002.jpg").unlink()
    problems = Problems()
    assert [s.line_id for s in read_dataset(f"rimes:{rimes_lines}?split=test", problems)] == ["eval2011-0_000001"]
    read_dataset(f"rimes:{rimes_lines}?split=train", problems)
    assert [(k, w) for k, w, _ in problems.entries] == [
        ("unknown split id", f"{rimes_lines / 'Sets' / 'TestLines.txt'}:2"),
        ("missing image", str(rimes_lines / "Transcriptions" / "train2011-9_000002.txt"))]


# --- Bentham ------------------------------------------------------------------------------------

BENTHAM = {
    "002_080_001_01_01": "6 . The evidence of the engagement , consigned to a portable\n",
    "002_080_001_01_02": "Lords &amp; Commons <gap/> &c.",
    "116_649_001_03_24": "the &quot;Panopticon&quot; plan",
    "071_052_004_02_05": "of the Judge",
}


@pytest.fixture
def bentham(tmp_path):
    root = tmp_path / "bentham" / "BenthamDatasetR0-GT"
    for sub in ("Images/Lines", "Images/Pages", "Transcriptions", "Partitions", "PAGE"):
        (root / sub).mkdir(parents=True)
    for k, (line_id, text) in enumerate(BENTHAM.items()):
        Image.fromarray(_line_pixels(k)).save(root / "Images" / "Lines" / f"{line_id}.png")
        (root / "Transcriptions" / f"{line_id}.txt").write_text(text, encoding="utf-8")
    (root / "Partitions" / "TrainLines.lst").write_text("002_080_001_01_01\n002_080_001_01_02\n")
    (root / "Partitions" / "ValidationLines.lst").write_text("116_649_001_03_24\n")
    (root / "Partitions" / "TestLines.lst").write_text("071_052_004_02_05\n999_001_001_01_01\n")
    (root / "Partitions" / "Train.lst").write_text("002_080_001\n")  # page lists exist too
    return root


def test_bentham_reads_lines_with_page_groups_and_pixels(bentham):
    parent = bentham.parent
    assert detect_format(parent) == "bentham" and detect_format(bentham) == "bentham"
    problems = Problems()
    samples = read_dataset(parent, problems)
    assert not problems.entries
    assert {s.line_id: s.text for s in samples} == {
        "002_080_001_01_01": "6 . The evidence of the engagement , consigned to a portable",
        "002_080_001_01_02": "Lords & Commons &c.",
        "116_649_001_03_24": 'the "Panopticon" plan',
        "071_052_004_02_05": "of the Judge"}
    assert {s.line_id: s.group for s in samples}["116_649_001_03_24"] == "116_649_001"
    for k, line_id in enumerate(BENTHAM):
        s = next(s for s in samples if s.line_id == line_id)
        assert s.dataset == "bentham" and s.source == str(bentham / "Transcriptions" / f"{line_id}.txt")
        np.testing.assert_array_equal(load_line(s.image, s.crop), _line_pixels(k))


def test_bentham_partitions(bentham):
    assert [s.line_id for s in read_dataset(f"bentham:{bentham}?split=train")] == \
        ["002_080_001_01_01", "002_080_001_01_02"]
    assert [s.line_id for s in read_dataset(f"bentham:{bentham}?split=val")] == ["116_649_001_03_24"]
    problems = Problems()
    assert [s.line_id for s in read_dataset(f"bentham:{bentham}?split=test", problems)] == ["071_052_004_02_05"]
    assert problems.entries[0][:2] == ("unknown split id", f"{bentham / 'Partitions' / 'TestLines.lst'}:2")
    (bentham / "Images" / "Lines" / "002_080_001_01_02.png").unlink()
    (bentham / "Transcriptions" / "002_080_001_01_01.txt").write_bytes(b"caf\xe9")
    problems = Problems()
    assert read_dataset(f"bentham:{bentham}?split=train", problems) == []
    assert [k for k, _, _ in problems.entries] == ["undecodable transcription", "missing image"]
    with pytest.raises(DataError, match="Bentham has no split 'dev'"):
        read_dataset(f"bentham:{bentham}?split=dev")
    (bentham / "Partitions" / "TestLines.lst").unlink()
    with pytest.raises(DataError, match="TestLines.lst not found"):
        read_dataset(f"bentham:{bentham}?split=test")


def test_formats_do_not_claim_each_other(bentham, rimes_lines, tmp_path):
    assert detect_format(bentham) == "bentham" and detect_format(rimes_lines) == "rimes"
    other = tmp_path / "other"  # a generic Images/Transcriptions/Sets layout that is not RIMES
    for sub in ("Images", "Transcriptions", "Sets"):
        (other / sub).mkdir(parents=True)
    Image.fromarray(_line_pixels(1)).save(other / "Images" / "x.png")
    (other / "Images" / "x.png.gt.txt").write_text("x")
    (other / "Sets" / "TrainLines.txt").write_text("page1_line1\n")
    assert detect_format(other) == "folder"
    with pytest.raises(DataError, match="no Bentham Images/Lines"):
        read_dataset(f"bentham:{other}")
    with pytest.raises(DataError, match="no RIMES files here"):
        read_dataset(f"rimes:{tmp_path / 'other' / 'Images'}")
