"""IAM line-level reader on a fixture laid out like the real distribution (ascii/, lines/, split lists)."""
import numpy as np
import pytest
from PIL import Image

from htrjand.datasets import DataError, Problems, detect_format, read_dataset
from htrjand.images import load_line

LINES_HEADER = """\
#--- lines.txt ---------------------------------------------------------------#
#
# iam database line information
#
# format: a01-000u-00 ok 154 19 408 746 1663 91 A|MOVE|to|stop|Mr.|Gaitskell|from
#
#     a01-000u-00  -> line id for form a01-000u
#     ok              -> result of word segmentation
#                            ok: line is correctly segmented
#                            err: segmentation of line has one or more errors
#
#                        notice: if the line could not be properly segmented
#                                the transcription and extraction of the whole
#                                line should not be affected negatively
#
#     154             -> graylevel to binarize line
#     19              -> number of components for this line
#     408 746 1663 91 -> bounding box around this line in x,y,w,h format
#
#     A|MOVE|to|stop|Mr.|Gaitskell|from
#                     -> transcription for this line. word tokens are separated
#                        by the character |
#
"""
RECORDS = [
    ("a01-000u-00", "a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from"),
    ("a01-000u-01", "a01-000u-01 ok 156 19 395 932 1850 105 nominating|any|more|Labour|life|Peers"),
    ("a01-000u-02", "a01-000u-02 err 157 16 408 1106 1986 105 is|to|be|made|at|a|meeting|of|Labour"),
    ("c04-156-05", "c04-156-05 ok 176 22 354 1618 1557 147 wartime|naval|officer|in|the|B B C's"),
    ("c04-156-06", 'c04-156-06 ok 176 9 368 1807 700 158 "|The|Little|Key|.|"'),
    ("c06-083-01", "c06-083-01 ok 165 25 353 1061 1979 156 and|Rock|Hudson|at|the|wheel|of|a|shining|silver|Rolls-Royce|."),
]
TEXTS = {
    "a01-000u-00": "A MOVE to stop Mr. Gaitskell from",
    "a01-000u-01": "nominating any more Labour life Peers",
    "a01-000u-02": "is to be made at a meeting of Labour",
    "c04-156-05": "wartime naval officer in the B B C's",
    "c04-156-06": '" The Little Key . "',
    "c06-083-01": "and Rock Hudson at the wheel of a shining silver Rolls-Royce .",
}
FORMS = """\
#--- forms.txt ---------------------------------------------------------------#
#
# iam database form information
#
# format: a01-000u 000 2 prt 7 5 52 36
#
#     a01-000u  -> form id
#     000       -> writer id
#     2         -> number of sentences
#     prt       -> word segmentation
#                     prt: some lines correctly segmented
#                     all: all lines correctly segmented
#     7 5       -> 5 of 7 lines are correctly segmented into words
#     52 36     -> the form contains 52 words, 36 are in lines which
#                  have been correctly segmented
#
a01-000u 000 2 prt 7 5 52 36
c04-156 171 3 all 7 7 47 47
c06-083 174 4 prt 9 8 81 73
"""
FIRST = LINES_HEADER.count("\n") + 1  # line number of the first record


def _pixels(k: int) -> np.ndarray:
    arr = np.full((24, 60 + 5 * k), 255, np.uint8)
    arr[6:18, 4:-4] = 20 * k
    return arr


@pytest.fixture
def iam(tmp_path):
    root = tmp_path / "IAM"
    (root / "ascii").mkdir(parents=True)
    (root / "ascii" / "lines.txt").write_text(LINES_HEADER + "\n".join(r for _, r in RECORDS) + "\n")
    (root / "ascii" / "forms.txt").write_text(FORMS)
    for k, (line_id, _) in enumerate(RECORDS):
        form = line_id.rsplit("-", 1)[0]
        folder = root / "lines" / form.split("-")[0] / form
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_pixels(k)).save(folder / f"{line_id}.png")
    task = root / "largeWriterIndependentTextLineRecognitionTask"
    task.mkdir()
    (task / "trainset.txt").write_text("a01-000u-00\na01-000u-01\na01-000u-02\n")
    (task / "validationset1.txt").write_text("c04-156-05\n")
    (task / "validationset2.txt").write_text("c04-156-06\n")
    (task / "testset.txt").write_text("c06-083-01\nc06-083-99\n")
    (root / "splits").mkdir()
    (root / "splits" / "train.uttlist").write_text("a01-000u\n")
    (root / "splits" / "validation.uttlist").write_text("c04-156\n")
    (root / "splits" / "test.uttlist").write_text("c06-083\nz99-999\n")
    return root


def _ids(samples):
    return [s.line_id for s in samples]


def test_reads_every_line_with_text_writer_source_and_pixels(iam):
    assert detect_format(iam) == "iam"
    problems = Problems()
    samples = read_dataset(iam, problems)
    assert not problems.entries
    assert _ids(samples) == [line_id for line_id, _ in RECORDS]  # err lines kept by default
    assert {s.line_id: s.text for s in samples} == TEXTS
    assert [s.group for s in samples] == ["000", "000", "000", "171", "171", "174"]
    assert samples[0].dataset == "iam" and samples[0].crop is None
    assert samples[3].source == f"{iam / 'ascii' / 'lines.txt'}:{FIRST + 3}"
    assert samples[3].image == iam / "lines" / "c04" / "c04-156" / "c04-156-05.png"
    for k, s in enumerate(samples):
        np.testing.assert_array_equal(load_line(s.image, s.crop), _pixels(k))


