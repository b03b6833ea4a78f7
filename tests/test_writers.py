"""Recognition outputs: results written back into PAGE XML / ALTO (real pages and small PAGE 2019 and
ALTO v2 fixtures), text/TSV/JSON, the `htrjand recognize` output options, and page images without XML."""
import json
import math
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from lxml import etree
from PIL import Image

from htrjand.charset import normalize_text
from htrjand.checkpoint import atomic_save, read_checkpoint
from htrjand.cli import _expand_images, main
from htrjand.datasets import DataError, Problems, read_dataset
from htrjand.datasets.alto import UNITS_PER_INCH
from htrjand.datasets.geometry import bounds
from htrjand.datasets.layout import load_page
from htrjand.decoding import Word
from htrjand.images import line_size
from htrjand.outputs import plan_outputs
from htrjand.runtime import LineReader, Result
from htrjand.writers import PAGE_LINE_ORDER, json_text, line_key, link_image, page_xml, text_lines, tsv, write_page

from conftest import TINY_MODEL

PAGE_2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO_V2 = "http://www.loc.gov/standards/alto/ns-v2#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _local(el) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _kids(el, name: str) -> list:
    return [c for c in el if _local(c) == name]


def make_result(text: str, width: int, conf: float = 0.8, source: str = "") -> Result:
    """A result whose characters share the region's width evenly, with varied confidences."""
    n = max(len(text), 1)
    step = width / n
    positions = [(int(i * step), max(int((i + 1) * step), int(i * step) + 1)) for i in range(len(text))]
    confs = [round(0.35 + 0.6 * ((i * 37) % 11) / 10, 3) for i in range(len(text))]
    words, start = [], None
    for i, ch in enumerate(text + " "):
        if ch != " " and start is None:
            start = i
        elif ch == " " and start is not None:
            words.append(Word(text[start:i], math.prod(confs[start:i]), start, i, (0, 0),
                              (positions[start][0], positions[i - 1][1])))
            start = None
    return Result(text, conf, confs, source, None, positions, words)


def _results_for(path: Path, texts) -> tuple[dict, dict]:
    """Results for every line of a page file (keyed as `page_xml` wants) and the samples' crops."""
    samples = read_dataset(f"{path}?keep_empty=true", Problems())
    results, crops = {}, {}
    for i, s in enumerate(samples):
        width, _ = line_size(s.image, s.crop)
        results[s.line_id or s.source] = make_result(texts(i, s), width, conf=0.5 + (i % 5) / 10, source=s.source)
        crops[s.line_id or s.source] = s.crop
    return results, crops


def _reverse_or_made_up(i, sample) -> str:
    return normalize_text(sample.text[::-1]) if sample.text.strip() else f"made up line {i}"


# --------------------------------------------------------------------------- small fixtures (no ../shared)

PAGE_FIXTURE = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<PcGts xmlns="{PAGE_2019}" xmlns:xsi="{XSI}" xsi:schemaLocation="{PAGE_2019} {PAGE_2019}/pagecontent.xsd">
    <Metadata>
        <Creator>tests</Creator>
        <Created>2024-05-01T10:00:00</Created>
        <LastChange>2024-05-01T10:00:00</LastChange>
    </Metadata>
    <Page imageFilename="page.png" imageWidth="600" imageHeight="300">
        <ReadingOrder>
            <OrderedGroup id="ro1" caption="order">
                <RegionRefIndexed index="0" regionRef="r1"/>
            </OrderedGroup>
        </ReadingOrder>
        <TextRegion id="r1" type="paragraph">
            <Coords points="20,20 580,20 580,280 20,280"/>
            <TextLine id="l1" custom="readingOrder {{index:0;}} textStyle {{offset:0; length:3;bold:true;}}" index="0">
                <Coords points="40,40 560,40 560,100 40,100"/>
                <Baseline points="40,90 560,90"/>
                <Word id="l1_old">
                    <Coords points="40,40 100,40 100,100 40,100"/>
                    <TextEquiv><Unicode>Old</Unicode></TextEquiv>
                </Word>
                <TextEquiv index="1" conf="0.5">
                    <Unicode>Old text</Unicode>
                </TextEquiv>
                <TextEquiv index="2">
                    <Unicode>Old variant</Unicode>
                </TextEquiv>
                <TextStyle fontSize="12"/>
            </TextLine>
            <TextLine id="l2" custom="readingOrder {{index:1;}}" index="1">
                <Coords points="40,150 300,130 560,150 560,210 300,230 40,210"/>
                <TextEquiv>
                    <Unicode>Kept as it is</Unicode>
                </TextEquiv>
            </TextLine>
            <TextEquiv>
                <Unicode>Old text
