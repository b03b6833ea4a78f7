"""Hostile input (issue 9): every parser and image decoder refuses arbitrary bytes and structures
with htrjand's own error types, naming the file; XML never expands entities or loads anything;
decompression bombs are refused from the header; paths in a dataset cannot leave its folder.

The property tests mutate valid files (byte flips, truncation, inserted NUL / control characters /
invalid UTF-8 / huge or non-finite numbers / escaping paths; for XML also dropped and rewritten
attributes, deleted, duplicated, moved and deeply nested elements, foreign namespaces) and also
feed random bytes. CI mode runs HTRJAND_FUZZ_EXAMPLES (default 30) examples per parser with a
fixed seed; the long mode explores freshly each run:

    HTRJAND_FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_hostile_input.py --hypothesis-show-statistics
"""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import os
import re
import resource
import socket
import stat
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from lxml import etree
from PIL import Image

from htrjand import images as images_module
from htrjand.charmap import CharMapping, MappingError
from htrjand.config import SECTIONS, ConfigError, load_config
from htrjand.datasets import DataError, LineCrop, Problems, parse_spec, read_dataset
from htrjand.datasets.layout import load_page
from htrjand.datasets.paths import KIND as OUTSIDE
from htrjand.datasets.xml import parse_xml
from htrjand.images import ImageError, load_gray, load_line
from htrjand.lm import LMError, Lexicon, build_lm, load_lm, read_arpa

LONG = "HTRJAND_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("HTRJAND_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not LONG, print_blob=True,
                suppress_health_check=list(HealthCheck))
MAX_LOADS = 6  # lines decoded per example (each is a full image decode)

# ------------------------------------------------------------------------------- mutations

SECRET = b"@SECRET@"  # replaced by the absolute path of an image outside the dataset folder
TOKENS = [
    b"\x00", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xfe\xff", b"\r", b"\n", b"\r\n", b"\t",
    b"\x0b\x0c\x1c\x1d\x1e\x85", "\u2028\u2029".encode(), "\u202e".encode(), b"\x7f", b" ", b"-", b"|", b",",
    b"#", b"&", b"<", b">", b'"', b"'", b"]]>", b"<!--", b"&amp;", b"&#0;", b"&#xD800;", b"&foo;", b"-1", b"0",
    b"NaN", b"nan", b"inf", b"-inf", b"1e999", b"-1e999", b"1e308", b"99999999999999999999999", b"9" * 5000,
    b"1_000", b"0x10", b"\xd9\xa3", b"\xc2\xb2", b"../../", b"../secret.png", b"../../../secret.png", SECRET,
    b"/etc/passwd", b"..", b"/", b"\\", b"~nosuchuser/x", b"file:///etc/passwd", b"http://127.0.0.1:9/x",
    b"ok", b"err", b"s_pt", b"s_xx", b"pt", b"et", b"&c.", b"<gap/>", b"\\data\\", b"ngram 1=", b"\\end\\",
    b"\\1-grams:", b"<s>", b"</s>", b"<unk>", b"{", b"}", b"[", b"]", b": ", b"*a", b"&a ", b"!!binary",
    b"- ", b"2001-13-45", b"~", b"null", b"[" * 400, b"{a: " * 200,
]
NUMBERS = [b"1e999", b"-1e999", b"1e308", b"-1", b"-0", b"0", b"nan", b"inf", b"99999999999999999999999",
           b"9" * 5000, b"1_000", b"0x10", b"\xd9\xa3", b"\xc2\xb2", b"1e7", b"10000001", b"--5", b"+3", b".5", b"5."]
