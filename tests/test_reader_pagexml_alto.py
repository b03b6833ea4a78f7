"""PAGE XML and ALTO readers: the real pages in shared/data/pages, and fixtures written the way
Transkribus (PAGE 2013/2019) and eScriptorium/OCR tools (ALTO v2-v4) lay their files out."""
import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from htrjand.charset import normalize_text
from htrjand.datasets import DataError, Problems, alto, detect_format, layout, pagexml, read_dataset
from htrjand.datasets.geometry import PointsError, parse_points, self_intersects
from htrjand.images import load_line

# --------------------------------------------------------------------------- real pages

REAL_LINES = {"copiste_imp_wikitexte_0024": 17, "copiste_wikitexte_0003_1": 28, "copiste_imp_wikitexte_0058": 21,
              "stanford_Lettre241": 34, "hooker_JDH_2_16_65_001": 18, "hooker_JDH_2_16_151_001": 25,
              "hooker_JDH_2_16_157_003": 18}
FIRST_TEXT = {"copiste_imp_wikitexte_0024": "imp_wikitexte_0024",
              "copiste_wikitexte_0003_1": "Texte 2 - Référence du texte: wikitexte_0003",
              "copiste_imp_wikitexte_0058": "Imp_wikitexte_0058", "stanford_Lettre241": "BOARD OF TRUSTEES",
              "hooker_JDH_2_16_65_001": "31st Dec/79", "hooker_JDH_2_16_151_001": "",
              "hooker_JDH_2_16_157_003": "in England, & 100 gone to America."}


@pytest.fixture(scope="module")
def pages(shared_data) -> dict[str, Path]:
    files = {p.stem: p for p in sorted((shared_data / "pages").glob("*/*.xml"))}
    assert set(files) == set(REAL_LINES)
    return files


@pytest.fixture(scope="module")
def transcriptions(shared_data) -> dict[str, str]:
    """Line id -> text of the published line datasets (ids `<page-stem>_<line-index:04d>`)."""
    texts = {}
    for tsv in list((shared_data / "copiste").glob("*.tsv")) + list((shared_data / "hooker").glob("*.tsv")):
        for row in tsv.read_text(encoding="utf-8").splitlines():
            image, text = row.split("\t", 1)
            texts[Path(image).stem] = text
    return texts


def test_real_pages_line_counts_order_and_first_text(pages):
    for stem, path in pages.items():
        doc = layout.load_page(path)
        assert doc.format == ("alto" if path.parent.name == "alto" else "page")
        assert doc.image == path.with_suffix(".jpg")
        assert len(doc.lines) == REAL_LINES[stem], stem
        assert normalize_text(doc.lines[0].text) == FIRST_TEXT[stem], stem
        # the reading order of these pages is their document order (Transkribus wrote it that way)
        assert [line.index for line in doc.lines] == list(range(REAL_LINES[stem]))
        lines_in_file = [e for e in doc.root.iter() if isinstance(e.tag, str) and e.tag.endswith("}TextLine")]
        assert [line.element for line in doc.lines] == lines_in_file


def test_real_pages_reading_order_follows_the_region_refs(pages):
    lines = pagexml.page_lines(pages["hooker_JDH_2_16_65_001"])
    regions = list(dict.fromkeys(line.region_id for line in lines))
    assert regions == ["tr_2", "tr_1", "tr_5", "tr_6", "tr_3", "tr_4"]  # RegionRefIndexed 0..5
    assert [line.id for line in lines[:3]] == ["tr_2_tl_2", "tr_1_tl_1", "tr_1_tl_2"]
    assert sum(1 for line in lines if line.element.findall("{*}Word")) == 18  # lines with Word children


def test_real_texts_match_the_published_line_datasets(pages, transcriptions):
    compared = 0
    for stem, path in pages.items():
        for line in layout.load_page(path).lines:
            key = f"{stem}_{line.index:04d}"
            if key in transcriptions:
                assert normalize_text(line.text) == transcriptions[key], key
                compared += 1
    assert compared == 16 + 28 + 21 + 18 + 17 + 18  # every published line of these pages


