"""`htrjand serve`: the JSON API on a tiny trained model (lines, pages, exports, limits, bad input, threads)."""
from __future__ import annotations

import io
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="htrjand serve needs the serve extra: pip install 'htrjand[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from htrjand.datasets import Problems, read_dataset, spec_of  # noqa: E402
from htrjand.datasets.layout import load_page  # noqa: E402
from htrjand.demo import render_line  # noqa: E402
from htrjand.runtime import load  # noqa: E402
from htrjand.serve import create_app  # noqa: E402

from conftest import TINY_MODEL  # noqa: E402

_CHECKPOINTS: dict[str, Path] = {}


def tiny_checkpoint(rendered: dict[str, Path], folder: Path) -> Path:
    """A checkpoint of the tiny model after two optimiser steps (cached for the test session)."""
    if "ckpt" not in _CHECKPOINTS:
        from htrjand.config import load_config
        from htrjand.training import train

        cfg = load_config(preset_name="student", overrides={
            "data": {"train": [str(rendered["train"])], "val": [str(rendered["val"])], "batch_size": 16,
                     "workers": 0, "augment": 0},
            "train": {"output": str(folder), "warmup_steps": 2, "progress": False, "epochs": 1, "max_steps": 2},
            "model": dict(TINY_MODEL)})
        train(cfg)
        _CHECKPOINTS["ckpt"] = folder / "last.ckpt"
    return _CHECKPOINTS["ckpt"]


@pytest.fixture(scope="session")
def checkpoint(rendered, tmp_path_factory) -> Path:
    return tiny_checkpoint(rendered, tmp_path_factory.mktemp("serve_model"))


@pytest.fixture(scope="module")
def reader(checkpoint):
    return load(checkpoint)


@pytest.fixture(scope="module")
def client(reader):
    app = create_app(reader, max_upload_mb=1, max_files=4, max_pixels=4_000_000, low_confidence=0.7)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def line_files(rendered) -> list[Path]:
    return [s.image for s in read_dataset(rendered["test"])[:3]]


PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"


def make_page(folder: Path, image_name: str = "scan_001.png") -> tuple[Path, Path, list[str]]:
    """A PAGE 2013 file and its page image with three rendered lines in two regions (region r2 comes
    first in the file but second in the ReadingOrder) and a fourth line whose polygon lies outside
    the image. Returns the XML, the image and the line ids in reading order."""
    rng = random.Random(5)
    lines = [render_line(t, rng) for t in ("the first line", "and a second", "third of them")]
    width, height = 900, 400
    page = Image.new("L", (width, height), 250)
    boxes = []
    for i, im in enumerate(lines):
        x, y = 40 + 10 * i, 30 + 110 * i
        page.paste(im.crop((0, 0, min(im.width, 800), im.height)), (x, y))
        boxes.append((x, y, x + min(im.width, 800), y + im.height))

    def text_line(line_id: str, box, text: str) -> str:
        l, t, r, b = box
        return (f'<TextLine id="{line_id}"><Coords points="{l},{t} {r},{t} {r},{b} {l},{b}"/>'
                f'<Baseline points="{l},{b - 12} {r},{b - 12}"/>'
                f'<TextEquiv><Unicode>{text}</Unicode></TextEquiv></TextLine>')

    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<PcGts xmlns="{PAGE_NS}">'
           "<Metadata><Creator>test</Creator><Created>2024-01-01T00:00:00</Created>"
           "<LastChange>2024-01-01T00:00:00</LastChange></Metadata>"
           f'<Page imageFilename="{image_name}" imageWidth="{width}" imageHeight="{height}">'
           '<ReadingOrder><OrderedGroup id="ro"><RegionRefIndexed index="0" regionRef="r1"/>'
           '<RegionRefIndexed index="1" regionRef="r2"/></OrderedGroup></ReadingOrder>'
           f'<TextRegion id="r2"><Coords points="0,240 900,240 900,400 0,400"/>'
           f'{text_line("l3", boxes[2], "")}{text_line("lx", (2000, 2000, 2300, 2060), "")}</TextRegion>'
           f'<TextRegion id="r1"><Coords points="0,0 900,0 900,240 0,240"/>'
           f'{text_line("l1", boxes[0], "old text")}{text_line("l2", boxes[1], "")}</TextRegion>'
           "</Page></PcGts>\n")
    folder.mkdir(parents=True, exist_ok=True)
    xml_path, image_path = folder / "scan_001.xml", folder / image_name
    xml_path.write_text(xml, encoding="utf-8")
    page.save(image_path)
    return xml_path, image_path, ["l1", "l2", "l3", "lx"]