OPS = ("flip", "truncate", "insert", "delete", "duplicate", "number")


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """`seed` with a few byte-level mutations."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(OPS))
        pos = draw(st.integers(0, len(data))) if data else 0
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "duplicate":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 256))] * draw(st.integers(1, 4))
        elif op == "number":
            numbers = list(re.finditer(rb"\d+(\.\d+)?", bytes(data)))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1))]
                data[m.start():m.end()] = draw(st.sampled_from(NUMBERS))
    return bytes(data)


def hostile(seed: bytes):
    """Mostly mutations of a valid file, sometimes random bytes."""
    return st.one_of(mutated(seed), mutated(seed), mutated(seed), st.binary(max_size=600))


# attribute values that break parsers: numbers, point lists, paths (XML-legal characters only)
ATTR_VALUES = [
    "", " ", "nan", "inf", "-inf", "1e999", "-1e999", "-5", "0", "99999999999", "1e7", "10000001", "1.5e300",
    "1,2", "1,2 3", "a,b", "1,2,3 4,5", "0,0 0,0 0,0", "0,0 10,10 10,0 0,10", "5,5 1e308,1e308 -1e308,5",
    "nan,nan 1,1 2,2", "0,0 " * 12000, " ".join(f"{i % 97},{i % 89}" for i in range(3000)),
    "-1", "--5", "\u00b2", "\u0663", "+3", "1_000", "0x10", "readingOrder {index:--1;} structure {type:;}",
    "readingOrder {index:99999999999999999999999;}", "{", "}", ";:", "../../../secret.png", "../secret.png",
    "/etc/passwd", "file:///etc/passwd", "http://127.0.0.1:9/x.png", "C:\\scans\\x.png", "..", ".", "~/x.png",
    "page.png/../page.png", "\u202e.png", "a" * 5000, "mm10", "inch1200", "furlong", "pixel", "r1 r1 r1",
    "TL1", "S1", "TB1", "r_body", "l1", "tag1 tag2", "Left", "ok",
]
ATTR_NAMES = ["points", "imageFilename", "imageWidth", "imageHeight", "index", "custom", "regionRef", "id",
              "type", "conf", "x", "y", "ID", "REF", "TAGREFS", "HPOS", "VPOS", "WIDTH", "HEIGHT", "BASELINE",
              "POINTS", "CONTENT", "LABEL", "FileName", "Left", "Top", "Right", "Bottom", "Value"]
TAGS = ["TextLine", "TextRegion", "Coords", "Baseline", "TextEquiv", "Unicode", "Word", "Point", "ReadingOrder",
        "OrderedGroup", "UnorderedGroup", "RegionRefIndexed", "Page", "Layout", "PrintSpace", "TextBlock",
        "String", "SP", "HYP", "Shape", "Polygon", "ElementRef", "Tags", "OtherTag", "Description",
        "MeasurementUnit", "sourceImageInformation", "fileName", "SinglePage", "Paragraph", "Line"]
NAMESPACES = ["", "http://example.org/evil", "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15",
              "http://www.loc.gov/standards/alto/ns-v4#", "http://www.loc.gov/standards/alto/ns-v99#"]


def _set(element, name: str, value: str) -> None:
    try:
        element.set(name, value)
    except ValueError:  # lxml refuses characters XML cannot hold
        pass


@st.composite
def xml_mutated(draw, seed: bytes) -> bytes:
    """`seed` (an XML file) with a few structural mutations, serialised, then maybe byte-mutated."""
    root = etree.fromstring(seed)
    for _ in range(draw(st.integers(1, 8))):
        elements = list(root.iter(etree.Element))
        element = elements[draw(st.integers(0, len(elements) - 1))]
        op = draw(st.sampled_from(["drop_attr", "set_attr", "set_attr", "number", "number", "text", "remove",
                                   "duplicate", "move", "nest", "rename", "namespace"]))
        parent = element.getparent()
        if op == "drop_attr" and element.attrib:
            del element.attrib[draw(st.sampled_from(sorted(element.attrib)))]
        elif op == "set_attr":
            name = draw(st.sampled_from(sorted(element.attrib) + ATTR_NAMES))
            _set(element, name, draw(st.sampled_from(ATTR_VALUES)))
        elif op == "number":  # one number inside one attribute becomes hostile
            numeric = sorted(k for k, v in element.attrib.items() if re.search(r"\d", v))
            if numeric:
                name = draw(st.sampled_from(numeric))
                runs = list(re.finditer(r"\d+(\.\d+)?", element.get(name)))
                m = runs[draw(st.integers(0, len(runs) - 1))]
                value = element.get(name)
                _set(element, name, value[:m.start()] + draw(st.sampled_from(NUMBERS)).decode("utf-8") + value[m.end():])
        elif op == "text":
            try:
                element.text = draw(st.sampled_from(ATTR_VALUES + ["pixel", "mm10", "\u00e9\u0301 \t x"]))
            except ValueError:
                pass
        elif op == "remove" and parent is not None:
            parent.remove(element)
        elif op == "duplicate" and parent is not None:
            for _ in range(draw(st.integers(1, 3))):
                parent.insert(parent.index(element) + 1, copy.deepcopy(element))
        elif op == "move" and parent is not None:
            target = elements[draw(st.integers(0, len(elements) - 1))]
            if element not in list(target.iterancestors()) and target is not element:
                target.append(element)
        elif op == "nest" and parent is not None:
            depth = draw(st.sampled_from([1, 2, 5, 50, 240, 300]))
            tag = draw(st.sampled_from(TAGS))
            ns = etree.QName(element).namespace
            outer = inner = etree.Element(f"{{{ns}}}{tag}" if ns else tag)
            for _ in range(depth - 1):
                inner = etree.SubElement(inner, f"{{{ns}}}{tag}" if ns else tag)
            parent.replace(element, outer)
            inner.append(element)
        elif op == "rename":
            ns = etree.QName(element).namespace
            tag = draw(st.sampled_from(TAGS))
            element.tag = f"{{{ns}}}{tag}" if ns else tag
        elif op == "namespace":
            ns = draw(st.sampled_from(NAMESPACES))
            for e in root.iter(etree.Element):
                name = etree.QName(e).localname
                e.tag = f"{{{ns}}}{name}" if ns else name
            etree.cleanup_namespaces(root)
    encoding = draw(st.sampled_from(["UTF-8", "UTF-8", "UTF-16"]))
    data = etree.tostring(root, xml_declaration=True, encoding=encoding)
    return draw(mutated(data)) if draw(st.integers(0, 5)) == 0 else data


def hostile_xml(seed: bytes):
    """Mostly structural mutations (which keep the file well-formed, so the readers' deep paths run),
    sometimes byte-level ones or random bytes."""
    return st.one_of(*[xml_mutated(seed)] * 6, mutated(seed), st.binary(max_size=400))


# ------------------------------------------------------------------------------- fixtures and checks

def _png(width: int = 40, height: int = 12, value: int = 30, mode: str = "L", fmt: str = "PNG") -> bytes:
    pixels = np.full((height, width), 255, np.uint8)
    pixels[height // 4: 3 * height // 4, 2:-2] = value
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, fmt)
    return out.getvalue()


LINE_PNG = _png()
PAGE_PNG = _png(400, 300, 40)


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.replace(SECRET, str(folder.parent / "secret.png").encode()))


class Sandbox:
    """A temporary folder holding the dataset in `ds/` and a decoy image `secret.png` outside it."""

    def __enter__(self) -> "Sandbox":
        self._tmp = tempfile.TemporaryDirectory(prefix="htrjand-fuzz-")
        self.top = Path(self._tmp.name)
        self.secret = self.top / "secret.png"
        self.secret.write_bytes(_png(50, 20, 0))
        self.ds = self.top / "ds"
        self.ds.mkdir()
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()


def check_dataset(spec: str, box: Sandbox, confined: bool = True, where_root: Path | None = None) -> list:
    """Reading `spec` gives samples or a `DataError` naming a file of the dataset; problems name
    their file; with `confined`, no sample reads the decoy outside the dataset folder; decoding a
    line gives an array or an `ImageError`."""
    where_root = where_root or box.ds
    problems = Problems()
    try:
        samples = read_dataset(spec, problems)
    except DataError as err:
        assert str(where_root) in str(err), err
        event("refused: DataError")
        return []
    for kind, where, message in problems.entries + problems.warnings:
        assert str(where_root) in where, (kind, where, message)
        event(f"problem: {kind}")
    event(f"samples: {min(len(samples), 3)}{'+' if len(samples) >= 3 else ''}")
    for s in samples:
        assert str(where_root) in s.source
        if confined and isinstance(s.image, Path):
            assert s.image.resolve() != box.secret.resolve(), s
    for s in samples[:MAX_LOADS]:
        try:
            gray = load_line(s.image, s.crop, s.source)
        except ImageError as err:  # names the image file, or the record for a line cut from a page
            assert str(s.image) in str(err) or s.source in str(err), err
            event("line: ImageError")
        else:
            assert gray.dtype == np.uint8 and gray.ndim == 2
            event("line: decoded")
    return samples


def fuzz_one_file(fmt: str, files: dict[str, bytes], target: str, data, split: str, prepare=None) -> None:
    """Write a `fmt` dataset whose `target` file is drawn hostile from its sound version, run
    `prepare(box)` (e.g. plant a symlink), and check what the reader makes of it."""
    files = dict(files)
    files[target] = data.draw(hostile(files[target]), label=target)
    with Sandbox() as box:
        _write(box.ds, files)
        if prepare is not None:
            prepare(box)
        check_dataset(f"{fmt}:{box.ds}{split}", box)


# ------------------------------------------------------------------------------- TSV manifests and folders

MANIFEST = (b"lines/a.png\tfirst line\nlines/b.png\tsecond  line\t0.9000\n# a comment\n"
            b"c.png\tthird\n../../../secret.png\tescapes\n")


@FUZZ
@given(data=hostile(MANIFEST), allow=st.sampled_from(["", "?allow_outside=false"]))
@example(data=b"lines/a.png\x00x\tnul\n", allow="")
@example(data=b"/etc/passwd\tabs\n" + SECRET + b"\tabs\n", allow="?allow_outside=false")
def test_fuzz_tsv_manifest(data, allow):
    with Sandbox() as box:
        _write(box.ds, {"lines/a.png": LINE_PNG, "lines/b.png": _png(60), "c.png": b"not a png", "m.tsv": data})
        check_dataset(f"{box.ds / 'm.tsv'}{allow}", box, confined=bool(allow))


@FUZZ
@given(gt=hostile(b"first line\n"), image=hostile(LINE_PNG), escape=st.booleans())
def test_fuzz_image_gt_folder(gt, image, escape):
    with Sandbox() as box:
        _write(box.ds, {"a.png": image, "a.png.gt.txt": gt, "sub/b.png": LINE_PNG, "sub/b.gt.txt": b"second"})
        if escape:  # a symlink to the decoy, as an archive could carry
            (box.ds / "evil.png").symlink_to(box.secret)
            (box.ds / "evil.gt.txt").write_text("evil", encoding="utf-8")
        samples = check_dataset(f"folder:{box.ds}", box)
        assert "evil" not in [s.text for s in samples]


# ------------------------------------------------------------------------------- IAM

IAM_FILES = {
    "ascii/lines.txt": b"#--- lines.txt ---#\n"
                       b"a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from\n"
                       b"a01-000u-01 err 156 19 395 932 1850 105 nominating|&quot;any&quot;|more\n"
                       b"c04-156-05 ok 176 22 354 1618 1557 147 wartime|naval|officer|in|the|B B C's\n",
    "ascii/forms.txt": b"# forms\na01-000u 000 2 prt 7 5 52 36\nc04-156 171 3 all 7 7 47 47\n",
    "splits/train.uttlist": b"a01-000u\n",
    "splits/validation.uttlist": b"c04-156-05\n",
    "lines/a01/a01-000u/a01-000u-00.png": LINE_PNG,
    "lines/a01/a01-000u/a01-000u-01.png": _png(50),
    "lines/c04/c04-156/c04-156-05.png": _png(45),
}


@FUZZ
@given(target=st.sampled_from(["ascii/lines.txt", "ascii/lines.txt", "ascii/forms.txt", "splits/train.uttlist",
                               "lines/a01/a01-000u/a01-000u-00.png"]),
       data=st.data(), split=st.sampled_from(["", "?split=train", "?split=val"]))
def test_fuzz_iam(target, data, split):
    fuzz_one_file("iam", IAM_FILES, target, data, split)


# ------------------------------------------------------------------------------- PAGE XML and ALTO

PAGE_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
  <Metadata><Creator>fuzz</Creator></Metadata>
  <Page imageFilename="page.png" imageWidth="400" imageHeight="300">
    <ReadingOrder>
      <OrderedGroup id="ro" caption="order">
        <RegionRefIndexed index="1" regionRef="r_body"/>
        <UnorderedGroupIndexed id="ro2" index="0"><RegionRef regionRef="r_head"/></UnorderedGroupIndexed>
      </OrderedGroup>
    </ReadingOrder>
    <TextRegion id="r_body" type="paragraph" custom="structure {type:paragraph;}">
      <Coords points="20,100 380,100 380,220 20,220"/>
      <TextLine id="l1" custom="readingOrder {index:0;} structure {type:handwritten;}">
        <Coords points="40,110 360,110 360,150 140,150 40,130"/>
        <Baseline points="40,140 360,140"/>
        <TextEquiv index="1"><Unicode>worse</Unicode></TextEquiv>
        <TextEquiv index="0"><Unicode>Body one</Unicode></TextEquiv>
      </TextLine>
      <TextLine id="l2" custom="readingOrder {index:1;}">
        <Coords points="40,160 360,160 360,200 40,200"/>
        <Word id="w1"><Coords points="40,160 120,160 120,200 40,200"/><TextEquiv><Unicode>Body</Unicode></TextEquiv></Word>
        <Word id="w2"><Coords points="140,160 220,160 220,200 140,200"/><TextEquiv><Unicode>two</Unicode></TextEquiv></Word>
      </TextLine>
      <TextRegion id="r_nested"><Coords points="20,205 380,205 380,219 20,219"/>
        <TextLine id="l3"><Coords><Point x="30" y="206"/><Point x="300" y="206"/><Point x="300" y="218"/></Coords>
          <TextEquiv><Unicode>nested</Unicode></TextEquiv></TextLine>
      </TextRegion>
    </TextRegion>
    <TextRegion id="r_head" type="heading">
      <Coords points="20,20 380,20 380,80 20,80"/>
      <TextLine id="l4"><Coords points="40,30 40,30"/><Baseline points="40,62 300,62"/>
        <TextEquiv><Unicode>Title</Unicode></TextEquiv></TextLine>
    </TextRegion>
  </Page>
</PcGts>
"""

ALTO_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#">
  <Description>
    <MeasurementUnit>pixel</MeasurementUnit>
    <sourceImageInformation><fileName>page.png</fileName></sourceImageInformation>
  </Description>
  <Tags><OtherTag ID="tag1" LABEL="handwritten"/><OtherTag ID="tag2" TYPE="print"/></Tags>
  <ReadingOrder><OrderedGroup ID="ro"><ElementRef ID="e1" REF="TB2"/><ElementRef ID="e2" REF="S1"/></OrderedGroup></ReadingOrder>
  <Layout>
    <Page ID="p1" WIDTH="400" HEIGHT="300" PHYSICAL_IMG_NR="1">
      <PrintSpace HPOS="0" VPOS="0" WIDTH="400" HEIGHT="300">
        <TextBlock ID="TB1" TAGREFS="tag2" HPOS="20" VPOS="20" WIDTH="360" HEIGHT="120">
          <TextLine ID="TL1" TAGREFS="tag1" HPOS="40" VPOS="30" WIDTH="200" HEIGHT="30" BASELINE="40,55 240,55">
            <Shape><Polygon POINTS="40,30 240,30 240,60 40,60"/></Shape>
            <String ID="S1" CONTENT="Zeilen" HPOS="40" VPOS="30" WIDTH="90" HEIGHT="30"/><SP/>
            <String ID="S2" CONTENT="umbruch" HPOS="140" VPOS="30" WIDTH="90" HEIGHT="30"/><HYP CONTENT="-"/>
          </TextLine>
          <TextLine ID="TL2" HPOS="30" VPOS="70" WIDTH="300" HEIGHT="30" BASELINE="92">
            <String ID="S3" CONTENT="zweite" HPOS="30" VPOS="70" WIDTH="90" HEIGHT="30"/>
          </TextLine>
        </TextBlock>
        <TextBlock ID="TB2" HPOS="20" VPOS="150" WIDTH="360" HEIGHT="100">
          <TextLine ID="TL3" BASELINE="30 200 300 200"><String ID="S4" CONTENT="baseline only"/></TextLine>
        </TextBlock>
      </PrintSpace>
    </Page>
  </Layout>
</alto>
"""


def _page_dataset(box: Sandbox, name: str, xml: bytes) -> Path:
    """A page file in ds/a/b/ (the page reader may also use the folder above the file's)."""
    _write(box.ds, {f"a/b/{name}": xml, "a/b/page.png": PAGE_PNG})
    return box.ds / "a" / "b" / name


@FUZZ
@given(xml=hostile_xml(PAGE_XML), keep=st.sampled_from(["", "?keep_empty=1", "?types=handwritten"]))
@example(xml=PAGE_XML.replace(b'imageFilename="page.png"', b'imageFilename="' + SECRET + b'"'), keep="")
@example(xml=PAGE_XML.replace(b"40,110 360,110", b"40,110 1e999,110"), keep="")
@example(xml=PAGE_XML.replace(b'<Point x="30"', b'<Point x="nan"'), keep="")
@example(xml=PAGE_XML.replace(b'index="1"', b'index="--1"'), keep="")
def test_fuzz_page_xml(xml, keep):
    with Sandbox() as box:
        path = _page_dataset(box, "page.xml", xml)
        check_dataset(f"page:{path}{keep}", box)
        if xml.startswith(b"<?xml"):  # the folder, format detected
            check_dataset(f"{box.ds}{keep}", box)


@FUZZ
@given(xml=hostile_xml(ALTO_XML), unit=st.sampled_from(["pixel", "mm10"]))
@example(xml=ALTO_XML.replace(b"<fileName>page.png", b"<fileName>../../../secret.png"), unit="pixel")
@example(xml=ALTO_XML.replace(b'WIDTH="400"', b'WIDTH="nan"'), unit="mm10")
@example(xml=ALTO_XML.replace(b'BASELINE="92"', b'BASELINE="nan"'), unit="pixel")
def test_fuzz_alto(xml, unit):
    with Sandbox() as box:
        path = _page_dataset(box, "page.xml", xml.replace(b">pixel<", f">{unit}<".encode()))
        check_dataset(f"alto:{path}?keep_empty=1", box)


# ------------------------------------------------------------------------------- Washington, Saint Gall

GW_FILES = {
    "ground_truth/transcription.txt": b"270-01 s_2-s_7-s_0-|-L-e-t-t-e-r-s-s_cm-|-s_1st\n"
                                      b"270-02 u-n-l-e-s_s-s-|-s_bl-o-r-s_br-s_qo\n271-01 s_GW-|-s_lb-s_1\n",
    "data/line_images_normalized/270-01.png": LINE_PNG,
    "data/line_images_normalized/270-02.png": _png(30),
    "data/line_images_normalized/271-01.png": _png(35),
    "sets/cv1/train.txt": b"270-01\n270-02\n", "sets/cv1/valid.txt": b"271-01\n", "sets/cv1/test.txt": b"271-01\n",
}
SG_FILES = {
    "ground_truth/transcription.txt": b"csg562-003-01 v-e-r-s-a-t-i-o|p-e-r|h-a-b-e-r-e-t-u-r-pt|et conversatio|per\n"
                                      b"csg562-003-02 r-et|a-m-o-r-e-m-pt provocaret|amorem\n"
                                      b"csg562-004-01 P-a-r-e-n-t-e-s|s-c-d-m parentes|secundum\n",
    "data/line_images_normalized/csg562-003-01.png": LINE_PNG,
    "data/line_images_normalized/csg562-003-02.png": _png(30),
    "data/line_images_normalized/csg562-004-01.png": _png(35),
    "sets/train.txt": b"csg562-003\n", "sets/valid.txt": b"csg562-004\n", "sets/test.txt": b"csg562-099\n",
}


@FUZZ
@given(target=st.sampled_from(["ground_truth/transcription.txt", "ground_truth/transcription.txt",
                               "sets/cv1/train.txt", "data/line_images_normalized/270-01.png"]),
       data=st.data(), split=st.sampled_from(["", "?split=train", "?split=val&fold=cv1", "?fold=cv9&split=test"]),
       escape=st.booleans())
def test_fuzz_washington(target, data, split, escape):
    def plant_symlink(box) -> None:  # a line image that is a symlink to the decoy
        image = box.ds / "data" / "line_images_normalized" / "270-02.png"
        image.unlink()
        image.symlink_to(box.secret)

    fuzz_one_file("washington", GW_FILES, target, data, split, plant_symlink if escape else None)


@FUZZ
@given(target=st.sampled_from(["ground_truth/transcription.txt", "ground_truth/transcription.txt",
                               "sets/train.txt", "data/line_images_normalized/csg562-003-01.png"]),
       data=st.data(), split=st.sampled_from(["", "?split=train", "?split=test"]))
def test_fuzz_saint_gall(target, data, split):
    fuzz_one_file("saintgall", SG_FILES, target, data, split)


# ------------------------------------------------------------------------------- Bentham and RIMES

BENTHAM_FILES = {
    "Images/Lines/002_080_001_01_01.png": LINE_PNG,
    "Images/Lines/002_080_001_01_02.png": _png(30),
    "Transcriptions/002_080_001_01_01.txt": b"Mr. Bentham &amp; the <gap/> Panopticon &c.\n",
    "Transcriptions/002_080_001_01_02.txt": b"second line\n",
    "Partitions/TrainLines.lst": b"002_080_001_01_01\n002_080_001_01_02\n",
    "Partitions/ValidationLines.lst": b"002_080_001_01_02\n",
}


@FUZZ
@given(target=st.sampled_from(["Transcriptions/002_080_001_01_01.txt", "Partitions/TrainLines.lst",
                               "Partitions/TrainLines.lst", "Images/Lines/002_080_001_01_01.png"]),
       data=st.data(), split=st.sampled_from(["", "?split=train", "?split=val"]))
def test_fuzz_bentham(target, data, split):
    fuzz_one_file("bentham", BENTHAM_FILES, target, data, split)


RIMES_XML = """<?xml version="1.0" encoding="utf-8"?>
<DocumentList>
 <SinglePage FileName="images/train2011-9.png" Index="0">
  <Paragraph Value="x"><Line Bottom="30" Left="10" Right="110" Top="8" Value="Je vous adresse ¤ce¤ courrier" />
  <Line Bottom="62" Left="-4" Right="90" Top="36" Value="d&apos;obtenir un devis." /></Paragraph>
 </SinglePage>
 <SinglePage FileName="images/train2011-10.png" Index="0">
  <Paragraph Value="y"><Line Bottom="40" Left="20" Right="100" Top="12" Value="Madame, Monsieur," /></Paragraph>
 </SinglePage>
</DocumentList>
""".encode()
RIMES_LINES = {
    "RIMES-2011-Lines/Images/train2011-1_000001.jpg": _png(fmt="JPEG"),
    "RIMES-2011-Lines/Images/train2011-1_000002.jpg": _png(30, fmt="JPEG"),
    "RIMES-2011-Lines/Transcriptions/train2011-1_000001.txt": "Objet : résiliation\n".encode(),
    "RIMES-2011-Lines/Transcriptions/train2011-1_000002.txt": b"Madame,\n",
    "RIMES-2011-Lines/Sets/TrainLines.txt": b"train2011-1_000001\ntrain2011-1_000002\n",
}


@FUZZ
@given(xml=hostile_xml(RIMES_XML), split=st.sampled_from(["", "?split=train", "?split=val&val_pages=1"]))
@example(xml=RIMES_XML.replace(b"images/train2011-9.png", SECRET), split="")
@example(xml=RIMES_XML.replace(b'Right="110"', b'Right="' + b"9" * 400 + b'"'), split="")
def test_fuzz_rimes_xml(xml, split):
    with Sandbox() as box:
        _write(box.ds, {"training_2011.xml": xml, "images_gray/train2011-9.png": PAGE_PNG,
                        "images_gray/train2011-10.png": PAGE_PNG})
        check_dataset(f"rimes:{box.ds}{split}", box)


@FUZZ
@given(target=st.sampled_from(["RIMES-2011-Lines/Sets/TrainLines.txt", "RIMES-2011-Lines/Sets/TrainLines.txt",
                               "RIMES-2011-Lines/Transcriptions/train2011-1_000001.txt",
                               "RIMES-2011-Lines/Images/train2011-1_000001.jpg"]),
       data=st.data(), split=st.sampled_from(["", "?split=train"]))
def test_fuzz_rimes_lines(target, data, split):
    fuzz_one_file("rimes", RIMES_LINES, target, data, split)


# ------------------------------------------------------------------------------- charset mapping, config

MAPPING = "base: default\nmap: {\"ſ\": \"s\", \"&\": \"et\"}\nkeep: [\"—\"]\ndatasets:\n  hooker: {\"^\": \"\"}\n".encode()
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=4), max_leaves=20)
BOMB_YAML = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(7))