def test_real_folders_read_without_problems(pages):
    problems = Problems()
    page_dir = pages["hooker_JDH_2_16_65_001"].parent
    assert detect_format(page_dir) == "page"
    assert detect_format(pages["copiste_wikitexte_0003_1"]) == "alto"
    assert detect_format(page_dir.parent / "alto" / "*.xml") == "alto"
    samples = read_dataset(f"{page_dir}?keep_empty=true", problems)
    assert len(samples) == 18 + 25 + 18 and not problems.entries
    s = samples[0]
    assert (s.dataset, s.group, s.line_id) == ("page", "hooker_JDH_2_16_151_001", "r1l1")
    assert s.source == f"{pages['hooker_JDH_2_16_151_001']}:20" and s.text == ""
    trained = read_dataset(page_dir, problems)  # lines without transcription dropped for training
    assert len(trained) == len(samples) - 6 and problems.counts() == Counter({"empty transcription": 6})


def test_stanford_line_types(pages):
    path = pages["stanford_Lettre241"]
    lines = alto.page_lines(path)
    assert Counter(line.types for line in lines) == Counter(
        {("DefaultLine:Typewritten",): 28, ("DefaultLine:Print",): 5, ("DefaultLine:Signature",): 1})
    assert read_dataset(f"{path}?types=handwritten", Problems()) == []  # no handwritten line on the page
    assert len(read_dataset(f"{path}?types=Typewritten", Problems())) == 28  # case-insensitive part
    assert len(read_dataset(f"{path}?types=defaultline:print,signature", Problems())) == 6
    kept = read_dataset(f"{path}?skip_types=print,typewritten", Problems())
    assert [s.text for s in kept] == [normalize_text(lines[-1].text)]
    assert lines[-1].types == ("DefaultLine:Signature",)
    # eScriptorium's untyped lines carry the "default" label
    copiste = pages["copiste_wikitexte_0003_1"]
    assert len(read_dataset(f"{copiste}?types=handwritten,default", Problems())) == 28


def test_real_line_crop_matches_its_polygon(pages):
    path = pages["hooker_JDH_2_16_157_003"]
    sample = read_dataset(path, Problems())[3]
    assert sample.text == "Nevertheless I am more than" and sample.crop.mask
    left, top, right, bottom = sample.crop.bounds
    line = load_line(sample.image, sample.crop, sample.source)
    assert abs(line.shape[0] - (bottom - top)) <= 8 and abs(line.shape[1] - (right - left)) <= 8
    x0, y0 = max(int(left) - 3, 0), max(int(top) - 3, 0)
    inside = np.zeros(line.shape, np.uint8)
    cv2.fillPoly(inside, [np.round(np.asarray(sample.crop.polygon) - (x0, y0)).astype(np.int32)], 255)
    near = cv2.dilate(inside, np.ones((11, 11), np.uint8)) > 0
    assert (line[~near] == 255).all() and (~near).sum() > 1000  # white outside the polygon
    assert line[inside > 0].min() < 100  # ink inside it


# --------------------------------------------------------------------------- fixtures

PAGE_2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
PAGE_2013 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _image(path: Path, size=(400, 300), dpi=None, boxes=()) -> Path:
    """A white page (PNG or JPEG by suffix) with black rectangles (l, t, r, b) as ink."""
    page = np.full((size[1], size[0]), 255, np.uint8)
    for l, t, r, b in boxes:
        page[t:b, l:r] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(page).save(path, **({"dpi": (dpi, dpi)} if dpi else {}))
    return path


def _pcgts(body: str, image="page.png", ns=PAGE_2019, size=(400, 300)) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<PcGts xmlns="{ns}" xmlns:xsi="{XSI}" xsi:schemaLocation="{ns} {ns}/pagecontent.xsd">
    <Metadata>
        <Creator>htrjand tests</Creator>
        <Created>2024-05-01T10:00:00</Created>
        <LastChange>2024-05-01T10:00:00</LastChange>
    </Metadata>
    <Page imageFilename="{image}" imageWidth="{size[0]}" imageHeight="{size[1]}">
{body}
    </Page>