def make_alto(folder: Path, page_image: Path) -> Path:
    """An ALTO v4 file for the page `make_page` drew (its first two lines; the second without an ID)."""
    with Image.open(page_image) as im:
        width, height = im.size
    rows = []
    for i, (line_id, (l, t, r, b)) in enumerate((("t1", (40, 30, 700, 94)), ("", (50, 140, 700, 204)))):
        ident = f' ID="{line_id}"' if line_id else ""
        rows.append(f'<TextLine{ident} HPOS="{l}" VPOS="{t}" WIDTH="{r - l}" HEIGHT="{b - t}">'
                    f'<Shape><Polygon POINTS="{l} {t} {r} {t} {r} {b} {l} {b}"/></Shape>'
                    f'<String CONTENT="line {i}" HPOS="{l}" VPOS="{t}" WIDTH="{r - l}" HEIGHT="{b - t}"/></TextLine>')
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#">'
           f"<Description><MeasurementUnit>pixel</MeasurementUnit><sourceImageInformation>"
           f"<fileName>{page_image.name}</fileName></sourceImageInformation></Description>"
           f'<Layout><Page ID="p1" WIDTH="{width}" HEIGHT="{height}" PHYSICAL_IMG_NR="1">'
           f'<PrintSpace HPOS="0" VPOS="0" WIDTH="{width}" HEIGHT="{height}"><TextBlock ID="b1">'
           + "".join(rows) + "</TextBlock></PrintSpace></Page></Layout></alto>\n")
    path = folder / (page_image.stem + ".alto.xml")
    path.write_text(xml, encoding="utf-8")
    return path


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 255).save(buf, "PNG")
    return buf.getvalue()


def _files(paths: list[Path]) -> list:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def test_health_and_model(client, reader):
    assert client.get("/api/health").json() == {"status": "ok", "engine": "torch"}
    info = client.get("/api/model").json()
    assert info["engine"] == "torch" and info["preset"] == "student" and info["model"] == "last.ckpt"
    assert info["parameters"] == reader.parameters > 0
    assert info["charset_size"] == len(reader.charset) and len(info["charset"]) == len(reader.charset)
    assert info["height"] == 64 and info["low_confidence"] == 0.7 and info["decoder"] == "greedy"
    assert info["limits"]["max_files"] == 4 and info["limits"]["max_upload_mb"] == 1
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file-input"' in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


def test_recognize_lines_gives_the_models_results(client, reader, line_files):
    response = client.post("/api/recognize", files=_files(line_files))
    assert response.status_code == 200
    data = response.json()
    expected = reader.recognize([str(p) for p in line_files])
    assert [d["image"] for d in data] == [p.name for p in line_files]
    for d, want, path in zip(data, expected, line_files):
        w, h = Image.open(path).size
        assert (d["width"], d["height"]) == (w, h) and d["error"] is None
        assert d["text"] == want.text and d["confidence"] == pytest.approx(want.confidence, abs=1e-4)
        n = len(d["text"])
        assert len(d["char_confidences"]) == n and len(d["char_positions"]) == n
        assert all(0.0 <= c <= 1.0 for c in d["char_confidences"])
        xs = [x for pos in d["char_positions"] for x in pos]
        assert xs == sorted(xs) and all(0 <= x <= w for x in xs)
        assert "".join(d["text"][wd["start"]:wd["end"]] for wd in d["words"]) == d["text"].replace(" ", "")
        assert d["nbest"] and d["nbest"][0]["text"] == d["text"]


def test_recognize_with_beam_decoder(client, reader, line_files):
    response = client.post("/api/recognize", files=_files(line_files[:1]), data={"decoder": "beam", "beam_width": "3"})
    assert response.status_code == 200
    want = reader.recognize([str(line_files[0])], decoder=reader.make_decoder("beam", beam_width=3))[0]
    assert response.json()[0]["text"] == want.text
    bad = client.post("/api/recognize", files=_files(line_files[:1]), data={"decoder": "sideways"})
    assert bad.status_code == 422 and "decoder" in bad.json()["error"]


def test_page_upload_reads_lines_in_reading_order(client, reader, tmp_path):
    xml_path, image_path, ids = make_page(tmp_path / "page")
    # uploaded under another name: the server saves it under the name the XML references
    response = client.post("/api/page", files={"image": ("photo.png", image_path.read_bytes(), "image/png"),
                                               "xml": ("scan_001.xml", xml_path.read_bytes(), "application/xml")})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["format"] == "page" and page["xml"] == "scan_001.xml" and (page["width"], page["height"]) == (900, 400)
    assert [line["id"] for line in page["lines"]] == ids
    spec = spec_of(str(xml_path))  # the way `htrjand recognize` reads a page
    spec.keep_empty = True
    samples = read_dataset(spec, Problems())
    expected = {s.line_id: r for s, r in zip(samples, reader.recognize(samples))}
    assert set(expected) == {"l1", "l2", "l3"}
    for line in page["lines"][:3]:
        assert line["error"] is None and line["result"]["text"] == expected[line["id"]].text
        assert len(line["polygon"]) == 4 and line["region"][2] > line["region"][0]
        assert len(line["result"]["char_confidences"]) == len(line["result"]["text"])
    assert page["lines"][0]["text_in_file"] == "old text"
    outside = page["lines"][3]
    assert outside["result"] is None and "outside" in outside["error"]
    assert [p["kind"] for p in page["problems"]] == ["polygon outside image"]
    assert str(tmp_path) not in response.text and "/tmp/" not in response.text  # no server paths leak
    assert len(page["token"]) > 10