hostile_text = st.one_of(st.text(max_size=12), st.sampled_from(ATTR_VALUES), st.sampled_from(NUMBERS).map(bytes.decode))
scalars = st.one_of(hostile_text, st.integers(-10**30, 10**30), st.floats(), st.booleans(), st.none())


def _yaml_documents(seed: bytes, sections: dict[str, list[str]]):
    """Mutated copies of `seed`, random JSON/YAML structures, and documents with the right keys
    (`sections`: key -> its known sub-keys) holding hostile values, so the checks behind the
    top-level type checks run too."""
    def section(keys: list[str]):
        return st.dictionaries(st.sampled_from(keys) if keys else hostile_text,
                               st.one_of(scalars, st.lists(scalars, max_size=4), hostile_text.map(lambda t: {t: t})),
                               max_size=5)

    typed = st.fixed_dictionaries({}, optional={key: section(keys) for key, keys in sections.items()})
    dump = lambda d: yaml.safe_dump(d, allow_unicode=True).encode()  # noqa: E731
    return st.one_of(hostile(seed), hostile(seed), typed.map(dump), typed.map(dump),
                     st.dictionaries(st.sampled_from(list(sections)), json_values, max_size=4).map(dump),
                     json_values.map(lambda v: json.dumps(v).encode()))