</PcGts>
"""


def _line(lid: str, points: str, text: str | None, baseline: str = "", custom: str = "") -> str:
    base = f'\n                <Baseline points="{baseline}"/>' if baseline else ""
    pad = "\n" + " " * 16
    equiv = f"{pad}<TextEquiv>{pad}    <Unicode>{text}</Unicode>{pad}</TextEquiv>" if text is not None else ""
    attrs = f' custom="{custom}"' if custom else ""
    return f"""            <TextLine id="{lid}"{attrs}>
                <Coords points="{points}"/>{base}{equiv}
            </TextLine>"""


def _region(rid: str, points: str, lines: str, rtype: str = "paragraph") -> str:
    return f"""        <TextRegion id="{rid}" type="{rtype}">
            <Coords points="{points}"/>
{lines}
        </TextRegion>"""


READING_ORDER_PAGE = _pcgts("""        <ReadingOrder>
            <OrderedGroup id="ro_1" caption="Regions reading order">
                <UnorderedGroupIndexed id="ro_1_body" index="1" caption="body">
                    <RegionRef regionRef="r_body"/>
                </UnorderedGroupIndexed>
                <RegionRefIndexed index="0" regionRef="r_head"/>
            </OrderedGroup>
        </ReadingOrder>
        <TextRegion id="r_body" type="paragraph" custom="structure {type:paragraph;}">
            <Coords points="20,100 380,100 380,220 20,220"/>
            <TextLine id="l_b1" custom="readingOrder {index:0;} structure {type:handwritten;}">
                <Coords points="40,110 360,110 360,150 140,150 40,130"/>
                <Baseline points="40,140 360,140"/>
                <TextEquiv index="1" conf="0.4">
                    <Unicode>Bodg one</Unicode>
                </TextEquiv>
                <TextEquiv index="0" conf="0.9">
                    <Unicode>Body  one</Unicode>
                </TextEquiv>
            </TextLine>
            <TextLine id="l_b2" custom="readingOrder {index:1;}">
                <Coords points="40,160 360,160 360,200 40,200"/>
                <Word id="l_b2_w1">
                    <Coords points="40,160 120,160 120,200 40,200"/>
                    <TextEquiv><Unicode>Body</Unicode></TextEquiv>
                </Word>
                <Word id="l_b2_w2">
                    <Coords points="140,160 220,160 220,200 140,200"/>
                    <TextEquiv><Unicode>two</Unicode></TextEquiv>
                </Word>
            </TextLine>
        </TextRegion>
        <TextRegion id="r_head" type="heading">
            <Coords points="20,20 380,20 380,80 20,80"/>
            <TextLine id="l_h1">
                <Coords points="40,30 300,30 300,70 40,70"/>
                <Baseline points="40,62 300,62"/>
                <TextEquiv><Unicode>Title</Unicode></TextEquiv>
            </TextLine>
        </TextRegion>
        <TextRegion id="r_margin" type="marginalia">
            <Coords points="20,230 380,230 380,290 20,290"/>
            <TextLine id="l_m1">
                <Coords points="30,240 200,240 200,280 30,280"/>
                <TextEquiv><Unicode/></TextEquiv>
            </TextLine>
        </TextRegion>""")


@pytest.fixture
def page2019(tmp_path) -> Path:
    # ink only in the polygon of l_b1 and in the corner of its box that the polygon leaves out
    _image(tmp_path / "page.png", boxes=[(60, 115, 340, 125), (45, 140, 100, 148)])
    (tmp_path / "page.xml").write_text(READING_ORDER_PAGE, encoding="utf-8")
    return tmp_path / "page.xml"


def test_page2019_reading_order_text_and_types(page2019):
    lines = pagexml.page_lines(page2019)
    assert [line.id for line in lines] == ["l_h1", "l_b1", "l_b2", "l_m1"]
    assert [line.index for line in lines] == [2, 0, 1, 3]  # position in the file
    assert [line.text for line in lines] == ["Title", "Body  one", "Body two", ""]
    assert lines[1].types == ("handwritten",) and lines[1].region_types == ("paragraph",)
    assert lines[0].types == () and lines[0].labels == ("default", "heading")
    assert lines[1].baseline == ((40.0, 140.0), (360.0, 140.0)) and len(lines[1].polygon) == 5

    problems = Problems()
    samples = read_dataset(f"{page2019}?keep_empty=1", problems)
    assert not problems.entries
    assert [s.text for s in samples] == ["Title", "Body one", "Body two", ""]
    assert {s.dataset for s in samples} == {page2019.parent.name} and {s.group for s in samples} == {"page"}
    assert samples[1].source == f"{page2019}:19" and samples[1].line_id == "l_b1"
    assert [s.text for s in read_dataset(page2019, Problems())] == ["Title", "Body one", "Body two"]

    def texts(query):
        return [s.text for s in read_dataset(f"{page2019}?keep_empty=1&{query}", Problems())]

    assert texts("types=HEADING") == ["Title"]
    assert texts("types=handwritten") == ["Body one"]
    assert texts("types=handwritten,default") == ["Title", "Body one", "Body two", ""]
    assert texts("skip_types=marginalia,heading") == ["Body one", "Body two"]


def test_page2019_crop_is_masked_to_the_polygon(page2019):
    sample = read_dataset(page2019, Problems())[1]
    line = load_line(sample.image, sample.crop, sample.source)
    assert line.shape == (150 - 110 + 7, 360 - 40 + 7)  # polygon box + 3 px margin each side
    assert (line[115 - 107:125 - 107, 60 - 37:340 - 37] == 0).all()  # ink inside the polygon kept
    # the box corner outside the polygon (below the slanted edge 140,150 -> 40,130) is painted white
    assert (line[147 - 107, 45 - 37:60 - 37] == 255).all()
    assert line[140 - 107, 99 - 37] == 0  # inside the polygon, near its edge


def test_page2013_fallbacks_and_transkribus_layout(tmp_path):
    # Transkribus exports put the XML into page/ and the images beside that folder
    _image(tmp_path / "doc" / "0001_scan.jpg")
    body = _region("r1", "10,10 390,10 390,140 10,140", "\n".join([
        _line("l1", "20,20 300,20 300,60 20,60", "first"),
        _line("l2", "20,70 25,70 20,70", "degenerate, baseline box", baseline="30,110 300,112"),
        _line("l3", "20,70 x,70 300,100", "unparsable, baseline box", baseline="30,120 300,120"),
        _line("l4", "20,80 300,80", "degenerate, region box")]))
    xml = tmp_path / "doc" / "page" / "0001_scan.xml"
    xml.parent.mkdir(parents=True)
    xml.write_text(_pcgts(body, image="0001_scan.jpg", ns=PAGE_2013), encoding="utf-8")
    problems = Problems()
    samples = read_dataset(tmp_path / "doc", problems)
    assert [s.text for s in samples] == ["first", "degenerate, baseline box", "unparsable, baseline box",
                                         "degenerate, region box"]
    assert samples[0].image == tmp_path / "doc" / "0001_scan.jpg"
    assert samples[0].crop.mask and not samples[1].crop.mask
    # the baseline grown to a box: 3/4 of the page's median line height (40) above, 1/4 below
    assert samples[1].crop.bounds == (30, 110 - 30, 300, 112 + 10)
    assert samples[3].crop.bounds == (10, 10, 390, 140)  # the parent region's box
    assert not problems.entries and problems.warning_counts() == Counter({"repaired polygon": 3})
    assert [w for _, w, _ in problems.warnings] == [f"{xml}:{n}" for n in (17, 24, 31)]
    assert "degenerate polygon (2 distinct points)" in problems.warnings[0][2]
    assert "'x' is not a number" in problems.warnings[1][2]


def _bad_page(tmp_path: Path, name: str, body: str, image: str | None = "page.png") -> Path:
    if image:
        _image(tmp_path / image)
    path = tmp_path / f"{name}.xml"
    path.write_text(_pcgts(_region("r1", "5,5 395,5 395,295 5,295", body), image=image or "gone.png"),
                    encoding="utf-8")
    return path


def test_bad_input_is_reported_with_file_and_line(tmp_path, caplog):
    good = _bad_page(tmp_path, "a_good", _line("g1", "20,20 300,20 300,60 20,60", "fine"))
    (tmp_path / "b_malformed.xml").write_text(_pcgts(_line("m1", "1,1 2,2 3,1", "x")).replace("</Page>", ""),
                                              encoding="utf-8")
    _bad_page(tmp_path, "c_noimage", _line("n1", "20,20 300,20 300,60 20,60", "no image"), image=None)
    _bad_page(tmp_path, "d_lines", "\n".join([
        _line("o1", "500,400 600,400 600,450 500,450", "outside"),
        _line("s1", "10,10 110,40 110,10 10,40", "bowtie"),
        _line("z1", "10,10 50,10 90,10", "flat, falls back to region box"),
        _line("u1", "10,10 50,10 90,50 10,50", "bad baseline", baseline="10,45 oops")]))
    problems = Problems()
    with caplog.at_level(logging.WARNING, logger="htrjand"):
        samples = read_dataset(tmp_path, problems)
    assert [s.text for s in samples] == ["fine", "bowtie", "flat, falls back to region box", "bad baseline"]
    assert problems.counts() == Counter({"malformed XML": 1, "missing image": 1, "polygon outside image": 1})
    assert problems.warning_counts() == Counter({"repaired polygon": 2, "unparsable points": 1})
    where = {kind: w for kind, w, _ in problems.entries}
    assert where["malformed XML"].startswith(f"{tmp_path / 'b_malformed.xml'}:")
    assert where["missing image"] == f"{tmp_path / 'c_noimage.xml'}:8"
    assert where["polygon outside image"] == f"{tmp_path / 'd_lines.xml'}:11"
    messages = dict(((k, w), m) for k, w, m in problems.entries)
    assert "gone.png" in messages[("missing image", where["missing image"])]
    assert "400x300" in messages[("polygon outside image", where["polygon outside image"])]
    bowtie = samples[1].crop
    assert sorted(bowtie.polygon) == [(10, 10), (10, 40), (110, 10), (110, 40)]  # the convex hull
    assert samples[3].crop.baseline == ()  # unparsable baseline dropped, polygon kept
    assert "self-intersecting polygon; using its convex hull (kept)" in caplog.text
    assert str(good) in samples[0].source


def test_degenerate_line_without_fallback_is_skipped(tmp_path):
    _image(tmp_path / "page.png")
    body = """        <TextRegion id="r1">
            <Coords points="5,5 395,5"/>
            <TextLine id="z1">
                <Coords points="10,10 50,10 10,10"/>
                <TextEquiv><Unicode>nothing to cut</Unicode></TextEquiv>
            </TextLine>
            <TextLine id="z2">
                <Coords points="10,10 50,1O 50,50"/>
                <TextEquiv><Unicode>unparsable</Unicode></TextEquiv>
            </TextLine>
        </TextRegion>"""
    (tmp_path / "p.xml").write_text(_pcgts(body), encoding="utf-8")
    problems = Problems()
    assert read_dataset(tmp_path / "p.xml", problems) == []
    assert [(k, w) for k, w, _ in problems.entries] == [("degenerate polygon", f"{tmp_path / 'p.xml'}:11"),
                                                        ("unparsable points", f"{tmp_path / 'p.xml'}:15")]


def test_image_found_by_stem_and_unknown_namespace(tmp_path):
    _image(tmp_path / "folio_7.jpg")
    path = tmp_path / "folio_7.xml"
    path.write_text(_pcgts(_region("r", "1,1 399,1 399,99 1,99", _line("l", "5,5 90,5 90,40 5,40", "x")),
                           image="renamed.tif"), encoding="utf-8")
    assert layout.load_page(path).image == tmp_path / "folio_7.jpg"
    assert len(read_dataset(path, Problems())) == 1
    other = tmp_path / "other.xml"
    other.write_text(_pcgts("", ns="http://example.org/not-page/2020"), encoding="utf-8")
    with pytest.raises(DataError, match=r"other\.xml:2: unknown PAGE namespace 'http://example.org/not-page/2020'"):
        read_dataset(f"page:{other}")
    mets = tmp_path / "mets.xml"
    mets.write_text('<mets xmlns="http://www.loc.gov/METS/"/>', encoding="utf-8")
    with pytest.raises(DataError, match="mets.xml: root element <mets> is neither PAGE"):
        read_dataset(f"page:{mets}")
    assert not pagexml.detect(mets) and not alto.detect(path) and pagexml.detect(tmp_path / "*.xml")
    mismatch = tmp_path / "sub" / "folio_7.xml"
    _image(mismatch.with_suffix(".jpg"))
    mismatch.write_text(path.read_text(encoding="utf-8").replace('imageWidth="400"', 'imageWidth="800"'),
                        encoding="utf-8")
    problems = Problems()
    assert len(read_dataset(mismatch, problems)) == 1  # kept, with a warning
    assert [(k, w) for k, w, _ in problems.warnings] == [("image size mismatch", f"{mismatch}:8")]


def test_line_order_inside_a_region(tmp_path):
    _image(tmp_path / "page.png")
    lines = [_line("a", "5,5 90,5 90,40 5,40", "second", custom="readingOrder {index:1;}"),
             _line("b", "5,50 90,50 90,90 5,90", "first", custom="readingOrder {index:0;}")]
    (tmp_path / "ro.xml").write_text(_pcgts(_region("r", "1,1 399,1 399,99 1,99", "\n".join(lines))),
                                     encoding="utf-8")
    assert [line.text for line in pagexml.page_lines(tmp_path / "ro.xml")] == ["first", "second"]
    lines[1] = lines[1].replace(' custom="readingOrder {index:0;}"', "")  # not every line indexed
    (tmp_path / "ro.xml").write_text(_pcgts(_region("r", "1,1 399,1 399,99 1,99", "\n".join(lines))),
                                     encoding="utf-8")
    assert [line.text for line in pagexml.page_lines(tmp_path / "ro.xml")] == ["second", "first"]


def test_parse_points():
    assert parse_points("1,2 3.5,4") == ((1, 2), (3.5, 4)) == parse_points(" 1 2  3.5 4 ")
    assert parse_points("") == ()
    for bad in ("1,2 3", "1 2 3", "1,2,3 4,5", "1,2 a,4", "1;2 3;4"):
        with pytest.raises(PointsError):
            parse_points(bad)
    assert self_intersects([(0, 0), (10, 10), (10, 0), (0, 10)])
    assert not self_intersects([(0, 0), (5, 0), (5, 0), (10, 0), (10, 10), (0, 10), (0, 0)])


# --------------------------------------------------------------------------- ALTO fixtures

def _alto(ns: str, unit: str, image: str, layout_xml: str, extra: str = "") -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="{ns}" xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Description>
    <MeasurementUnit>{unit}</MeasurementUnit>
    <sourceImageInformation>
      <fileName>{image}</fileName>
    </sourceImageInformation>
  </Description>{extra}
  <Layout>
{layout_xml}
  </Layout>
</alto>
"""


