"""Recognition without PyTorch: results, the engine-independent line reader, and the ONNX engine.

A `LineReader` turns images into model inputs, runs them in width-sorted batches through its
engine (`run`), and decodes the frames. `Recognizer` (htrjand.recognition) runs a PyTorch
checkpoint; `OnnxRecognizer` runs an exported `.onnx` file on onnxruntime and needs only numpy,
Pillow, OpenCV and onnxruntime: `import htrjand.runtime` never imports torch.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .charmap import CharMapping
from .charset import Charset
from .datasets import Sample
from .decoding import Candidate, Decoder, DecodingError, Word, log_softmax
from .images import ImageError, ImageInput, load_gray, load_line, normalize_height, pad_batch, scale_width, to_ink

ONNX_METADATA_KEY = "htrjand"  # metadata_props entry holding the model's settings as JSON
GRAPH_HASH_KEY = "htrjand.graph_sha256"  # sha256 of the serialised graph, checked on load


class ModelFileError(ValueError):
    """A model file that cannot be used (the message names the file and the reason)."""


@dataclass
class Result:
    """One recognised line. `error` is set (and `text` empty) when the image could not be read.

    Positions are `[x0, x1)` pixel columns of the original line image (for a line cut from a page:
    of the cut region). `nbest` lists the decoder's best candidates, best first. `scale` is the width
    factor the line was read at (1 unless multi-scale reading chose another, `LineReader.scales`)."""

    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    source: str = ""
    error: str | None = None
    char_positions: list[tuple[int, int]] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    nbest: list[Candidate] = field(default_factory=list)
    scale: float = 1.0

    def to_dict(self) -> dict:
        """A JSON-ready record (confidences and scores rounded)."""
        return {"image": self.source, "text": self.text, "confidence": round(self.confidence, 4),
                "char_confidences": [round(c, 4) for c in self.char_confidences],
                "char_positions": [list(x) for x in self.char_positions],
                "words": [{"text": w.text, "confidence": round(w.confidence, 4), "start": w.start, "end": w.end,
                           "frames": list(w.frames), "x": list(w.x) if w.x else None} for w in self.words],
                "nbest": [{"text": c.text, "score": round(c.score, 4), "acoustic": round(c.acoustic, 4),
                           "lm": round(c.lm, 4)} for c in self.nbest],
                "scale": self.scale, "error": self.error}

    @classmethod
    def from_dict(cls, record: dict) -> "Result":
        """The result a `to_dict()` record describes (its values as rounded there)."""
        words = [Word(w["text"], w["confidence"], w["start"], w["end"], tuple(w["frames"]),
                      tuple(w["x"]) if w.get("x") else None) for w in record["words"]]
        nbest = [Candidate(c["text"], c["score"], c["acoustic"], c["lm"]) for c in record["nbest"]]
        return cls(record["text"], record["confidence"], list(record["char_confidences"]), record["image"],
                   record["error"], [tuple(x) for x in record["char_positions"]], words, nbest,
                   record.get("scale", 1.0))


@dataclass
class LineOutput:
    """The model's output for one line: its frame logits `[T, C]` and how frames map to pixels
    (`px_per_frame` original-image pixels per frame; `width` the original width; `scale` the width factor
    it was read at, see `LineReader.scales`); or an error."""

    logits: np.ndarray | None
    px_per_frame: float = 0.0
    width: int = 0
    error: str | None = None
    scale: float = 1.0


TTA_CHOICES = (1, 3, 5)  # inputs averaged by test-time augmentation: the line, then shifted up and down


def tta_shifts(height: int, count: int) -> tuple[int, ...]:
    """The row shifts test-time augmentation reads a line with: 0, then up and down by 1/32 (count 3)
    and 2/32 (count 5) of the input height."""
    if count not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {count!r}")
    step = max(1, round(height / 32))
    return (0, -step, step, -2 * step, 2 * step)[:count]


SCALE_PRESETS: dict[int, tuple[float, ...]] = {  # multi-scale reading: width factors by count, 1 first
    1: (1.0,),
    3: (1.0, 0.8, 1.25),
    5: (1.0, 0.8, 1.25, 0.9, 1.12),
    7: (1.0, 0.8, 1.25, 0.9, 1.12, 0.7, 1.4),
}
SCALE_RANGE = (0.25, 4.0)


def width_scales(value: int | Sequence[float]) -> tuple[float, ...]:
    """The width factors multi-scale reading tries: a count from SCALE_PRESETS (1, 3, 5, 7) or the factors."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) not in SCALE_PRESETS:
            raise ValueError(f"scales must be one of {', '.join(map(str, SCALE_PRESETS))} or a list of width "
                             f"factors, got {value!r}")
        return SCALE_PRESETS[int(value)]
    low, high = SCALE_RANGE
    try:
        factors = (float(value),) if isinstance(value, float) else tuple(float(f) for f in value)
    except (TypeError, ValueError):
        factors = ()
    if isinstance(value, str) or not factors or any(not low <= f <= high for f in factors) \
            or len(set(factors)) != len(factors):
        raise ValueError(f"width scales must be distinct factors from {low:g} to {high:g}, got {value!r}")
    return factors