@FUZZ
@given(text=_yaml_documents(MAPPING, {"base": [], "map": [], "keep": [], "datasets": ["hooker", "copiste"]}),
       suffix=st.sampled_from([".yaml", ".json"]))
@example(text=("[" * 5000).encode(), suffix=".yaml")
@example(text=("[" * 100000).encode(), suffix=".json")
@example(text=b"map: {a: b}\nkeep: 5\n", suffix=".yaml")
@example(text=(BOMB_YAML + "keep: *h\n").encode(), suffix=".yaml")
@example(text=(BOMB_YAML + "base: *h\n").encode(), suffix=".yaml")
@example(text=b"map: {a: 2001-13-45}\n", suffix=".yaml")
@example(text=b"{\"map\": {\"a\": 1" + b"0" * 5000 + b"}}", suffix=".json")
def test_fuzz_charset_mapping(text, suffix):
    with Sandbox() as box:
        path = box.ds / f"mapping{suffix}"
        path.write_bytes(text)
        started = time.perf_counter()
        try:
            mapping = CharMapping.load(path)
        except MappingError as err:
            assert str(path) in str(err)
            event("refused: MappingError")
        else:
            assert isinstance(mapping.apply("ſ “x” — y"), str)
            event("loaded")
        assert time.perf_counter() - started < 10