ALTO_V2_LAYOUT = """    <Page ID="PAGE1" PHYSICAL_IMG_NR="1" HEIGHT="300" WIDTH="400">
      <PrintSpace HEIGHT="300" WIDTH="400" VPOS="0" HPOS="0">
        <TextBlock ID="TB1" HEIGHT="100" WIDTH="360" VPOS="20" HPOS="20">
          <TextLine ID="TL1" HEIGHT="30" WIDTH="200" VPOS="30" HPOS="40" BASELINE="52">
            <String ID="S1" CONTENT="Zeilen" HEIGHT="30" WIDTH="90" VPOS="30" HPOS="40"/>
            <SP WIDTH="10" VPOS="30" HPOS="130"/>
            <String ID="S2" CONTENT="umbruch" HEIGHT="30" WIDTH="90" VPOS="30" HPOS="140"/>
            <HYP CONTENT="\u00ac"/>
          </TextLine>
          <TextLine ID="TL2" HEIGHT="30" WIDTH="300" VPOS="70" HPOS="30" BASELINE="92">
            <String ID="S3" CONTENT="zweite" HEIGHT="30" WIDTH="90" VPOS="70" HPOS="30"/>
            <SP WIDTH="10" VPOS="70" HPOS="120"/>
            <String ID="S4" CONTENT="Zeile" HEIGHT="30" WIDTH="90" VPOS="70" HPOS="130"/>
          </TextLine>
        </TextBlock>
      </PrintSpace>
    </Page>"""