def test_export_tsv_has_the_edited_text(client):
    lines = [{"image": "a.png", "text": "recognised"}, {"image": "b.png", "text": "edited\tby\nhand"}]
    response = client.post("/api/export/tsv", json=lines)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/tab-separated-values")
    assert "attachment" in response.headers["content-disposition"]
    assert response.content.decode("utf-8") == "a.png\trecognised\nb.png\tedited by hand\n"
    assert client.post("/api/export/tsv", json=[{"image": "a.png"}]).status_code == 422


def test_export_page_with_edited_text(client, tmp_path):
    xml_path, image_path, _ = make_page(tmp_path / "page")
    files = {"image": ("scan_001.png", image_path.read_bytes()), "xml": ("scan_001.xml", xml_path.read_bytes())}
    page = client.post("/api/page", files=files).json()
    unknown = client.post("/api/export/page", data={"token": page["token"], "texts": '{"nope": "x"}'})
    assert unknown.status_code == 422 and "nope" in unknown.json()["error"]
    assert client.post("/api/export/page", data={"token": "expired", "texts": "{}"}).status_code == 404
    assert client.post("/api/export/page", data={"token": page["token"], "texts": "[1,"}).status_code == 422
    pytest.importorskip("htrjand.writers", reason="htrjand.writers (PAGE/ALTO writer) is not in this tree yet")
    texts = {"l1": "a corrected line", "l2": page["lines"][1]["result"]["text"]}
    response = client.post("/api/export/page", data={"token": page["token"], "texts": json.dumps(texts)})
    assert response.status_code == 200, response.text
    assert "scan_001.xml" in response.headers["content-disposition"]
    out = tmp_path / "out" / "scan_001.xml"
    out.parent.mkdir()
    out.write_bytes(response.content)
    doc = load_page(out)
    got = {line.id: line.text for line in doc.lines}
    assert got["l1"] == "a corrected line" and got["l2"] == texts["l2"]
    assert got["l3"] == page["lines"][2]["result"]["text"]  # not edited: the recognised text
    words = {line.id: [e for e in line.element if e.tag.endswith("Word")] for line in doc.lines}
    assert words["l1"] == []  # corrected by hand: no word boxes from the model
    if page["lines"][2]["result"]["words"]:
        assert len(words["l3"]) == len(page["lines"][2]["result"]["words"])
    assert got["lx"] == ""  # skipped line left as it was
    # the same with the XML uploaded again instead of a token
    again = client.post("/api/export/page", data={"texts": '{"l3": "third"}'},
                        files={"xml": ("scan_001.xml", xml_path.read_bytes())})
    assert again.status_code == 200 and b"third" in again.content


def test_alto_page_upload_and_export(client, tmp_path):
    _, image_path, _ = make_page(tmp_path / "page")
    alto = make_alto(tmp_path / "page", image_path)
    response = client.post("/api/page", files={"image": (image_path.name, image_path.read_bytes()),
                                               "xml": (alto.name, alto.read_bytes())})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["format"] == "alto" and [line["id"] for line in page["lines"]] == ["t1", "#1"]
    assert all(line["result"] is not None for line in page["lines"]) and page["problems"] == []
    pytest.importorskip("htrjand.writers", reason="htrjand.writers (PAGE/ALTO writer) is not in this tree yet")
    out = client.post("/api/export/page", data={"token": page["token"], "texts": '{"#1": "fixed second line"}'})
    assert out.status_code == 200, out.text
    path = tmp_path / "out.xml"
    path.write_bytes(out.content)
    doc = load_page(path)
    assert doc.format == "alto"
    assert [line.text for line in doc.lines] == [page["lines"][0]["result"]["text"], "fixed second line"]