CONFIG = b"""preset: student
model: {channels: [8, 12, 16, 16, 16, 16], d_model: 32, heads: 2, blocks: 1, dropout: 0.1}
data: {train: [a.tsv, "iam:/x?split=train"], val: [b.tsv], batch_size: 16, augment: 0.5, charset_mapping: default}
train: {epochs: 3, lr: 0.001, max_time: "00:01:00:00", deterministic: true, devices: auto}
distill: {teacher: "", temperature: 2.0, unlabelled: []}
"""


@FUZZ
@given(text=_yaml_documents(CONFIG, {name: [f.name for f in dataclasses.fields(section)]
                                     for name, section in SECTIONS.items()} | {"preset": []}))
@example(text=b"train: {epochs: .inf}\n")
@example(text=b"train: {epochs: 1" + b"0" * 5000 + b"}\n")
@example(text=b"preset: [student]\n")
@example(text=b"train: {1: 2}\n")
@example(text=b"train: {lr: [" + b"[" * 3000 + b"]}\n")
@example(text=b"train: {output: 2001-13-45}\n")
def test_fuzz_training_config(text):
    with Sandbox() as box:
        path = box.ds / "config.yaml"
        path.write_bytes(text)
        try:
            cfg = load_config(path)
        except ConfigError as err:
            assert str(path) in str(err) or "config" in str(err)
            event("refused: ConfigError")
        else:
            assert cfg.to_dict()["train"]
            event("loaded")


# ------------------------------------------------------------------------------- language models

def _arpa() -> bytes:
    lm, _ = build_lm(["the cat sat", "the dog sat on the mat", "a cat"], 3, "word")
    with tempfile.TemporaryDirectory() as tmp:
        lm.write_arpa(Path(tmp) / "lm.arpa")
        return (Path(tmp) / "lm.arpa").read_bytes()


ARPA = _arpa()


@st.composite
def arpa_mutated(draw, seed: bytes) -> bytes:
    """`seed` with n-gram lines changed in place (numbers, tokens, fields): the counts still match,
    so the checks on each entry run."""
    lines = seed.decode().split("\n")
    entries = [i for i, line in enumerate(lines) if line and line[0] in "-0123456789"]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.sampled_from(entries))
        fields = lines[i].split("\t")
        k = draw(st.integers(0, len(fields) - 1))
        fields[k] = draw(st.one_of(st.sampled_from(NUMBERS).map(bytes.decode), hostile_text,
                                   st.just(fields[k] + " extra"), st.just("")))
        lines[i] = "\t".join(fields)
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@FUZZ
@given(arpa=st.one_of(hostile(ARPA), arpa_mutated(ARPA), arpa_mutated(ARPA)), sidecar=st.one_of(st.none(), hostile(b'{"unit": "word", "order": 3}')),
       lexicon=hostile(b"the\ncat 12\nsat\n"))