def test_alto_v2_boxes_baselines_and_hyphens(tmp_path):
    _image(tmp_path / "scan.png", boxes=[(40, 30, 240, 60)])
    path = tmp_path / "scan.xml"
    path.write_text(_alto("http://www.loc.gov/standards/alto/ns-v2#", "pixel", "scan.png", ALTO_V2_LAYOUT),
                    encoding="utf-8")
    assert detect_format(path) == "alto" and not pagexml.detect(path)
    lines = alto.page_lines(path)
    assert [(line.id, line.text) for line in lines] == [("TL1", "Zeilen umbruch\u00ac"), ("TL2", "zweite Zeile")]
    assert lines[0].polygon == () and lines[0].box == (40, 30, 240, 60)
    assert lines[0].baseline == ((40, 52), (240, 52))  # ALTO 2: BASELINE is the y of a horizontal line
    problems = Problems()
    samples = read_dataset(path, problems)
    assert not problems.entries and [s.line_id for s in samples] == ["TL1", "TL2"]
    assert samples[0].crop.polygon == ((40, 30), (240, 30), (240, 60), (40, 60)) and not samples[0].crop.mask
    crop = load_line(samples[0].image, samples[0].crop)
    assert crop.shape == (30 + 7, 200 + 7) and (crop[3:-4, 3:-4] == 0).all() and (crop[:3] == 255).all()


