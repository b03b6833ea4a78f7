"""`htrjand serve`: a local web page and JSON API for reading line images and pages.

`create_app(reader)` builds a FastAPI app around a loaded `LineReader`: the page (`GET /`, static
files from `htrjand/web`), the model's description, recognition of uploaded line images, of a page
image with its PAGE or ALTO XML, and downloads of the (corrected) text as TSV or PAGE/ALTO XML.
Model calls run one at a time on a single worker thread, so the server keeps answering while a
batch is read. Bad input gets a JSON error (`{"error": ...}`) with status 413 (too large, too many
files) or 422 (not an image, bad XML), never a traceback.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import re
import secrets
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError

from .datasets import DataError, LineCrop, Problems
from .datasets import layout
from .images import CROP_MARGIN, ImageError, crop_line, load_gray
from .runtime import LineReader, Result

try:
    import python_multipart  # noqa: F401  (FastAPI's form parser)
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError("htrjand serve needs FastAPI, uvicorn and python-multipart: "
                      "pip install 'htrjand[serve]'", name=err.name) from err

log = logging.getLogger("htrjand")

WEB = Path(__file__).parent / "web"
MB = 1 << 20
DEFAULT_MAX_PIXELS = 64_000_000  # about 8000 x 8000: a large page scan; decoded to 64 MB of grey
PAGE_STORE = 32  # recent pages kept (XML and results) for the PAGE/ALTO download by token
DECODER_KINDS = ("greedy", "beam")


class ApiError(Exception):
    """A request the server refuses: its HTTP status, message and optional details."""

    def __init__(self, status: int, message: str, **details):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


# ---------------------------------------------------------------- response models (for /docs)

class WordOut(BaseModel):
    text: str
    confidence: float
    start: int = Field(description="index of the word's first character in the line text")
    end: int = Field(description="one past its last character")
    x: list[int] | None = Field(None, description="[x0, x1) pixel columns in the line image")


class CandidateOut(BaseModel):
    text: str
    score: float
    acoustic: float
    lm: float


class LineResult(BaseModel):
    image: str = Field(description="the uploaded file's name (pages: the line's id)")
    text: str
    confidence: float = Field(description="line confidence, 0..1")
    char_confidences: list[float] = Field(description="one confidence (0..1) per character of text")
    char_positions: list[list[int]] = Field(description="[x0, x1) pixel columns of each character in the line image")
    words: list[WordOut]
    nbest: list[CandidateOut]
    error: str | None
    scale: float = Field(1.0, description="width factor the line was read at (multi-scale reading; else 1)")
    width: int = Field(0, description="line image width in pixels")
    height: int = Field(0, description="line image height in pixels")


class PageLineOut(BaseModel):
    id: str
    index: int = Field(description="position among the file's TextLines (document order)")
    where: str = Field(description="file:line of the TextLine element")
    text_in_file: str = Field(description="the transcription the XML already had")
    polygon: list[list[float]] = Field(description="the line's outline on the page image (pixels)")
    region: list[int] | None = Field(None, description="[x0, y0, x1, y1] of the cut line image on the page; "
                                     "char_positions are relative to x0")
    result: LineResult | None = None
    error: str | None = None


class ProblemOut(BaseModel):
    kind: str
    where: str
    message: str


class PageOut(BaseModel):
    token: str = Field(description="pass to /api/export/page to download the XML with corrected text")
    format: str = Field(description="page or alto")
    xml: str
    image: str
    width: int
    height: int
    lines: list[PageLineOut] = Field(description="in reading order")
    problems: list[ProblemOut] = Field(description="lines skipped (no usable geometry...)")
    warnings: list[ProblemOut] = Field(description="repairs made and kept")


class ModelInfo(BaseModel):
    engine: str
    preset: str
    model: str = Field(description="the model file's name")
    parameters: int
    charset_size: int
    charset: str
    height: int
    width_stride: int
    metrics: dict
    calibrated: bool
    decoder: str = Field(description="the server's default decoder")
    low_confidence: float = Field(description="default threshold for highlighting characters")
    limits: dict


class TsvLine(BaseModel):
    image: str
    text: str


# ---------------------------------------------------------------- upload size limit

class UploadLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with 413, from Content-Length when
    given and by counting the bytes as they arrive (chunked or lying clients), before the app has
    read more than the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        message = f"upload too large: the limit is {self.max_bytes / MB:g} MB per request"
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _send_json(send, 400, {"error": "invalid Content-Length header"})
            if declared > self.max_bytes:
                return await _send_json(send, 413, {"error": message})
        received, over, started = 0, False, False

        async def counted_receive():
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    return {"type": "http.disconnect"}  # the app stops reading: its parser sees a disconnect
            return msg

        async def guarded_send(msg):
            nonlocal started
            if over and not started:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await _send_json(send, 413, {"error": message})


async def _send_json(send, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- uploads

def safe_name(name: str | None, default: str) -> str:
    """A file name safe to show and to write in a temporary folder (no folders, no control chars)."""
    name = re.split(r"[\\/]", name or "")[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()
    if len(name.encode("utf-8")) > 200:  # file systems allow 255 bytes
        suffix = Path(name).suffix[:16]
        name = name.encode("utf-8")[:180].decode("utf-8", "ignore") + suffix
    return name if name and name not in (".", "..") and not name.startswith(".") else default


def decode_image(name: str, data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded image as a grey uint8 array; `ApiError` 413 above `max_pixels`, 422 when it is
    not a readable image (the message names the file and the reason)."""
    if not data:
        raise ApiError(422, f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the explicit limit below applies
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ApiError(413, f"{name}: image of {w}x{h} pixels is over the limit of "
                                   f"{max_pixels:,} pixels")
                if w < 1 or h < 1:
                    raise ApiError(422, f"{name}: empty image ({w}x{h} pixels)")
                im.load()
                return load_gray(im)
    except ApiError:
        raise
    except Image.DecompressionBombError as err:
        raise ApiError(413, f"{name}: image too large ({err})") from None
    except UnidentifiedImageError:
        raise ApiError(422, f"{name}: not an image (or a format Pillow cannot read)") from None
    except (OSError, ValueError, SyntaxError, ImageError, MemoryError) as err:
        raise ApiError(422, f"{name}: cannot decode image ({err})") from None


def decode_all(names: list[str], datas: list[bytes], max_pixels: int) -> tuple[list[np.ndarray], list[dict]]:
    """Decode every upload; the arrays of the good ones and {name, reason, status} of the bad ones."""
    arrays, bad = [], []
    for name, data in zip(names, datas):
        try:
            arrays.append(decode_image(name, data, max_pixels))
        except ApiError as err:
            bad.append({"name": name, "reason": err.message.removeprefix(f"{name}: "), "status": err.status})
    return arrays, bad


def _result_dict(result: Result, name: str, shape: tuple[int, int]) -> dict:
    data = result.to_dict()
    data.update(image=name, height=int(shape[0]), width=int(shape[1]))
    return data


def _region(polygon, size: tuple[int, int]) -> list[int]:
    """[x0, y0, x1, y1] of the line image `crop_line` cuts for this polygon (box + margin, clipped)."""
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    w, h = size
    return [max(math.floor(min(xs)) - CROP_MARGIN, 0), max(math.floor(min(ys)) - CROP_MARGIN, 0),
            min(math.ceil(max(xs)) + CROP_MARGIN + 1, w), min(math.ceil(max(ys)) + CROP_MARGIN + 1, h)]


def _image_name(ref: str, xml_name: str, upload_name: str) -> str:
    """The name the XML gives its page image (the upload is saved under it), else XML stem + suffix."""
    ref = ref.strip()
    name = urlparse(ref).path.rsplit("/", 1)[-1] if "://" in ref else re.split(r"[\\/]", ref)[-1]
    suffix = Path(upload_name).suffix.lower()
    if suffix not in layout.IMAGE_SUFFIXES:
        suffix = ".png"
    return safe_name(name, Path(xml_name).stem + suffix)


def line_id(line: layout.PageLine) -> str:
    """A line's id in the API: its XML id, else `#N` (N its index; never a valid XML id)."""
    return line.id or f"#{line.index}"


@dataclass
class StoredPage:
    """What the PAGE/ALTO download needs of an uploaded page: its XML, and the recognised lines'
    results and crops by API line id."""

    xml: bytes
    xml_name: str
    results: dict[str, Result]
    crops: dict[str, LineCrop]


@dataclass
class PageCut:
    """One line of an uploaded page: its cut image, or why it has none."""

    line: layout.PageLine
    crop: LineCrop | None = None
    image: np.ndarray | None = None
    error: str | None = None


def cut_page(doc: layout.PageDoc, gray: np.ndarray, problems: Problems) -> list[PageCut]:
    """Every line of `doc` cut from its decoded page image `gray` (geometry checked and repaired
    as the PAGE/ALTO readers do; a skipped line gets the reason)."""
    cuts = []
    for line in doc.lines:
        before = len(problems.entries)
        samples = layout.page_samples(doc, [line], "upload", problems)
        cut = PageCut(line)
        if samples:
            cut.crop = samples[0].crop
            try:
                cut.image = crop_line(gray, cut.crop, line.source)
            except ImageError as err:
                cut.error = str(err)
        else:
            cut.error = problems.entries[before][2] if len(problems.entries) > before else "line skipped"
        cuts.append(cut)
    return cuts


def _problems(items, tmp: Path) -> list[dict]:
    prefix = str(tmp) + "/"
    return [{"kind": k, "where": w.replace(prefix, ""), "message": m.replace(prefix, "")} for k, w, m in items]


def _parse_page(folder: Path, xml_name: str, xml: bytes, problems: Problems) -> layout.PageDoc:
    """Write the XML into `folder` and parse it; `ApiError` 422 naming the problem otherwise."""
    path = folder / xml_name
    path.write_bytes(xml)
    try:
        return layout.load_page(path, problems)
    except DataError as err:
        raise ApiError(422, str(err).replace(str(folder) + "/", "")) from None


def export_xml(xml: bytes, xml_name: str, edited: Mapping[str, str], stored: StoredPage | None = None,
               words: bool = True, glyphs: bool = False) -> bytes:
    """The page's XML through `writers.page_xml` with `edited` texts (API line id -> text) and the
    other recognised lines of `stored`; a text changed by hand gets confidence 1 and no word or
    glyph positions."""
    with tempfile.TemporaryDirectory(prefix="htrjand-export-") as tmp:
        doc = _parse_page(Path(tmp), xml_name, xml, Problems())
        lines = {line_id(line): line for line in doc.lines}
        unknown = sorted(set(edited) - set(lines))
        if unknown:
            raise ApiError(422, f"{xml_name}: no TextLine with id {', '.join(map(repr, unknown[:10]))}")
        try:
            from .writers import line_key, page_xml
        except ImportError:
            raise ApiError(501, "PAGE/ALTO export needs htrjand.writers, missing in this installation") from None
        results = dict(stored.results) if stored else {}
        for key, text in edited.items():
            old = results.get(key)
            if old is None or old.text != text:
                results[key] = Result(text, 1.0, source=key)
        keyed = {line_key(lines[k]): r for k, r in results.items() if k in lines}
        crops = None
        if stored and all(k in stored.crops for k in results):
            crops = {line_key(lines[k]): stored.crops[k] for k in results if k in lines}
        return page_xml(doc, keyed, words=words, glyphs=glyphs, creator="htrjand", crops=crops)


# ---------------------------------------------------------------- the app

def create_app(reader: LineReader, *, max_upload_mb: float = 20, max_files: int = 200, low_confidence: float = 0.8,
               batch_size: int = 16, max_pixels: int = DEFAULT_MAX_PIXELS,
               decoder_options: Mapping | None = None) -> FastAPI:
    """A FastAPI app serving `reader`: the web page at `/` and the JSON API under `/api`.

    `max_upload_mb` bounds a request's body, `max_files` the images of one request and
    `max_pixels` any one image. `decoder_options` (as `LineReader.make_decoder`: decoder,
    beam_width, lm, lexicon...) set the default decoder; a request may ask for greedy or beam."""
    options = dict(decoder_options or {})
    default_kind = options.pop("decoder", None) or ("beam" if options.get("lm") or options.get("lexicon") else "greedy")
    decoders: dict[tuple[str, int | None], object] = {}
    pages: OrderedDict[str, StoredPage] = OrderedDict()
    executor = ThreadPoolExecutor(1, thread_name_prefix="htrjand-model")

    def get_decoder(kind: str | None, beam_width: int | None):
        kind = kind or default_kind
        key = (kind, beam_width if kind == "beam" else None)
        if key not in decoders:
            opts = dict(options)
            if kind == "greedy":
                opts = {k: v for k, v in opts.items() if k not in ("lm", "lexicon", "alpha", "beta")}
            if beam_width:
                opts["beam_width"] = beam_width
            decoders[key] = reader.make_decoder(kind, **{k: v for k, v in opts.items() if v is not None})
        return decoders[key]

    default_decoder = get_decoder(None, None)  # fails now, at start, for a bad LM or lexicon

    async def run_model(images: list, decoder) -> list[Result]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, lambda: reader.recognize(images, batch_size=batch_size,
                                                                                decoder=decoder))

    @asynccontextmanager
    async def lifespan(_app):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="htrjand", version=_version(), lifespan=lifespan,
                  description="Handwritten text recognition of line images and PAGE/ALTO pages. "
                  f"Requests are limited to {max_upload_mb:g} MB and {max_files} images; errors come as "
                  "`{\"error\": message}` with status 413 (too large) or 422 (unreadable input).")
    app.add_middleware(UploadLimit, max_bytes=int(max_upload_mb * MB))

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, err: ApiError):
        return JSONResponse({"error": err.message, **err.details}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, err: RequestValidationError):
        errors = jsonable_encoder(err.errors(), custom_encoder={bytes: lambda b: f"<{len(b)} bytes>"})
        shown = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors)
        return JSONResponse({"error": f"invalid request: {shown}", "detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, err: StarletteHTTPException):
        status, detail = err.status_code, str(err.detail)
        if status == 400 and "Too many files" in detail + str(err.__cause__ or ""):
            status, detail = 413, f"too many files: at most {max_files} per request"
        return JSONResponse({"error": detail}, status_code=status, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, err: Exception):
        log.exception("serve: unexpected error")
        return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}"[:500]}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(WEB / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/api/health", summary="liveness check")
    async def health() -> dict:
        return {"status": "ok", "engine": reader.engine}

    @app.get("/api/model", response_model=ModelInfo, summary="the loaded model")
    async def model() -> dict:
        meta = reader.meta
        return {"engine": reader.engine, "preset": str(meta.get("preset") or "custom"),
                "model": Path(str(meta.get("path", ""))).name, "parameters": reader.parameters,
                "charset_size": len(reader.charset), "charset": "".join(reader.charset.chars),
                "height": reader.height, "width_stride": reader.stride,
                "metrics": jsonable_encoder(meta.get("metrics") or {}), "calibrated": bool(meta.get("calibration")),
                "decoder": default_decoder.describe(), "low_confidence": low_confidence,
                "limits": {"max_upload_mb": max_upload_mb, "max_files": max_files, "max_pixels": max_pixels,
                           "batch_size": batch_size}}

    @app.post("/api/recognize", response_model=list[LineResult], summary="read line images",
              responses={413: {"description": "upload, file count or image over the limits"},
                         422: {"description": "a file is not a readable image"}})
    async def recognize(files: list[UploadFile] = File(..., description="line images (PNG, JPEG, TIFF...)"),
                        decoder: Literal["greedy", "beam"] | None = Form(None, description="default: the server's"),
                        beam_width: int | None = Form(None, ge=1, le=100)) -> list[dict]:
        if len(files) > max_files:
            raise ApiError(413, f"too many files: {len(files)} given, at most {max_files} per request")
        names = [safe_name(f.filename, f"image-{i + 1}") for i, f in enumerate(files)]
        datas = [await f.read() for f in files]
        arrays, bad = await asyncio.to_thread(decode_all, names, datas, max_pixels)
        if bad:
            status = 413 if 413 in [b.pop("status") for b in bad] else 422
            raise ApiError(status, f"{len(bad)} of {len(files)} files cannot be used: "
                           + "; ".join(f"{b['name']}: {b['reason']}" for b in bad), files=bad)
        dec = get_decoder(decoder, beam_width)
        results = await run_model(arrays, dec)
        return [_result_dict(r, n, a.shape) for r, n, a in zip(results, names, arrays)]

    @app.post("/api/page", response_model=PageOut, summary="read the lines of a page (image + PAGE/ALTO XML)",
              responses={413: {"description": "upload or image over the limits"},
                         422: {"description": "unreadable image or XML"}})
    async def page(image: UploadFile = File(..., description="the page image"),
                   xml: UploadFile = File(..., description="its PAGE or ALTO XML"),
                   decoder: Literal["greedy", "beam"] | None = Form(None),
                   beam_width: int | None = Form(None, ge=1, le=100)) -> dict:
        xml_name = safe_name(xml.filename, "page.xml")
        upload_name = safe_name(image.filename, "page.png")
        xml_data, image_data = await xml.read(), await image.read()
        if not xml_data.strip():
            raise ApiError(422, f"{xml_name}: empty XML file")
        gray = await asyncio.to_thread(decode_image, upload_name, image_data, max_pixels)
        problems = Problems()
        with tempfile.TemporaryDirectory(prefix="htrjand-page-") as tmp:
            folder = Path(tmp)
            doc = await asyncio.to_thread(_parse_page, folder, xml_name, xml_data, problems)
            image_name = _image_name(doc.image_ref, xml_name, upload_name)
            (folder / image_name).write_bytes(image_data)
            doc.image = folder / image_name
            cuts = await asyncio.to_thread(cut_page, doc, gray, problems)
            ok = [c for c in cuts if c.image is not None]
            results = await run_model([c.image for c in ok], get_decoder(decoder, beam_width)) if ok else []
            by_cut = {id(c): r for c, r in zip(ok, results)}
            size = (gray.shape[1], gray.shape[0])
            prefix = str(folder) + "/"
            lines, stored = [], StoredPage(xml_data, xml_name, {}, {})
            for cut in cuts:
                line, key = cut.line, line_id(cut.line)
                item = {"id": key, "index": line.index, "where": line.source.replace(prefix, ""),
                        "text_in_file": line.text, "polygon": [list(p) for p in line.polygon],
                        "error": (cut.error or "").replace(prefix, "") or None}
                result = by_cut.get(id(cut))
                if result is not None:
                    item.update(polygon=[list(p) for p in cut.crop.polygon], region=_region(cut.crop.polygon, size),
                                result=_result_dict(result, key, cut.image.shape), error=result.error)
                    if result.error is None:
                        stored.results[key], stored.crops[key] = result, cut.crop
                lines.append(item)
            token = secrets.token_urlsafe(16)
            pages[token] = stored
            while len(pages) > PAGE_STORE:
                pages.popitem(last=False)
            return {"token": token, "format": doc.format, "xml": xml_name, "image": upload_name,
                    "width": size[0], "height": size[1], "lines": lines,
                    "problems": _problems(problems.entries, folder), "warnings": _problems(problems.warnings, folder)}

    @app.post("/api/export/tsv", summary="download lines as a TSV manifest (image<TAB>text)",
              response_class=Response, responses={200: {"content": {"text/tab-separated-values": {}}}})
    async def export_tsv(lines: list[TsvLine]) -> Response:
        clean = lambda s: re.sub(r"[\t\r\n]+", " ", s)  # noqa: E731
        body = "".join(f"{clean(x.image)}\t{clean(x.text)}\n" for x in lines)
        return Response(body.encode("utf-8"), media_type="text/tab-separated-values; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="transcriptions.tsv"'})

    @app.post("/api/export/page", summary="download the page's PAGE/ALTO XML with the (corrected) text",
              response_class=Response, responses={200: {"content": {"application/xml": {}}},
                                                  404: {"description": "unknown or expired token"},
                                                  422: {"description": "bad XML or texts"}})
    async def export_page(texts: str = Form("{}", description='JSON object {"line id": "text", ...}'),
                          token: str | None = Form(None, description="the token /api/page returned"),
                          xml: UploadFile | None = File(None, description="or the PAGE/ALTO XML again"),
                          words: bool = Form(True, description="write Word elements"),
                          glyphs: bool = Form(False, description="write Glyph elements")) -> Response:
        try:
            edited = json.loads(texts)
        except json.JSONDecodeError as err:
            raise ApiError(422, f"texts: not valid JSON ({err})") from None
        if not isinstance(edited, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in edited.items()):
            raise ApiError(422, "texts: must be a JSON object of line id -> text")
        if token:
            stored = pages.get(token)
            if stored is None:
                raise ApiError(404, "unknown or expired page token: upload the page again")
            xml_data, xml_name = stored.xml, stored.xml_name
        elif xml is not None:
            xml_data, xml_name, stored = await xml.read(), safe_name(xml.filename, "page.xml"), None
        else:
            raise ApiError(422, "give the page's token or its XML file")
        data = await asyncio.to_thread(export_xml, xml_data, xml_name, edited, stored, words, glyphs)
        return Response(data, media_type="application/xml",
                        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(xml_name)}"})

    return app


def _version() -> str:
    from . import __version__

    return __version__


def main(args) -> int:
    """`htrjand serve MODEL`: load the model and run uvicorn until interrupted."""
    import uvicorn

    from .cli import _decoder_options
    from .runtime import load

    reader = load(args.model, tta=args.tta, scales=args.scales)
    options = {"decoder": args.decoder, **_decoder_options(args)}
    app = create_app(reader, max_upload_mb=args.max_upload_mb, max_files=args.max_files,
                     low_confidence=args.low_confidence, batch_size=args.batch_size,
                     max_pixels=int(args.max_megapixels * 1_000_000), decoder_options=options)
    print(f"htrjand: serving {args.model or 'the bundled model'} ({reader.engine}) on http://{args.host}:{args.port}/ (Ctrl+C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0