@example(arpa=b"\\data\\\nngram 99999999999=1\n", sidecar=None, lexicon=b"x")
@example(arpa=b"\\data\\\nngram 1=" + b"9" * 5000 + b"\n", sidecar=b"[" * 100000, lexicon=b"\xff")
@example(arpa=ARPA, sidecar=b'{"unit": "x' + b"1" * 5000 + b'"}', lexicon=b"")
def test_fuzz_language_model(arpa, sidecar, lexicon):
    with Sandbox() as box:
        path = box.ds / "lm.arpa"
        path.write_bytes(arpa)
        if sidecar is not None:
            (box.ds / "lm.arpa.json").write_bytes(sidecar)
        for load in (lambda: read_arpa(path), lambda: load_lm(path, backend="python")):
            try:
                lm = load()
            except LMError as err:
                assert str(path) in str(err)
                event("refused: LMError")
            else:
                lm = lm[0] if isinstance(lm, tuple) else lm
                assert math.isfinite(lm.sentence_logprob(["the", "cat"]))
                event("loaded")
        (box.ds / "words.txt").write_bytes(lexicon)
        try:
            assert len(Lexicon.load(box.ds / "words.txt")) > 0
        except LMError as err:
            assert "words.txt" in str(err)


# ------------------------------------------------------------------------------- images

IMAGE_SEEDS = [LINE_PNG, _png(fmt="JPEG"), _png(mode="1"), _png(mode="RGBA"), _png(mode="P", fmt="GIF"),
               _png(fmt="BMP"), _png(fmt="TIFF"), _png(mode="I;16", fmt="TIFF"), _png(fmt="WEBP")]
coordinate = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                       st.floats(-50, 500))
polygons = st.lists(st.tuples(coordinate, coordinate), max_size=12)


@FUZZ
@given(data=st.one_of(*(hostile(seed) for seed in IMAGE_SEEDS)), polygon=polygons, mask=st.booleans())
@example(data=LINE_PNG, polygon=[(1e300, 5), (3, 1e300), (0, 0)], mask=True)
@example(data=LINE_PNG, polygon=[(10**400, 5), (3, 4), (0, 0)], mask=True)
@example(data=LINE_PNG, polygon=[(float("nan"), 5), (3, 4), (0, 0)], mask=False)
def test_fuzz_image_decoding(data, polygon, mask):
    with Sandbox() as box:
        path = box.ds / "line.png"
        path.write_bytes(data)
        for source in (data, path, str(path)):
            try:
                gray = load_gray(source)
            except ImageError as err:
                assert isinstance(source, bytes) or str(path) in str(err)
                event("refused: ImageError")
            else:
                assert gray.dtype == np.uint8 and gray.ndim == 2
                event("decoded")
        crop = LineCrop(tuple(polygon), mask=mask)
        try:
            line = load_line(path, crop, "where.xml:7")
        except ImageError as err:
            assert str(path) in str(err) or "where.xml:7" in str(err)
        else:
            assert line.dtype == np.uint8 and line.ndim == 2


# ------------------------------------------------------------------------------- XML safety

def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _never_opened(fifo: Path, action) -> None:
    """Run `action` in a thread: reading the FIFO `fifo` would block it, so it must finish."""
    errors: list[BaseException] = []

    def run():
        try:
            action()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # release it before failing
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(5)
        pytest.fail(f"the parser opened {fifo}")
    if errors:
        raise errors[0]