def test_alto_v4_reading_order_tags_and_bad_points(tmp_path):
    _image(tmp_path / "p.jpg")
    layout_xml = """    <Page WIDTH="400" HEIGHT="300" PHYSICAL_IMG_NR="0" ID="eSc_dummypage_">
      <PrintSpace HPOS="0" VPOS="0" WIDTH="400" HEIGHT="300">
        <TextBlock ID="B1" TAGREFS="BT1" HPOS="10" VPOS="10" WIDTH="380" HEIGHT="100">
          <TextLine ID="L1" TAGREFS="LT1" BASELINE="20,40 300,42" HPOS="20" VPOS="15" WIDTH="280" HEIGHT="35">
            <Shape><Polygon POINTS="20,15 300,15 300,50 20,50"/></Shape>
            <String CONTENT="first in file"/>
          </TextLine>
          <TextLine ID="L2" TAGREFS="LT2" BASELINE="20 90 300 90" HPOS="20" VPOS="60" WIDTH="280" HEIGHT="40">
            <Shape><Polygon POINTS="20 60 300 60 nope 100"/></Shape>
            <String CONTENT="bad polygon"/>
          </TextLine>
        </TextBlock>
        <TextBlock ID="B2" HPOS="10" VPOS="150" WIDTH="380" HEIGHT="100">
          <TextLine ID="L3" BASELINE="20 200 300 200" HPOS="20" VPOS="170" WIDTH="280" HEIGHT="40">
            <Shape><Polygon POINTS="20 170 300 170 300 210 20 210"/></Shape>
            <String CONTENT="read"/><SP/><String CONTENT="first"/>
          </TextLine>
        </TextBlock>
      </PrintSpace>
    </Page>"""
    extra = """
  <Tags>
    <OtherTag ID="BT1" LABEL="Main" DESCRIPTION="block type Main"/>
    <OtherTag ID="LT1" LABEL="DefaultLine:Handwritten" DESCRIPTION="line type"/>
    <OtherTag ID="LT2" LABEL="Interlinear" DESCRIPTION="line type"/>
  </Tags>
  <ReadingOrder>
    <OrderedGroup ID="ro">
      <ElementRef ID="ro1" REF="B2"/>
      <UnorderedGroup ID="ro2">
        <ElementRef ID="ro3" REF="L2"/>
      </UnorderedGroup>
    </OrderedGroup>
  </ReadingOrder>"""
    path = tmp_path / "p.xml"
    path.write_text(_alto("http://www.loc.gov/standards/alto/ns-v4#", "pixel", "p.jpg", layout_xml, extra),
                    encoding="utf-8")
    lines = alto.page_lines(path)
    assert [line.id for line in lines] == ["L3", "L2", "L1"]  # B2, then L2, then the rest
    assert lines[2].types == ("DefaultLine:Handwritten",) and lines[2].region_types == ("Main",)
    assert lines[0].labels == ("default",) and lines[1].baseline == ((20, 90), (300, 90))
    problems = Problems()
    samples = read_dataset(f"{path}?types=handwritten,interlinear", problems)
    assert [s.text for s in samples] == ["bad polygon", "first in file"]
    assert samples[0].crop.bounds == (20, 60, 300, 100) and not samples[0].crop.mask  # HPOS box
    assert problems.warning_counts() == Counter({"repaired polygon": 1})
    assert problems.warnings[0][1] == f"{path}:30" and "'nope' is not a number" in problems.warnings[0][2]