def test_status_ok_drops_badly_segmented_lines(iam):
    samples = read_dataset(f"iam:{iam}?status=ok")
    assert "a01-000u-02" not in _ids(samples) and len(samples) == 5
    with pytest.raises(DataError, match="status must be all or ok"):
        read_dataset(f"iam:{iam}?status=good")


def test_official_scheme_selects_line_lists(iam):
    assert _ids(read_dataset(f"iam:{iam}?split=train&scheme=official")) == ["a01-000u-00", "a01-000u-01", "a01-000u-02"]
    assert _ids(read_dataset(f"iam:{iam}?split=val&scheme=official")) == ["c04-156-05"]
    assert _ids(read_dataset(f"iam:{iam}?split=validation&scheme=official")) == ["c04-156-05"]
    assert _ids(read_dataset(f"iam:{iam}?split=val2&scheme=official")) == ["c04-156-06"]
    problems = Problems()
    assert _ids(read_dataset(f"iam:{iam}?split=test&scheme=official", problems)) == ["c06-083-01"]
    task = iam / "largeWriterIndependentTextLineRecognitionTask"
    assert problems.entries == [("unknown split id", f"{task / 'testset.txt'}:2",
                                 "'c06-083-99' names no line or form of lines.txt")]


def test_aachen_scheme_is_the_default_and_lists_forms(iam):
    assert _ids(read_dataset({"path": str(iam), "format": "iam", "split": "train"})) == \
        ["a01-000u-00", "a01-000u-01", "a01-000u-02"]
    assert _ids(read_dataset(f"iam:{iam}?split=valid&scheme=aachen")) == ["c04-156-05", "c04-156-06"]
    problems = Problems()
    assert _ids(read_dataset(f"iam:{iam}?split=test", problems)) == ["c06-083-01"]
    assert [(k, w) for k, w, _ in problems.entries] == [("unknown split id", f"{iam / 'splits' / 'test.uttlist'}:2")]


def test_splits_option_takes_a_folder_or_a_list_of_line_ids(iam, tmp_path):
    pylaia = tmp_path / "pylaia_aachen"  # PyLaia's lists name lines, not forms
    pylaia.mkdir()
    (pylaia / "tr.lst").write_text("a01-000u-01\nc06-083-01\n")
    (pylaia / "te.lst").write_text("c04-156-06\n")
    assert _ids(read_dataset(f"iam:{iam}?split=train&splits={pylaia}")) == ["a01-000u-01", "c06-083-01"]
    assert _ids(read_dataset(f"iam:{iam}?splits={pylaia / 'te.lst'}")) == ["c04-156-06"]
    with pytest.raises(DataError, match=r"no IAM aachen list for split 'val'.*splits=PATH"):
        read_dataset(f"iam:{iam}?split=val&splits={pylaia}")


def test_bad_split_requests_raise_clear_errors(iam):
    with pytest.raises(DataError, match="unknown IAM split scheme 'rwth'"):
        read_dataset(f"iam:{iam}?split=train&scheme=rwth")
    with pytest.raises(DataError, match="aachen scheme has no split 'val2'"):
        read_dataset(f"iam:{iam}?split=val2")
    (iam / "splits" / "validation.uttlist").unlink()
    with pytest.raises(DataError, match=r"validation\.uttlist, va\.lst.*splits=PATH"):
        read_dataset(f"iam:{iam}?split=val")


def test_malformed_records_and_missing_images_are_reported_with_file_and_line(iam):
    lines_txt = iam / "ascii" / "lines.txt"
    with lines_txt.open("a") as f:
        f.write("a01-000u-03 ok 156 19 395\n"                      # too few fields
                "a01-000u-04 maybe 156 19 395 932 1850 105 text\n"  # unknown status
                "a01-000u-05 ok 156 x 395 932 1850 105 text\n"      # not a number
                "a01-000u-00 ok 154 19 408 746 1661 89 again\n")    # duplicate id
    (iam / "lines" / "c04" / "c04-156" / "c04-156-06.png").unlink()
    problems = Problems()
    samples = read_dataset(iam, problems)
    assert len(samples) == 5
    n = FIRST + len(RECORDS)
    assert [(kind, where) for kind, where, _ in problems.entries] == [
        ("malformed record", f"{lines_txt}:{n}"), ("malformed record", f"{lines_txt}:{n + 1}"),
        ("malformed record", f"{lines_txt}:{n + 2}"), ("duplicate line", f"{lines_txt}:{n + 3}"),
        ("missing image", f"{lines_txt}:{FIRST + 4}")]
    assert "c04-156-06.png not found" in problems.entries[-1][2]


def test_lines_txt_path_without_forms_groups_by_form(iam):
    (iam / "ascii" / "forms.txt").unlink()
    lines_txt = iam / "ascii" / "lines.txt"
    assert detect_format(lines_txt) == "iam"
    samples = read_dataset(lines_txt)
    assert [s.group for s in samples] == ["a01-000u"] * 3 + ["c04-156"] * 2 + ["c06-083"]
    assert read_dataset(f"{lines_txt}?name=iam-lines")[0].dataset == "iam-lines"


def test_detection_is_specific(tmp_path):
    tsv = tmp_path / "lines.txt"  # a TSV manifest that happens to be called lines.txt
    Image.fromarray(_pixels(1)).save(tmp_path / "a.png")
    tsv.write_text("a.png\thello world\n")
    assert detect_format(tsv) == "manifest"
    (tmp_path / "ascii").mkdir()
    assert detect_format(tmp_path) == "folder"  # no ascii/lines.txt