@pytest.fixture
def listener():
    """A local TCP port that records whether anything connected to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    yield server
    server.close()


def _connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
        return True
    except BlockingIOError:
        return False


def _xxe_documents(fifo: Path, port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}/evil.dtd"
    body = '<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"><Page imageFilename="p.png">' \
           '<TextRegion id="r"><TextLine id="l"><Coords points="1,1 9,1 9,9"/><TextEquiv><Unicode>{}</Unicode>' \
           '</TextEquiv></TextLine></TextRegion></Page></PcGts>'
    return {
        "file entity": f'<!DOCTYPE PcGts [<!ENTITY x SYSTEM "file://{fifo}">]>' + body.format("&x;"),
        "parameter entity": f'<!DOCTYPE PcGts [<!ENTITY % x SYSTEM "file://{fifo}"> %x;]>' + body.format("a"),
        "external DTD": f'<!DOCTYPE PcGts SYSTEM "file://{fifo}">' + body.format("a"),
        "http entity": f'<!DOCTYPE PcGts [<!ENTITY x SYSTEM "{url}">]>' + body.format("&x;"),
        "http parameter entity": f'<!DOCTYPE PcGts [<!ENTITY % x SYSTEM "{url}"> %x;]>' + body.format("a"),
        "http DTD": f'<!DOCTYPE PcGts SYSTEM "{url}">' + body.format("a"),
        "XInclude": body.format(f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file://{fifo}" '
                                'parse="text"/>'),
    }


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
def test_xml_never_loads_external_resources(tmp_path, listener, encoding):
    fifo = _fifo(tmp_path / "secret")
    for name, text in _xxe_documents(fifo, listener.getsockname()[1]).items():
        path = tmp_path / "page.xml"
        path.write_bytes(text.encode(encoding))

        def read_all():
            for action in (lambda: parse_xml(path), lambda: load_page(path),
                           lambda: read_dataset(f"page:{path}?keep_empty=1", Problems()),
                           lambda: read_dataset(path, Problems())):  # detection reads the file's start too
                try:
                    action()
                except DataError as err:
                    assert str(path) in str(err), (name, err)

        _never_opened(fifo, read_all)
        assert not _connected(listener), name
        if "entity" in name:  # declared entities are refused, whatever the encoding
            with pytest.raises(DataError, match="declares entities"):
                parse_xml(path)


def test_rimes_xml_never_loads_external_resources(tmp_path, listener):
    fifo = _fifo(tmp_path / "secret")
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/evil.dtd"
    for doctype in (f'<!DOCTYPE DocumentList [<!ENTITY x SYSTEM "file://{fifo}">]>', f'<!DOCTYPE DocumentList SYSTEM "{url}">'):
        (tmp_path / "training_2011.xml").write_bytes(
            (doctype + '<DocumentList><SinglePage FileName="p.png"><Line Left="1" Top="1" Right="9" Bottom="9" '
             'Value="x"/></SinglePage></DocumentList>').encode("utf-16"))
        problems = Problems()
        _never_opened(fifo, lambda: _read_or_refuse(f"rimes:{tmp_path}", problems, tmp_path))
        assert not _connected(listener)


def _read_or_refuse(spec, problems, folder):
    try:
        read_dataset(spec, problems)
    except DataError as err:
        assert str(folder) in str(err)


def _billion_laughs() -> str:
    entities = '<!ENTITY a0 "ha">' + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
    return (f'<!DOCTYPE PcGts [{entities}]><PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/'
            '2019-07-15"><Page imageFilename="p.png"><TextLine id="l"><TextEquiv><Unicode>&a9;</Unicode>'
            '</TextEquiv></TextLine></Page></PcGts>')


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_billion_laughs_is_refused_quickly_in_bounded_memory(tmp_path, encoding):
    path = tmp_path / "laughs.xml"
    path.write_bytes(_billion_laughs().encode(encoding))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"laughs\.xml.*(declares entities|amplification)"):
        parse_xml(path)
    problems = Problems()
    assert read_dataset(f"page:{tmp_path}", problems) == []  # the file is skipped, reported
    assert problems.counts() == {"malformed XML": 1} and str(path) in problems.entries[0][1]
    assert time.perf_counter() - started < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 50_000  # KiB: 10^9 "ha" were never made


def test_huge_polygons_are_cut_quickly(tmp_path):
    """Self-intersection is checked pairwise (O(n^2)): a 9,000-point outline would take minutes. A
    contour traced pixel by pixel is simplified (within half a pixel) and kept; one that stays too
    complex is replaced by its convex hull (reported); more than 10,000 points are unparsable."""
    (tmp_path / "page.png").write_bytes(PAGE_PNG)
    n = 9000
    traced = " ".join(f"{40 + i * 320 // (n // 2)},110" for i in range(n // 2)) + " " + \
             " ".join(f"{360 - i * 320 // (n // 2)},150" for i in range(n // 2))
    zigzag = " ".join(f"{200 + 150 * math.cos(2 * math.pi * i / n) * (1 + 0.05 * (i % 2)):.2f},"
                      f"{150 + 100 * math.sin(2 * math.pi * i / n):.2f}" for i in range(n))
    too_many = " ".join(f"{i % 300},{i % 7}" for i in range(10_001))
    body = "".join(f'<TextLine id="l{k}"><Coords points="{points}"/><Baseline points="40,140 360,140"/>'
                   f'<TextEquiv><Unicode>line {k}</Unicode></TextEquiv></TextLine>'
                   for k, points in enumerate((traced, zigzag, too_many)))
    (tmp_path / "page.xml").write_text(
        '<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"><Page imageFilename='
        f'"page.png" imageWidth="400" imageHeight="300"><TextRegion id="r">{body}</TextRegion></Page></PcGts>')
    problems = Problems()
    started = time.perf_counter()
    samples = read_dataset(tmp_path / "page.xml", problems)
    assert time.perf_counter() - started < 3
    assert [s.text for s in samples] == ["line 0", "line 1", "line 2"]
    assert len(samples[0].crop.polygon) <= 8 and samples[0].crop.bounds == (40, 110, 360, 150)
    messages = [m for _, _, m in problems.warnings]
    assert "too complex to check" in messages[0] and "more than 10000 points" in messages[1]
    assert not samples[2].crop.mask  # the baseline grown to a box


def test_huge_tree_stays_off(tmp_path):
    deep = tmp_path / "deep.xml"
    deep.write_text("<PcGts>" + "<a>" * 300 + "</a>" * 300 + "</PcGts>")
    with pytest.raises(DataError, match=r"deep\.xml:1: malformed XML \(Excessive depth"):
        parse_xml(deep)
    big = tmp_path / "big.xml"
    big.write_text("<PcGts><Page>" + "x" * 11_000_000 + "</Page></PcGts>")
    with pytest.raises(DataError, match=r"big\.xml:1: malformed XML .*too long"):
        parse_xml(big)


def test_no_other_xml_parser_in_the_code_base():
    """Every XML file htrjand reads goes through `datasets.xml.parse_xml` (or, for format detection,
    `layout.root_format`, which uses the same settings); nothing else parses XML."""
    src = Path(__file__).resolve().parents[1] / "src" / "htrjand"
    allowed = {"datasets/xml.py": 2, "datasets/layout.py": 1}  # XMLParser + fromstring; iterparse
    for path in src.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        calls = re.findall(r"etree\.(?:fromstring|parse|iterparse|XML|XMLParser|HTMLParser|XMLPullParser)\(|"
                           r"xml\.(?:dom|sax|etree)|minidom|ElementTree|xmltodict|BeautifulSoup", text)
        assert len(calls) == allowed.get(str(path.relative_to(src)), 0), (path, calls)
    layout_text = (src / "datasets" / "layout.py").read_text(encoding="utf-8")
    assert "resolve_entities=False" in layout_text and "no_network=True" in layout_text
    assert "load_dtd=False" in layout_text and "huge_tree=False" in layout_text


# ------------------------------------------------------------------------------- decompression bombs

def _png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A 1-bit PNG whose pixels (all white) compress to ~150 KB: 900 megapixels when decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    compressor, parts = zlib.compressobj(9), []
    block = row * 1000
    for _ in range(height // 1000):
        parts.append(compressor.compress(block))
    parts.append(compressor.flush())
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(_png_bomb())
    return path


def test_decompression_bomb_is_refused_from_its_header(bomb):
    assert bomb.stat().st_size < 300_000
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for source in (bomb, str(bomb), bomb.read_bytes()):
        with pytest.raises(ImageError, match=r"(bomb\.png|image bytes): image (of 30000x30000 pixels is over|too large)"):
            load_gray(source)
    with pytest.raises(ImageError, match=r"bomb\.png"):
        load_line(bomb, LineCrop.box(0, 0, 100, 40))
    assert time.perf_counter() - started < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100_000  # KiB; decoded it is 900 MB


def test_page_with_a_bomb_image_is_a_skipped_record(bomb):
    (bomb.parent / "bomb.xml").write_bytes(PAGE_XML.replace(b'imageFilename="page.png"', b'imageFilename="bomb.png"'))
    problems = Problems()
    assert read_dataset(bomb.parent / "bomb.xml", problems) == []
    assert problems.counts() == {"unreadable image": 1} and "bomb.png" in problems.entries[0][2]


def test_pixel_limit_is_a_setting(tmp_path, monkeypatch):
    path = tmp_path / "line.png"
    path.write_bytes(_png(40, 12))
    assert load_gray(path).shape == (12, 40)
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 400)
    with pytest.raises(ImageError, match=r"line\.png: image of 40x12 pixels is over the limit of 400 pixels"):
        load_gray(path)
    with pytest.raises(ImageError, match="HTRJAND_MAX_IMAGE_PIXELS"):
        load_line(path.read_bytes(), LineCrop.box(0, 0, 10, 10))


# ------------------------------------------------------------------------------- paths outside the dataset

def _outside(problems: Problems) -> list[tuple[str, str]]:
    return [(where, message) for kind, where, message in problems.entries if kind == OUTSIDE]


def test_manifest_paths_may_leave_its_folder_unless_confined(tmp_path):
    ds = tmp_path / "ds"
    (ds / "lines").mkdir(parents=True)
    (ds / "lines" / "a.png").write_bytes(LINE_PNG)
    secret = tmp_path / "secret.png"
    secret.write_bytes(LINE_PNG)
    (ds / "m.tsv").write_text(f"lines/a.png\tinside\n../secret.png\tup\n{secret}\tabsolute\n", encoding="utf-8")
    # manifests are lists the user writes (htrjand recognize writes ../ paths): open by default
    assert [s.text for s in read_dataset(ds / "m.tsv", Problems())] == ["inside", "up", "absolute"]
    problems = Problems()
    samples = read_dataset(f"{ds / 'm.tsv'}?allow_outside=false", problems)
    assert [s.text for s in samples] == ["inside"]
    assert [w for w, _ in _outside(problems)] == [f"{ds / 'm.tsv'}:2", f"{ds / 'm.tsv'}:3"]
    assert "lies outside the dataset folder" in problems.entries[0][2] and "allow_outside=true" in problems.entries[0][2]


def test_page_and_alto_images_outside_the_dataset_are_refused(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(PAGE_PNG)
    ds = tmp_path / "a" / "b" / "ds"
    ds.mkdir(parents=True)
    for name, xml in (("page.xml", PAGE_XML.replace(b'"page.png"', f'"{secret}"'.encode())),
                      ("alto.xml", ALTO_XML.replace(b">page.png<", b">../../../secret.png<"))):
        (ds / name).write_bytes(xml)
        problems = Problems()
        assert read_dataset(ds / name, problems) == []
        [(where, message)] = _outside(problems)
        assert where.startswith(f"{ds / name}:") and "page image" in message and "allow_outside=true" in message
        assert read_dataset(f"{ds / name}?allow_outside=true", Problems())  # read when allowed
    # the folder above the XML's stays allowed (Transkribus puts the XML in page/ beside the images)
    (ds / "page" ).mkdir()
    (ds / "scan.png").write_bytes(PAGE_PNG)
    (ds / "page" / "scan.xml").write_bytes(PAGE_XML.replace(b'"page.png"', b'"scan.png"'))
    assert len(read_dataset(ds / "page" / "scan.xml", Problems())) == 4


def test_page_image_links_and_linked_folders(tmp_path):
    """A page image that is itself a link is followed (`htrjand recognize` links the page image beside
    the XML it writes); a linked folder on the way is resolved like any path."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "page.png").write_bytes(PAGE_PNG)
    ds = tmp_path / "x" / "y" / "ds"
    ds.mkdir(parents=True)
    (ds / "page.png").symlink_to(elsewhere / "page.png")
    (ds / "page.xml").write_bytes(PAGE_XML)
    assert len(read_dataset(ds / "page.xml", Problems())) == 4
    (ds / "page.png").unlink()
    (ds / "imgs").symlink_to(elsewhere)
    (ds / "page.xml").write_bytes(PAGE_XML.replace(b'"page.png"', b'"imgs/page.png"'))
    problems = Problems()
    assert read_dataset(ds / "page.xml", problems) == []
    [(_, message)] = _outside(problems)
    assert f"resolves to {elsewhere / 'page.png'}" in message