def _mm10_file(tmp_path: Path, dpi, page_size: str = "") -> Path:
    _image(tmp_path / "mm.png", size=(600, 400), dpi=dpi)
    layout_xml = f"""    <Page ID="P1" PHYSICAL_IMG_NR="1"{page_size}>
      <PrintSpace HPOS="0" VPOS="0" WIDTH="5080" HEIGHT="3386">
        <TextBlock ID="TB1" HPOS="254" VPOS="254" WIDTH="2540" HEIGHT="1270">
          <TextLine ID="TL1" HPOS="25.4" VPOS="50.8" WIDTH="254" HEIGHT="25.4" BASELINE="70">
            <String CONTENT="in tenths of a millimetre"/>
          </TextLine>
        </TextBlock>
      </PrintSpace>
    </Page>"""
    path = tmp_path / "mm.xml"
    path.write_text(_alto("http://www.loc.gov/standards/alto/ns-v3#", "mm10", "mm.png", layout_xml), encoding="utf-8")
    return path


def test_alto_mm10_units_use_the_image_dpi(tmp_path, caplog):
    path = _mm10_file(tmp_path, dpi=100)  # 254 mm10 = 1 inch = 100 px
    with caplog.at_level(logging.WARNING, logger="htrjand"):
        [sample] = read_dataset(path, Problems())
    assert sample.crop.bounds == pytest.approx((10, 20, 110, 30), abs=1e-3) and "dpi" not in caplog.text
    assert np.allclose(sample.crop.baseline, ((10, 27.559), (110, 27.559)), atol=1e-3)
    assert load_line(sample.image, sample.crop).shape == (10 + 7, 100 + 7)