Kept as it is</Unicode>
            </TextEquiv>
        </TextRegion>
    </Page>
</PcGts>
"""

ALTO_FIXTURE = f"""<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="{ALTO_V2}" xmlns:xsi="{XSI}"
      xsi:schemaLocation="{ALTO_V2} http://www.loc.gov/standards/alto/alto-v2.0.xsd">
  <Description>
    <MeasurementUnit>mm10</MeasurementUnit>
    <sourceImageInformation>
      <fileName>scan.png</fileName>
    </sourceImageInformation>
  </Description>
  <Layout>
    <Page ID="p1" WIDTH="1016" HEIGHT="508" PHYSICAL_IMG_NR="1">
      <PrintSpace HPOS="0" VPOS="0" WIDTH="1016" HEIGHT="508">
        <TextBlock ID="b1" HPOS="40" VPOS="40" WIDTH="900" HEIGHT="300">
          <TextLine ID="tl1" HPOS="68" VPOS="68" WIDTH="880" HEIGHT="102" CS="true">
            <String ID="s1" CONTENT="Old" HPOS="68" VPOS="68" WIDTH="100" HEIGHT="102"/>
            <SP WIDTH="20"/>
            <String ID="s2" CONTENT="wor" HPOS="190" VPOS="68" WIDTH="100" HEIGHT="102"/>
            <HYP CONTENT="-"/>
          </TextLine>
          <TextLine ID="tl2" HPOS="68" VPOS="220" WIDTH="880" HEIGHT="102">
            <String ID="s3" CONTENT="untouched" HPOS="68" VPOS="220" WIDTH="300" HEIGHT="102"/>
          </TextLine>
        </TextBlock>
      </PrintSpace>
    </Page>
  </Layout>