def shift_rows(images, rows: int):
    """`[B, 1, H, W]` ink images (numpy or torch) moved down by `rows` (up when negative), paper (0) filling in."""
    if rows == 0:
        return images
    out = images * 0
    if rows > 0:
        out[:, :, rows:] = images[:, :, :-rows]
    else:
        out[:, :, :rows] = images[:, :, -rows:]
    return out


class LineReader:
    """Preprocessing, width-sorted batching and decoding shared by every engine.

    Subclasses set `engine` and implement `run(images [B,1,H,W] float32, widths [B] int64) ->
    (logits [B,T,C], frame lengths [B])` as numpy arrays.

    `tta` (1, 3 or 5) reads each line that many times, moved up and down by 1/32 and 2/32 of the
    input height (2 and 4 pixels at height 64), and averages the frames' log-probabilities: about
    0.5 CER points fewer for `tta` times the network's work (docs/decoding.md).

    `scales` (a count from SCALE_PRESETS, or width factors) reads each line stretched or squeezed to
    those widths and keeps the reading whose greedy characters are the most confident (a reading with
    no characters only when every width gives none): writers' letters differ in width more than
    training taught the network; 3 widths cost 3 times its work (docs/decoding.md)."""

    engine = ""

    def __init__(self, charset: Charset, meta: dict, height: int, stride: int):
        self.charset, self.meta, self.height, self.stride = charset, meta, height, stride
        self.tta = 1
        self.scales = 1
        calibration = meta.get("calibration") or {}
        self.temperature = float(calibration.get("temperature", 1.0))
        # fitted by `htrjand calibrate`; used by the decoders without a language model (whose beta does its work)
        self.blank_penalty = float(calibration.get("blank_penalty", 0.0))
        self.decoder = Decoder(charset, blank_penalty=self.blank_penalty)
        # the character standardisation the model was trained with (references are scored with it)
        self.mapping = CharMapping.from_dict(meta.get("charset_mapping"))

    def run(self, images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    @property
    def tta(self) -> int:
        return len(self._shifts)

    @tta.setter
    def tta(self, count: int) -> None:
        self._shifts = tta_shifts(self.height, count)

    @property
    def scales(self) -> tuple[float, ...]:
        return self._scales

    @scales.setter
    def scales(self, value: int | Sequence[float]) -> None:
        self._scales = width_scales(value)

    def run_averaged(self, images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`run`, or with `tta` > 1 the mean log-probabilities of the shifted copies (one engine call)."""
        if self.tta == 1:
            return self.run(images, widths)
        copies = np.concatenate([shift_rows(images, rows) for rows in self._shifts])
        logits, lengths = self.run(copies, np.tile(widths, self.tta))
        n = len(images)
        return log_softmax(logits).reshape(self.tta, n, *logits.shape[1:]).mean(0), lengths[:n]

    @property
    def parameters(self) -> int:
        return int(self.meta.get("parameters", 0))

    def make_decoder(self, decoder: str | None = None, **options) -> Decoder:
        """A `Decoder` for this model's charset (options as `Decoder.from_options`); lexicon words
        are standardised with the model's character mapping. Without a `blank_penalty` (or None) the
        model's calibrated one applies, except with a language model (0: its beta rewards characters)."""
        if self.mapping.table and "normalize" not in options:
            options["normalize"] = self.mapping.apply
        if options.get("blank_penalty") is None:
            options["blank_penalty"] = 0.0 if options.get("lm") else self.blank_penalty
        return Decoder.from_options(self.charset, decoder, **options)

    def prepare(self, image: ImageInput | Sample) -> tuple[np.ndarray, int] | str:
        """The model input of a line and the line's original width, or an error message."""
        try:
            if isinstance(image, Sample):
                gray = load_line(image.image, image.crop, image.source)
            else:
                gray = load_gray(image)
            return to_ink(normalize_height(gray, self.height)), gray.shape[1]
        except ImageError as err:
            return str(err)

    def recognize(self, images: Sequence[ImageInput | Sample] | ImageInput | Sample, batch_size: int = 16,
                  workers: int | None = None, chunk: int = 256, decoder: Decoder | None = None) -> list[Result]:
        """Read line images (paths, PIL images, arrays, encoded bytes or dataset `Sample`s, which may
        be lines cut from a page); one `Result` per image, in input order.

        A thread pool decodes the next `chunk` images while the engine runs the current one (memory
        stays bounded for long lists); lines are sorted by width within a chunk and run in batches
        of `batch_size`. `decoder` (default: greedy) turns frames into text, e.g.
        `reader.make_decoder("beam", lm="char.arpa")`."""
        return [r for part in self.recognize_chunks(images, batch_size, workers, chunk, decoder) for r in part]

    def recognize_chunks(self, images: Sequence[ImageInput | Sample] | ImageInput | Sample, batch_size: int = 16,
                         workers: int | None = None, chunk: int = 256, decoder: Decoder | None = None):
        """`recognize`, yielding the results of each chunk of `chunk` images as soon as it is read
        (a list per chunk, in input order), for callers that write or stop as they go."""
        for part, outputs in self._chunks(_as_list(images), batch_size, workers, chunk):
            yield [self.result(o, source_name(image), decoder) for image, o in zip(part, outputs)]

    def forward(self, images: Sequence[ImageInput | Sample] | ImageInput | Sample, batch_size: int = 16,
                workers: int | None = None, chunk: int = 256) -> list[LineOutput]:
        """The model's frame logits for each image (to decode later, e.g. with several decoders)."""
        return [o for _, outputs in self._chunks(_as_list(images), batch_size, workers, chunk) for o in outputs]

    def result(self, output: LineOutput, source: str = "", decoder: Decoder | None = None) -> Result:
        """Decode one line's `LineOutput` (confidences with the calibrated temperature)."""
        if output.error is not None or output.logits is None:
            return Result("", 0.0, source=source, error=output.error or "no output")
        decoder = decoder or self.decoder
        if decoder.charset != self.charset:
            raise DecodingError("the decoder was made for another model's charset")
        d = decoder.decode_line(output.logits, self.temperature, output.px_per_frame, output.width)
        return Result(d.text, d.confidence, d.char_confidences, source, None, d.char_x, d.words, d.nbest,
                      output.scale)

    def _chunks(self, images: Sequence, batch_size: int, workers: int | None, chunk: int):
        workers = workers or min(4, os.cpu_count() or 1)
        starts = range(0, len(images), chunk)
        with ThreadPoolExecutor(workers) as pool:
            pending = pool.map(self.prepare, images[0:chunk]) if images else None
            for start in starts:
                arrays = list(pending)
                nxt = start + chunk
                pending = pool.map(self.prepare, images[nxt:nxt + chunk]) if nxt < len(images) else None
                yield images[start:start + chunk], self._run_chunk(arrays, batch_size)

    def _run_chunk(self, arrays: list, batch_size: int) -> list[LineOutput]:
        outputs = [LineOutput(None, error=a) if isinstance(a, str) else None for a in arrays]
        ok = [i for i, a in enumerate(arrays) if not isinstance(a, str)]
        kept: dict[int, tuple[bool, float]] = {}  # (has characters, confidence) of each line's kept reading
        for factor in self.scales:
            inputs = {i: arrays[i][0] if factor == 1.0 else scale_width(arrays[i][0], factor) for i in ok}
            order = sorted(ok, key=lambda i: inputs[i].shape[1])
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                x, widths = pad_batch([inputs[i] for i in batch], self.stride)
                logits, lengths = self.run_averaged(x, widths)
                for j, (i, n) in enumerate(zip(batch, lengths.tolist())):
                    width = arrays[i][1]
                    output = LineOutput(np.array(logits[j, :n], dtype=np.float32),
                                        self.stride * width / inputs[i].shape[1], width, scale=factor)
                    if len(self.scales) > 1:
                        reading = self.decoder.decode_line(output.logits, self.temperature)
                        score = (bool(reading.text), reading.confidence)
                        if i in kept and score <= kept[i]:
                            continue
                        kept[i] = score
                    outputs[i] = output
        return outputs  # type: ignore[return-value]


def _as_list(images) -> Sequence:
    if isinstance(images, (str, Path, bytes, np.ndarray, Sample)) or not isinstance(images, Sequence):
        return [images]
    return images


def source_name(image: ImageInput | Sample) -> str:
    if isinstance(image, Sample):
        return image.source if image.crop is not None else str(image.image)
    return str(image) if isinstance(image, (str, Path)) else ""


def graph_hash(model) -> str:
    """sha256 of an `onnx.ModelProto`'s graph (weights included), independent of its metadata."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


class OnnxRecognizer(LineReader):
    """An exported model (`htrjand export --format onnx`) on onnxruntime; the file alone is enough:
    charset, input height, width stride, calibration and character mapping are in its metadata."""

    engine = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None, verify: bool = True):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelFileError("the ONNX engine needs onnxruntime: pip install 'htrjand[onnx]'") from None
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: model file not found")
        data = path.read_bytes()
        if verify:
            _verify_onnx(path, data)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for broken files
            raise ModelFileError(f"{path}: not a usable ONNX model (truncated or corrupt?): "
                                 f"{str(err).splitlines()[0][:300]}") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
        try:
            meta = json.loads(raw)
            charset = Charset(meta["charset"])
            height, stride = int(meta["height"]), int(meta["width_stride"])
        except (TypeError, KeyError, ValueError):
            raise ModelFileError(f"{path}: not an htrjand model (no readable '{ONNX_METADATA_KEY}' metadata; "
                                 "export it with `htrjand export`)") from None
        meta["path"] = str(path)
        super().__init__(charset, meta, height, stride)

    def run(self, images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, lengths = self.session.run(None, {"images": images, "widths": widths})
        return logits, lengths


def _verify_onnx(path: Path, data: bytes) -> None:
    """Parse the file with `onnx` (when installed) and compare its graph with the hash written at
    export: a truncated or altered file is refused with a clear message."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:
        return
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path}: not a readable ONNX file (truncated or corrupt?): {err}") from None
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise ModelFileError(f"{path}: not an htrjand model (no '{ONNX_METADATA_KEY}' metadata; "
                             "export it with `htrjand export`)")
    expected = props.get(GRAPH_HASH_KEY)
    if expected and expected != graph_hash(model):
        raise ModelFileError(f"{path}: the model's weights or graph changed after export (hash mismatch): "
                             "the file is corrupt or was tampered with; export it again")


DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "student.ckpt"
MODEL_SUFFIXES = (".ckpt", ".onnx", ".pt", ".pth")


def load(path: str | Path | None = None, device: str = "cpu", engine: str | None = None, tta: int = 1,
         scales: int | Sequence[float] = 1) -> LineReader:
    """Load a model for recognition: `htrjand.load(path).recognize(images)`; with no path, the bundled
    Student (DEFAULT_MODEL, model card beside it). `tta` 3 or 5: test-time augmentation; `scales` 3, 5,
    7 or width factors: multi-scale reading (`LineReader`).

    `.onnx` files (or `engine="onnx"`) run on onnxruntime; checkpoints on PyTorch (imported only then)."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if engine == "onnx" or (engine is None and path.suffix.lower() == ".onnx"):
        reader: LineReader = OnnxRecognizer(path)
    elif engine not in (None, "torch"):
        raise ValueError(f"unknown engine {engine!r}; choose torch or onnx")
    else:
        from .recognition import Recognizer

        reader = Recognizer.from_checkpoint(path, device)
    reader.tta = tta
    reader.scales = scales
    return reader