def test_symlinks_out_of_line_folders_are_refused(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(LINE_PNG)
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "a.png").write_bytes(LINE_PNG)
    (ds / "a.gt.txt").write_text("inside")
    (ds / "evil.png").symlink_to(secret)
    (ds / "evil.gt.txt").write_text("evil")
    (ds / "alias.png").symlink_to(ds / "a.png")  # a link that stays inside is fine
    (ds / "alias.gt.txt").write_text("alias")
    problems = Problems()
    assert sorted(s.text for s in read_dataset(ds, problems)) == ["alias", "inside"]
    [(where, message)] = _outside(problems)
    assert where == str(ds / "evil.png") and f"resolves to {secret}" in message
    assert sorted(s.text for s in read_dataset(f"{ds}?allow_outside=true", Problems())) == ["alias", "evil", "inside"]


def test_ids_that_escape_iam_bentham_and_rimes_folders_are_refused(tmp_path):
    (tmp_path / "secret.txt").write_text("secret text")
    secret = tmp_path / "secret.png"
    secret.write_bytes(LINE_PNG)
    # IAM: a line id naming a path
    iam = tmp_path / "iam"
    _write(iam, {"ascii/lines.txt": b"a01-000u-00 ok 1 1 1 1 1 1 fine\n../../../../secret-x-y ok 1 1 1 1 1 1 evil\n",
                 "lines/a01/a01-000u/a01-000u-00.png": LINE_PNG})
    problems = Problems()
    assert [s.text for s in read_dataset(f"iam:{iam}", problems)] == ["fine"]
    assert [w for w, _ in _outside(problems)] == [f"{iam / 'ascii' / 'lines.txt'}:2"]
    # Bentham: a partition entry naming a transcription outside
    bentham = tmp_path / "bentham"
    _write(bentham, {**BENTHAM_FILES, "Partitions/TrainLines.lst": b"002_080_001_01_01\n../../secret\n"})
    problems = Problems()
    assert [s.line_id for s in read_dataset(f"bentham:{bentham}?split=train", problems)] == ["002_080_001_01_01"]
    assert [w for w, _ in _outside(problems)] == [f"{bentham / 'Partitions' / 'TrainLines.lst'}:2"]
    assert "secret text" not in str(problems.entries)
    # RIMES: an absolute FileName
    rimes = tmp_path / "rimes"
    _write(rimes, {"training_2011.xml": RIMES_XML.replace(b"images/train2011-9.png", str(secret).encode()),
                   "images_gray/train2011-10.png": PAGE_PNG})
    problems = Problems()
    assert [s.group for s in read_dataset(f"rimes:{rimes}", problems)] == ["train2011-10"]
    [(where, _)] = _outside(problems)
    assert where == f"{rimes / 'training_2011.xml'}:3"


def test_allow_outside_is_a_common_dataset_key():
    spec = parse_spec("pages/*.xml?allow_outside=yes&types=handwritten")
    assert spec.allow_outside is True and spec.options == {"types": "handwritten"}
    assert parse_spec(str(spec)).allow_outside is True
    assert parse_spec({"path": "x", "allow_outside": False}).allow_outside is False
    assert parse_spec("x.tsv").allow_outside is None
    with pytest.raises(DataError, match="allow_outside must be true or false"):
        parse_spec("x.tsv?allow_outside=maybe")


def test_sandbox_decoy_is_a_readable_image():
    """The decoy the fuzz tests hide outside each dataset is a real image, so reading it would count."""
    with Sandbox() as box:
        assert load_gray(box.secret).shape == (20, 50)
        assert stat.S_ISREG(box.secret.stat().st_mode)