</alto>
"""


def _page_image(path: Path, size, dpi=None) -> None:
    page = np.full((size[1], size[0]), 255, np.uint8)
    page[::7, :] = 0  # some ink
    Image.fromarray(page).save(path, **({"dpi": (dpi, dpi)} if dpi else {}))


@pytest.fixture
def page_fixture(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    _page_image(folder / "page.png", (600, 300))
    (folder / "page.xml").write_text(PAGE_FIXTURE, encoding="utf-8")
    return folder / "page.xml"


@pytest.fixture
def alto_fixture(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    _page_image(folder / "scan.png", (600, 300), dpi=150)  # 150 dpi: 1 mm10 = 150/254 px
    (folder / "scan.xml").write_text(ALTO_FIXTURE, encoding="utf-8")
    return folder / "scan.xml"


def test_page2019_fixture_written_back(page_fixture, tmp_path):
    doc = load_page(page_fixture)
    before = etree.tostring(doc.root)
    results, crops = _results_for(page_fixture, lambda i, s: "new words here" if s.line_id == "l1" else "")
    results = {"l1": results["l1"]}  # l2 has no result: left untouched
    out = write_page(doc, results, tmp_path / "out" / "page.xml", glyphs=True, creator="htrjand test")
    assert etree.tostring(doc.root) == before  # the caller's tree is not changed
    assert out.read_bytes().startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')

    new = load_page(out)
    assert [(l.id, l.polygon, l.baseline) for l in new.lines] == [(l.id, l.polygon, l.baseline) for l in doc.lines]
    assert [l.text for l in new.lines] == ["new words here", "Kept as it is"]
    line = new.lines[0].element
    names = [_local(c) for c in line if _local(c)]
    assert names == ["Coords", "Baseline", "Word", "Word", "Word", "TextEquiv", "TextStyle"]  # schema order
    assert [sorted(names, key=PAGE_LINE_ORDER.index)] == [names]
    equiv = _kids(line, "TextEquiv")[0]
    assert float(equiv.get("conf")) == pytest.approx(results["l1"].confidence) and equiv.get("index") is None
    assert line.get("custom") == "readingOrder {index:0;}"  # the bold tag's offsets pointed into the old text
    words = _kids(line, "Word")
    assert [w.get("id") for w in words] == ["l1_w1", "l1_w2", "l1_w3"]
    left, top, right, bottom = bounds(new.lines[0].polygon)
    for word, expected in zip(words, results["l1"].words):
        assert _kids(word, "TextEquiv")[0][0].text == expected.text
        assert 0 <= float(_kids(word, "TextEquiv")[0].get("conf")) <= 1
        xs, ys = zip(*[map(int, p.split(",")) for p in _kids(word, "Coords")[0].get("points").split()])
        assert left <= min(xs) < max(xs) <= right and top <= min(ys) < max(ys) <= bottom
        glyphs = _kids(word, "Glyph")
        assert "".join(_kids(g, "TextEquiv")[0][0].text for g in glyphs) == expected.text
        assert [_local(c) for c in word] == ["Coords"] + ["Glyph"] * len(glyphs) + ["TextEquiv"]
    # word x: the crop's left edge (40 - 3 margin) plus the region x
    first = _kids(words[0], "Coords")[0].get("points").split()[0]
    assert int(first.split(",")[0]) == max(37 + results["l1"].words[0].x[0], 40)

    region = new.root.find(".//{*}TextRegion")
    assert [_local(c) for c in region if _local(c)][-1] == "TextEquiv"
    assert _kids(region, "TextEquiv")[0][0].text == "new words here\nKept as it is"
    meta = new.root.find("{*}Metadata")
    assert meta.find("{*}LastChange").text != "2024-05-01T10:00:00"
    item = meta.find("{*}MetadataItem")
    assert item.get("value") == "htrjand test" and item.get("type") == "processingStep"
    # with a link to its image, the written file is cut into the same line images
    assert link_image(doc, out) == out.parent / "page.png" and link_image(doc, out) is None
    assert [s.crop for s in read_dataset(f"{out}?keep_empty=1")] == \
        [s.crop for s in read_dataset(f"{page_fixture}?keep_empty=1")]


def test_page_without_words(page_fixture):
    results, crops = _results_for(page_fixture, lambda i, s: "a b")
    root = etree.fromstring(page_xml(load_page(page_fixture), results, words=False, crops=crops))
    for line in root.iter("{*}TextLine"):
        assert not _kids(line, "Word") and _kids(line, "TextEquiv")[0][0].text == "a b"


def test_alto_v2_mm10_fixture_written_back(alto_fixture, tmp_path):
    doc = load_page(alto_fixture)
    scale = 150 / UNITS_PER_INCH["mm10"]  # pixels per mm10
    results, crops = _results_for(alto_fixture, lambda i, s: "Hello big world")
    results.pop("tl2")
    out = write_page(doc, results, tmp_path / "out.xml", glyphs=True)
    link_image(doc, out)  # the reader converts mm10 with the image's DPI
    new = load_page(out)
    assert [l.text for l in new.lines] == ["Hello big world", "untouched"]
    assert [l.box for l in new.lines] == [l.box for l in doc.lines]
    line = new.lines[0].element
    assert "CS" not in line.attrib  # correction status no longer true
    assert [_local(c) for c in line] == ["String", "SP", "String", "SP", "String"]  # no HYP left
    left, top, right, bottom = new.lines[0].box  # pixels
    for string, word in zip(_kids(line, "String"), results["tl1"].words):
        assert string.get("CONTENT") == word.text
        assert float(string.get("WC")) == pytest.approx(word.confidence, abs=1e-4)
        assert re.fullmatch(r"[0-9]+", string.get("CC")) and len(string.get("CC")) == len(word.text)
        confs = results["tl1"].char_confidences[word.start:word.end]
        assert [int(d) for d in string.get("CC")] == [round(9 * (1 - c)) for c in confs]  # 0 = sure
        hpos, vpos, width, height = (float(string.get(k)) * scale for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT"))
        assert left - 1 <= hpos and hpos + width <= right + 1 and top - 1 <= vpos and vpos + height <= bottom + 1
        assert not _kids(string, "Glyph")  # ALTO 2 has no Glyph
    assert new.root.find("{*}Description/{*}OCRProcessing/{*}ocrProcessingStep/{*}processingSoftware") is not None
    assert {e.get("ID") for e in new.root.iter() if e.get("ID")} >= {"tl1_s1", "tl1_s2", "tl1_s3", "s3"}


@pytest.mark.parametrize("version, schema, glyphs", [("v3", "alto-3-1", False), ("v4", "alto-4-4", True)])
def test_alto_versions_glyphs_and_reading_order(tmp_path, version, schema, glyphs):
    ns = f"http://www.loc.gov/standards/alto/ns-{version}#"
    order = """<ReadingOrder><OrderedGroup ID="ro"><ElementRef ID="e1" REF="s1"/><ElementRef ID="e2" REF="s2"/>
    <ElementRef ID="e3" REF="s3"/></OrderedGroup></ReadingOrder>""" if version == "v4" else ""
    xml = (ALTO_FIXTURE.replace(ALTO_V2, ns).replace("mm10", "pixel").replace("<Layout>", order + "<Layout>")
           .replace("http://www.loc.gov/standards/alto/alto-v2.0.xsd", f"{schema}.xsd"))
    _page_image(tmp_path / "scan.png", (1100, 600))
    (tmp_path / "scan.xml").write_text(xml, encoding="utf-8")
    results, crops = _results_for(tmp_path / "scan.xml", lambda i, s: "one two")
    doc = load_page(tmp_path / "scan.xml")
    root = etree.fromstring(page_xml(doc, {"tl1": results["tl1"]}, glyphs=True))
    assert bool(list(root.iter("{*}Glyph"))) == glyphs  # Glyph exists from ALTO 4.0 on
    for string in root.iter("{*}String"):
        glyph_text = "".join(g.get("CONTENT") for g in _kids(string, "Glyph"))
        assert glyph_text == (string.get("CONTENT") if glyphs and string.get("ID") != "s3" else "")
        assert all(0 <= float(g.get("GC")) <= 1 for g in _kids(string, "Glyph"))
    if version == "v4":  # references to the replaced Strings now point at their line
        assert [e.get("REF") for e in root.iter("{*}ElementRef")] == ["tl1", "s3"]
        (tmp_path / "written.xml").write_bytes(etree.tostring(root))
        assert [l.id for l in load_page(tmp_path / "written.xml").lines] == ["tl1", "tl2"]
    step = "{*}Processing" if version == "v4" else "{*}OCRProcessing/{*}ocrProcessingStep"  # Processing: ALTO 4
    assert root.find(f"{{*}}Description/{step}/{{*}}processingSoftware/{{*}}softwareName").text == "htrjand"


def test_write_page_refuses_the_input_file(page_fixture):
    doc = load_page(page_fixture)
    original = page_fixture.read_bytes()
    with pytest.raises(DataError, match="refusing to overwrite"):
        write_page(doc, {}, page_fixture)
    with pytest.raises(DataError, match="refusing to overwrite"):
        write_page(doc, {}, page_fixture.parent / ".." / page_fixture.parent.name / page_fixture.name)
    assert page_fixture.read_bytes() == original
    assert sorted(p.name for p in page_fixture.parent.iterdir()) == ["page.png", "page.xml"]  # no temp files


def test_text_tsv_and_json(tmp_path):
    (tmp_path / "lines").mkdir()
    images = [tmp_path / "lines" / "a.png", tmp_path / "lines" / "#b.png"]
    for p in images:
        Image.fromarray(np.full((40, 200), 255, np.uint8)).save(p)
    results = [make_result("first\tline", 200, source=str(images[0])),
               make_result("second", 200, 0.25, str(images[1])),
               Result("", 0.0, source="gone.png", error="gone.png: image file not found")]
    listing = text_lines(results).splitlines()
    assert listing == [f"{images[0]}\tfirst line\t0.800", f"{images[1]}\tsecond\t0.250"]
    assert text_lines(results, sources=False).splitlines() == ["first line", "second", ""]
    manifest = tmp_path / "out" / "results.tsv"
    manifest.parent.mkdir()
    manifest.write_text(tsv(results, manifest.parent), encoding="utf-8")
    rows = [r for r in manifest.read_text(encoding="utf-8").splitlines() if not r.startswith("#")]
    assert rows[0] == "../lines/a.png\tfirst line\t0.8000" and len(rows) == 2
    samples = read_dataset(manifest, Problems())  # a manifest htrjand reads back (confidence column ignored)
    assert [(Path(s.image).resolve(), s.text) for s in samples] == [(images[0], "first line"), (images[1], "second")]
    data = json.loads(json_text(results))
    assert [d["text"] for d in data] == ["first\tline", "second", ""] and data[2]["error"]


def test_plan_outputs_checks_before_recognition(page_fixture, alto_fixture, tmp_path):
    pages = read_dataset(f"{page_fixture}?keep_empty=1")
    with pytest.raises(DataError, match="needs|give --output-dir"):
        plan_outputs(pages, [str(page_fixture)], "page", None)
    with pytest.raises(DataError, match="conversion is not supported"):
        plan_outputs(pages, [str(page_fixture)], "alto", tmp_path / "o")
    with pytest.raises(DataError, match="overwrite this input"):
        plan_outputs(pages, [str(page_fixture)], "auto", page_fixture.parent)
    plan = plan_outputs(pages, [str(page_fixture)], "auto", tmp_path / "o")
    assert plan.targets == {str(page_fixture): tmp_path / "o" / "page.xml"}
    assert plan.pages == {str(page_fixture): "page"}


def test_input_folders_follow_symlinked_folders_once(tmp_path):
    real = tmp_path / "scans" / "box1"
    real.mkdir(parents=True)
    for name in ("a.png", "b.JPG", "notes.txt"):
        Image.fromarray(np.full((64, 300), 255, np.uint8)).save(real / name, format="PNG")
    (real / "dir.png").mkdir()  # a folder with an image's name is not an image
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "box1").symlink_to(real)  # a linked folder is read like a real one
    (real / "loop").symlink_to(tmp_path / "scans")  # and a link loop ends
    found = _expand_images([str(inputs)])
    assert sorted(Path(f).name for f in found) == ["a.png", "b.JPG"]
    assert all(str(f).startswith(str(inputs)) for f in found)  # named as the user reaches them


def test_page_image_without_xml_is_skipped_with_advice(tmp_path, capsys):
    page, line = tmp_path / "scan.jpg", tmp_path / "line.png"
    Image.fromarray(np.full((1600, 1100), 255, np.uint8)).save(page)
    Image.fromarray(np.full((64, 900), 255, np.uint8)).save(line)
    assert _expand_images([str(page), str(line)]) == [str(line)]
    err = capsys.readouterr().err
    assert "scan.jpg" in err and "whole page" in err and "segment" in err
    assert "kraken" in err and "eScriptorium" in err and "Transkribus" in err and "--force-line" in err
    assert _expand_images([str(tmp_path)]) == [str(line)]  # also inside folders
    assert _expand_images([str(page)], force_line=True) == [str(page)]
    # nothing left to read: a clear message and exit code 2 before any model is loaded
    assert main(["recognize", str(tmp_path / "no-model.ckpt"), str(page)]) == 2
    assert "line segmentation" in capsys.readouterr().err


# --------------------------------------------------------------------------- real pages (../shared)

@pytest.fixture(scope="module")
def real_pages(shared_data) -> list[Path]:
    files = sorted((shared_data / "pages").glob("*/*.xml"))
    assert len(files) == 7
    return files


def _check_page_structure(root) -> None:
    for line in root.iter("{*}TextLine"):
        names = [_local(c) for c in line if _local(c)]
        assert names == sorted(names, key=PAGE_LINE_ORDER.index), names
        assert len(_kids(line, "TextEquiv")) == 1
        for word in _kids(line, "Word"):
            assert [_local(c) for c in word if _local(c)][0] == "Coords"
            assert [_local(c) for c in word if _local(c)][-1] == "TextEquiv"
    ids = [e.get("id") for e in root.iter() if isinstance(e.tag, str) and e.get("id")]
    assert len(ids) == len(set(ids))


def test_real_pages_round_trip(real_pages, tmp_path):
    for n, path in enumerate(real_pages):
        doc = load_page(path)
        results, crops = _results_for(path, _reverse_or_made_up)
        out = tmp_path / "out" / path.parent.name / path.name
        write_page(doc, results, out, glyphs=bool(n % 2), crops=crops)
        new = load_page(out)
        assert new.format == doc.format and len(new.lines) == len(doc.lines)
        assert new.root.nsmap == doc.root.nsmap
        for a, b in zip(doc.lines, new.lines):
            assert (a.id, a.polygon, a.baseline, a.box, a.types) == (b.id, b.polygon, b.baseline, b.box, b.types)
            result = results.get(line_key(a))
            if result is None:  # a line the reader could not cut: untouched
                assert b.text == a.text
                continue
            assert b.text == result.text
            words = [e for e in b.element.iter() if _local(e) in ("Word", "String")]
            assert len(words) == len(result.words)
            left, top, right, bottom = bounds(b.polygon) if b.polygon else b.box
            for word in words:
                if doc.format == "page":
                    conf = float(_kids(word, "TextEquiv")[0].get("conf"))
                    xs, ys = zip(*[map(int, p.split(",")) for p in _kids(word, "Coords")[0].get("points").split()])
                    box = (min(xs), min(ys), max(xs), max(ys))
                else:
                    assert {"CONTENT", "HPOS", "VPOS", "WIDTH", "HEIGHT", "WC", "CC"} <= set(word.attrib)
                    assert len(word.get("CC")) == len(word.get("CONTENT"))
                    conf = float(word.get("WC"))
                    x, y = float(word.get("HPOS")), float(word.get("VPOS"))
                    box = (x, y, x + float(word.get("WIDTH")), y + float(word.get("HEIGHT")))
                assert 0 <= conf <= 1
                assert left - 1 <= box[0] < box[2] <= right + 1 and top - 1 <= box[1] < box[3] <= bottom + 1
        if doc.format == "page":
            _check_page_structure(new.root)
        else:
            assert (len(list(new.root.iter("{*}Glyph"))) > 0) == bool(n % 2)  # ALTO 4 has Glyph
        # what htrjand cuts from the written file is what it cut from the input
        assert link_image(doc, out) is not None
        assert [s.crop for s in read_dataset(f"{out}?keep_empty=1")] == \
            [s.crop for s in read_dataset(f"{path}?keep_empty=1")]


# --------------------------------------------------------------------------- htrjand recognize

@pytest.fixture(scope="module")
def checkpoint(rendered, tmp_path_factory) -> Path:
    """A tiny model trained for two steps, its blank suppressed so that it writes text (and words)."""
    out = tmp_path_factory.mktemp("writers_model")
    cfg = out / "cfg.yaml"
    cfg.write_text(f"preset: student\nmodel: {json.dumps(TINY_MODEL)}\n"
                   f"data: {{train: [{rendered['train']}], val: [{rendered['val']}], workers: 0}}\n"
                   "train: {epochs: 1, max_steps: 2, warmup_steps: 1, progress: false}\n")
    assert main(["train", "--config", str(cfg), "--output", str(out / "run"), "--batch-size", "16"]) == 0
    ckpt = read_checkpoint(out / "run" / "last.ckpt")
    ckpt["state_dict"]["model.head.bias"][0] = -1e4  # never blank: every frame gives a character
    atomic_save(ckpt, out / "model.ckpt")
    return out / "model.ckpt"


def test_cli_recognize_writes_page_files(checkpoint, page_fixture, rendered, tmp_path, capsys):
    out_dir = tmp_path / "recognized"
    report = tmp_path / "r.json"
    assert main(["recognize", str(checkpoint), str(page_fixture), "--output-dir", str(out_dir),
                 "--json", str(report), "--glyphs"]) == 0
    captured = capsys.readouterr()
    assert f"written: {out_dir / 'page.xml'}" in captured.err and captured.out == ""
    texts = [r["text"] for r in json.loads(report.read_text())]
    assert len(texts) == 2 and all(texts)
    new = load_page(out_dir / "page.xml")
    assert [l.text for l in new.lines] == texts and [l.id for l in new.lines] == ["l1", "l2"]
    assert new.image is not None and new.image.resolve() == (page_fixture.parent / "page.png").resolve()
    assert list(new.root.iter("{*}Glyph")) and "htrjand" in new.root.find(".//{*}MetadataItem").get("value")
    assert page_fixture.read_text(encoding="utf-8") == PAGE_FIXTURE  # the input is never written

    # text files per input, and a TSV manifest on stdout
    assert main(["recognize", str(checkpoint), str(page_fixture), "--format", "text", "--output-dir",
                 str(tmp_path / "txt")]) == 0
    assert (tmp_path / "txt" / "page.txt").read_text(encoding="utf-8").splitlines() == texts
    capsys.readouterr()
    assert main(["recognize", str(checkpoint), str(page_fixture), "--format", "tsv"]) == 0
    rows = [r.split("\t") for r in capsys.readouterr().out.splitlines() if not r.startswith("#")]
    assert [r[1] for r in rows] == texts and all(0 <= float(r[2]) <= 1 for r in rows)
    # line images: `source<TAB>text<TAB>confidence` on stdout as before, or JSON
    line = str(read_dataset(rendered["test"])[0].image)
    assert main(["recognize", str(checkpoint), line, "--output-dir", str(tmp_path / "lines")]) == 0
    source, text, conf = capsys.readouterr().out.rstrip("\n").split("\t")
    assert source == line and text and 0 <= float(conf) <= 1
    assert main(["recognize", str(checkpoint), line, "--format", "json"]) == 0
    assert [d["text"] for d in json.loads(capsys.readouterr().out)] == [text]
    # a PAGE file cannot be written as ALTO
    assert main(["recognize", str(checkpoint), str(page_fixture), "--format", "alto", "--output-dir",
                 str(tmp_path / "alto")]) == 2
    assert "conversion is not supported" in capsys.readouterr().err


# --------------------------------------------------------------------------- a stopped recognize run, resumed

def _pages(page_fixture: Path, count: int) -> Path:
    """`count` PAGE files of 2 lines, `s{k}/page.xml` in one folder: symbolic links to the fixture and
    its image (an output keeps the link's place in the folder, not its target's)."""
    folder = page_fixture.parent / "many"
    for k in range(count):
        (folder / f"s{k}").mkdir(parents=True)
        (folder / f"s{k}" / "page.xml").symlink_to(page_fixture)
        (folder / f"s{k}" / "page.png").symlink_to(page_fixture.parent / "page.png")
    return folder


def _stop_after_first_chunk(monkeypatch, chunk: int = 2) -> None:
    """Read in chunks of `chunk` lines and send this process SIGTERM once the first chunk is read."""
    original = LineReader.recognize_chunks

    def chunks(self, images, batch_size=16, workers=None, _chunk=256, decoder=None):
        for k, part in enumerate(original(self, images, batch_size, workers, chunk, decoder)):
            if k == 0:
                signal.raise_signal(signal.SIGTERM)
            yield part

    monkeypatch.setattr(LineReader, "recognize_chunks", chunks)


def _page_texts(folder: Path) -> dict[str, list[str]]:
    return {str(p.relative_to(folder)): [line.text for line in load_page(p).lines] for p in sorted(folder.rglob("*.xml"))}


def test_recognize_stopped_by_sigterm_resumes_where_it_stopped(checkpoint, page_fixture, tmp_path, capsys,
                                                               monkeypatch):
    """SIGTERM while reading 3 page files: the first page (the chunk being read) is written, the JSON's
    lines so far stay in its journal, exit 143 with a hint; `--resume` reads only the other 4 lines and
    ends with what a straight run writes; a third run reads nothing; a journal of other inputs is refused."""
    pages = _pages(page_fixture, 3)
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert main(["recognize", str(checkpoint), str(pages), "--output-dir", str(straight),
                 "--json", str(straight / "all.json")]) == 0
    capsys.readouterr()
    command = ["recognize", str(checkpoint), str(pages), "--output-dir", str(out), "--json", str(out / "all.json")]
    with monkeypatch.context() as m:
        _stop_after_first_chunk(m)
        assert main(command) == 143
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after 2 of 6 lines: 1 file written" in err and "--resume reads the rest" in err
    assert list(_page_texts(out)) == ["s0/page.xml"] and not (out / "all.json").exists()
    journal = (out / "all.json.partial").read_text(encoding="utf-8").splitlines()
    assert len(journal) == 3  # header + the 2 lines read
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    first = (out / "s0" / "page.xml").read_bytes()

    with open(out / "all.json.partial", "a", encoding="utf-8") as f:
        f.write('{"index": 2, "resu')  # a record cut short when the process was killed mid-write
    assert main(command + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert "2 of 6 lines need not be read again" in err
    assert (out / "s0" / "page.xml").read_bytes() == first  # kept, not written again
    assert _page_texts(out) == _page_texts(straight) and len(_page_texts(out)) == 3
    assert json.loads((out / "all.json").read_text()) == json.loads((straight / "all.json").read_text())
    assert not (out / "all.json.partial").exists()

    assert main(command + ["--resume"]) == 0  # everything is there: nothing is read
    assert "6 of 6 lines need not be read again" in capsys.readouterr().err

    (out / "all.json").unlink()
    (out / "all.json.partial").write_text('{"htrjand_partial": 1, "items": 4, "fingerprint": "0"}\n')
    assert main(command + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "all.json.partial: kept by a run over other inputs" in err and "Traceback" not in err
    assert main(command) == 0  # without --resume: everything is read again, the old journal replaced
    assert json.loads((out / "all.json").read_text()) == json.loads((straight / "all.json").read_text())


def test_recognize_resume_of_tsv_and_text_outputs(checkpoint, page_fixture, tmp_path, capsys, monkeypatch):
    """The other file outputs: a TSV in the output folder is finished from its journal; text files per
    input are kept or written; a run that writes only to stdout cannot be resumed."""
    pages = _pages(page_fixture, 2)
    for fmt, name in (("tsv", "results.tsv"), ("text", None)):
        straight, out = tmp_path / f"straight-{fmt}", tmp_path / f"out-{fmt}"
        assert main(["recognize", str(checkpoint), str(pages), "--format", fmt, "--output-dir", str(straight)]) == 0
        command = ["recognize", str(checkpoint), str(pages), "--format", fmt, "--output-dir", str(out)]
        with monkeypatch.context() as m:
            _stop_after_first_chunk(m)
            assert main(command) == 143
        capsys.readouterr()
        if name:
            assert not (out / name).exists() and (out / f"{name}.partial").exists()
        else:
            assert sorted(str(p.relative_to(out)) for p in out.rglob("*.txt")) == ["s0/page.txt"]
        assert main(command + ["--resume"]) == 0
        assert "2 of 4 lines need not be read again" in capsys.readouterr().err
        files = sorted(str(p.relative_to(straight)) for p in straight.rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        assert len(files) == (1 if name else 2)
        for f in files:
            assert (out / f).read_text(encoding="utf-8").replace(str(out), "") == \
                (straight / f).read_text(encoding="utf-8").replace(str(straight), "")
    assert main(["recognize", str(checkpoint), str(pages), "--resume"]) == 2
    assert "--resume continues a run that writes files" in capsys.readouterr().err
    # a finished shard's JSON counts as done: its lines are not read again
    shard = ["recognize", str(checkpoint), str(pages), "--format", "json", "--output-dir", str(tmp_path / "sh"),
             "--shard", "1/2"]
    assert main(shard) == 0 and main(shard + ["--resume"]) == 0
    assert "2 of 2 lines need not be read again" in capsys.readouterr().err