def test_alto_mm10_units_without_dpi(tmp_path, caplog):
    path = _mm10_file(tmp_path / "nodpi", dpi=None)
    with caplog.at_level(logging.WARNING, logger="htrjand"):
        [sample] = read_dataset(path, Problems())
    assert sample.crop.bounds == pytest.approx((30, 60, 330, 90))  # 300 dpi assumed
    assert "assuming 300 dpi" in caplog.text
    path = _mm10_file(tmp_path / "pagesize", dpi=None, page_size=' WIDTH="1200" HEIGHT="800"')
    [sample] = read_dataset(path, Problems())  # no DPI, but the page is 1200 mm10 for 600 px
    assert sample.crop.bounds == pytest.approx((12.7, 25.4, 139.7, 38.1))


def test_alto_bad_unit_and_namespace(tmp_path):
    good = _mm10_file(tmp_path, dpi=100)
    bad = tmp_path / "zz_points.xml"
    bad.write_text(good.read_text(encoding="utf-8").replace(">mm10<", ">points<"), encoding="utf-8")
    problems = Problems()
    assert len(read_dataset(f"alto:{tmp_path}", problems)) == 1
    assert problems.entries == [("unusable file", f"{bad}:4",
                                 "unknown MeasurementUnit 'points' (known: pixel, mm10, inch1200); "
                                 "the whole file is skipped")]
    bad.write_text(good.read_text(encoding="utf-8").replace("alto/ns-v3#", "alto/ns-v9"), encoding="utf-8")
    bad.write_text(bad.read_text(encoding="utf-8").replace("www.loc.gov/standards/alto", "example.org/alto"),
                   encoding="utf-8")
    with pytest.raises(DataError, match=r"zz_points\.xml:2: unknown ALTO namespace"):
        read_dataset(f"alto:{tmp_path}", Problems())


def test_split_subfolders_and_dataset_name(tmp_path):
    for split in ("train", "valid"):
        _image(tmp_path / "archive" / split / "p.png")
        (tmp_path / "archive" / split / "p.xml").write_text(
            _pcgts(_region("r", "1,1 399,1 399,99 1,99", _line("l", "5,5 90,5 90,40 5,40", split))),
            encoding="utf-8")
    assert [s.text for s in read_dataset(f"{tmp_path / 'archive'}?split=val", Problems())] == ["valid"]
    [s] = read_dataset(f"{tmp_path / 'archive'}?split=train", Problems())
    assert (s.text, s.dataset) == ("train", "archive")
    assert [s.dataset for s in read_dataset(f"{tmp_path / 'archive'}/*/p.xml?name=x", Problems())] == ["x", "x"]
    assert {s.dataset for s in read_dataset(f"{tmp_path / 'archive'}/*/p.xml", Problems())} == {"archive"}
    with pytest.raises(DataError, match="no split of their own"):
        read_dataset(f"{tmp_path / 'archive'}?split=test", Problems())