def test_oversize_uploads_get_413(client, line_files):
    big = client.post("/api/recognize", files=[("files", ("big.png", b"\x89PNG" + b"x" * (1 << 20), "image/png"))])
    assert big.status_code == 413 and "limit is 1 MB" in big.json()["error"]

    def chunks():  # no Content-Length: the bytes are counted as they arrive
        yield (b'--bnd\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(40):
            yield b"y" * 65536
        yield b"\r\n--bnd--\r\n"

    streamed = client.post("/api/recognize", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=bnd"})
    assert streamed.status_code == 413 and "too large" in streamed.json()["error"]
    many = client.post("/api/recognize", files=_files(line_files) * 2)
    assert many.status_code == 413 and "at most 4" in many.json()["error"]
    pixels = client.post("/api/recognize", files=[("files", ("wide.png", _png(4000, 1001), "image/png"))])
    assert pixels.status_code == 413 and "wide.png" in pixels.json()["error"]
    assert "4,000,000 pixels" in pixels.json()["error"]


def test_bad_images_and_xml_get_422(client, line_files, tmp_path):
    good = line_files[0].read_bytes()
    response = client.post("/api/recognize", files=[
        ("files", ("notes.txt", b"just some text", "text/plain")), ("files", (line_files[0].name, good, "image/png")),
        ("files", ("cut.png", good[:150], "image/png"))])
    assert response.status_code == 422
    error = response.json()
    assert "notes.txt" in error["error"] and "cut.png" in error["error"]
    assert [set(f) for f in error["files"]] == [{"name", "reason"}] * 2
    assert {f["name"] for f in error["files"]} == {"notes.txt", "cut.png"}
    assert "not an image" in error["files"][0]["reason"] and "truncated" in error["files"][1]["reason"]

    xml_path, image_path, _ = make_page(tmp_path / "page")
    image = ("scan_001.png", image_path.read_bytes(), "image/png")
    broken = client.post("/api/page", files={"image": image, "xml": ("scan_001.xml", b"<PcGts><Page>", "text/xml")})
    assert broken.status_code == 422 and broken.json()["error"].startswith("scan_001.xml:1: malformed XML")
    other = client.post("/api/page", files={"image": image, "xml": ("x.xml", b"<html/>", "text/xml")})
    assert other.status_code == 422 and "neither PAGE" in other.json()["error"]
    not_image = client.post("/api/page", files={"image": ("scan.png", b"GIF89", "image/png"),
                                                "xml": ("scan_001.xml", xml_path.read_bytes(), "text/xml")})
    assert not_image.status_code == 422 and "scan.png" in not_image.json()["error"]
    missing = client.post("/api/page", files={"image": image})
    assert missing.status_code == 422 and "xml" in missing.json()["error"]


def test_openapi_describes_the_endpoints(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/api/health", "/api/model", "/api/recognize", "/api/page", "/api/export/tsv",
            "/api/export/page"} <= set(paths)
    assert "get" in paths["/api/model"] and "post" in paths["/api/recognize"] and "post" in paths["/api/page"]
    body = paths["/api/recognize"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    ref = body["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert {"files", "decoder", "beam_width"} <= set(schema["components"]["schemas"][ref]["properties"])
    assert "413" in paths["/api/recognize"]["post"]["responses"]
    assert "LineResult" in schema["components"]["schemas"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


def test_concurrent_requests_are_served_and_model_calls_serialised(checkpoint, line_files):
    reader = load(checkpoint)
    active, peak, lock = [0], [0], threading.Lock()
    recognize = reader.recognize

    def slow_recognize(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.05)
            return recognize(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    reader.recognize = slow_recognize
    expected = [r.text for r in recognize([str(p) for p in line_files])]
    with TestClient(create_app(reader)) as client:
        def post(_):
            response = client.post("/api/recognize", files=_files(line_files))
            return response.status_code, [d["text"] for d in response.json()]

        with ThreadPoolExecutor(6) as pool:
            started = time.perf_counter()
            futures = [pool.submit(post, i) for i in range(8)]
            time.sleep(0.02)
            health = client.get("/api/health")  # answered while the model works through the queue
            health_time = time.perf_counter() - started
            results = [f.result() for f in futures]
            total = time.perf_counter() - started
    assert health.status_code == 200 and health_time < total
    assert all(status == 200 and texts == expected for status, texts in results)
    assert peak[0] == 1  # never two model calls at once


def test_internal_errors_are_json_without_traceback(checkpoint, line_files):
    reader = load(checkpoint)

    def broken(*args, **kwargs):
        raise RuntimeError("engine exploded")

    reader.recognize = broken
    with TestClient(create_app(reader), raise_server_exceptions=False) as client:
        response = client.post("/api/recognize", files=_files(line_files[:1]))
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: RuntimeError: engine exploded"}
    assert "Traceback" not in response.text


def test_cli_parser_has_serve(capsys):
    from htrjand.cli import build_parser

    args = build_parser().parse_args(["serve", "model.ckpt", "--port", "8123", "--max-upload-mb", "5"])
    assert (args.model, args.host, args.port, args.max_upload_mb, args.batch_size) == ("model.ckpt", "127.0.0.1",
                                                                                        8123, 5.0, 16)
    assert callable(args.func)
