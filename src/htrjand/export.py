"""Export a checkpoint for deployment: ONNX (dynamic batch and width, optional int8) or TorchScript.

The exported file carries everything needed to run it (charset, input height, width stride,
calibration temperature, character mapping) in its metadata, and is checked against the PyTorch
model on real or rendered lines before it is written: `export` reports the largest difference of
the logits and how often the greedy transcriptions agree.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .checkpoint import file_sha256
from .images import pad_batch
from .metrics import char_errors
from .recognition import Recognizer
from .runtime import GRAPH_HASH_KEY, ONNX_METADATA_KEY, OnnxRecognizer, graph_hash

OPSET = 17
INT8_MODES = ("dynamic", "static")


class ExportError(ValueError):
    """An export that cannot be done (the message says why)."""


@dataclass
class ExportReport:
    """What was written and how closely it matches the PyTorch model on `lines` verification lines."""

    path: str
    format: str
    int8: str | None
    bytes: int
    lines: int = 0
    max_abs_diff: float = 0.0  # largest |logit difference| over all real frames
    text_agreement: float = 1.0  # share of lines whose greedy transcription is identical
    cer_vs_torch: float = 0.0  # CER of the exported model's transcriptions against PyTorch's
    seconds: float = 0.0
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def model_metadata(reader: Recognizer, checkpoint: Path, fmt: str, int8: str | None) -> dict:
    """Settings the runtime needs plus provenance (source checkpoint and its hash)."""
    meta = reader.meta
    return {"format": f"htrjand-{fmt}", "htrjand_version": __version__, "torch_version": torch.__version__,
            "charset": reader.charset.to_list(), "height": reader.height, "width_stride": reader.stride,
            "calibration": meta.get("calibration"), "charset_mapping": meta.get("charset_mapping"),
            "preset": meta.get("preset", ""), "model": meta.get("model"), "parameters": reader.parameters,
            "metrics": {k: float(v) for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float))},
            "training": meta.get("training"), "distillation": meta.get("distillation"),
            "source_checkpoint": checkpoint.name,
            "source_sha256": file_sha256(checkpoint), "int8": int8,
            "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def verification_arrays(reader: Recognizer, images: Sequence | None, count: int = 32, seed: int = 0) -> list[np.ndarray]:
    """Model inputs for checking an export: the given line images (unreadable ones skipped), or
    lines rendered on the fly (various widths) when none are given."""
    if images:
        return _readable(reader, images, "verification")
    from .demo import random_text, render_line

    rng = random.Random(seed)
    return [reader.prepare(render_line(random_text(rng, 1, 6), rng))[0] for _ in range(count)]


def _readable(reader: Recognizer, images: Sequence, purpose: str) -> list[np.ndarray]:
    """Model inputs of the images that can be read (unreadable ones skipped; none at all is an error)."""
    arrays = [a[0] for a in map(reader.prepare, images) if not isinstance(a, str)]
    if not arrays:
        raise ExportError(f"none of the {purpose} images could be read")
    return arrays


def export(checkpoint: str | Path, output: str | Path | None = None, fmt: str = "onnx", int8: str | None = None,
           verify: Sequence | None = None, calibration: Sequence | None = None, batch_size: int = 8) -> ExportReport:
    """Export `checkpoint` to `output` (default: next to it, `.onnx` or `.pt`) and verify it.

    `int8`: None, "dynamic" (weights int8, activations quantised on the fly; needs no data) or
    "static" (QDQ, activation ranges calibrated on `calibration` line images). `verify`: line images
    to compare on (default: rendered lines)."""
    checkpoint = Path(checkpoint)
    if fmt not in ("onnx", "torchscript"):
        raise ExportError(f"unknown export format {fmt!r}; choose onnx or torchscript")
    if int8 and fmt != "onnx":
        raise ExportError("int8 quantisation is available for ONNX exports only")
    if int8 and int8 not in INT8_MODES:
        raise ExportError(f"unknown int8 mode {int8!r}; choose {' or '.join(INT8_MODES)}")
    if int8 == "static" and not calibration:
        raise ExportError("static int8 needs calibration lines (--calibration DATASET): a few hundred real lines")
    reader = Recognizer.from_checkpoint(checkpoint)
    suffix = {"onnx": ".int8.onnx" if int8 else ".onnx", "torchscript": ".pt"}[fmt]
    output = Path(output) if output else checkpoint.with_suffix(suffix)
    if output.resolve() == checkpoint.resolve():
        raise ExportError(f"{output}: refusing to overwrite the checkpoint itself")
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    meta = model_metadata(reader, checkpoint, fmt, int8)
    arrays = verification_arrays(reader, verify)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        tmp_out = Path(tmp) / output.name
        if fmt == "onnx":
            _export_onnx(reader, tmp_out, meta, int8, calibration)
            exported = OnnxRecognizer(tmp_out, threads=1)
        else:
            _export_torchscript(reader, tmp_out, meta)
            exported = _TorchScriptReader(tmp_out)
        report = _compare(reader, exported, arrays, batch_size)
        os.replace(tmp_out, output)
    report.path, report.format, report.int8, report.bytes = str(output), fmt, int8, output.stat().st_size
    report.seconds, report.metadata = time.perf_counter() - start, meta
    return report


def _example_inputs(reader: Recognizer) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = pad_batch([np.zeros((reader.height, 40 * reader.stride), np.float32),
                      np.zeros((reader.height, 30 * reader.stride), np.float32)], reader.stride)
    return torch.from_numpy(x), torch.from_numpy(w)


def _export_onnx(reader: Recognizer, path: Path, meta: dict, int8: str | None, calibration: Sequence | None) -> None:
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'htrjand[onnx]'") from None
    fp32 = path.with_name(path.stem + ".fp32.onnx") if int8 else path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes: the axes below are declared dynamic
        # The TorchScript-based exporter handles the dynamic width axis in one pass (the
        # torch.export-based one fails on the attention's symbolic reshape in torch 2.13).
        torch.onnx.export(reader.model, _example_inputs(reader), str(fp32), input_names=["images", "widths"],
                          output_names=["logits", "lengths"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"images": {0: "batch", 3: "width"}, "widths": {0: "batch"},
                                        "logits": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}})
    if int8:
        _quantize(fp32, path, int8, reader, calibration)
        fp32.unlink()
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    del model.metadata_props[:]
    model.producer_name, model.producer_version = "htrjand", __version__
    model.doc_string = ("HTR-JAND line recogniser. Inputs: images float32 [B,1,H,W] (ink = 1, paper = 0, "
                        "height normalised), widths int64 [B] (real widths, multiples of the width stride). "
                        "Outputs: CTC logits [B,T,C] (class 0 = blank) and frame lengths [B].")
    for key, value in ((ONNX_METADATA_KEY, json.dumps(meta, ensure_ascii=False)), (GRAPH_HASH_KEY, graph_hash(model))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader over real lines, one line per batch (any width)."""

    def __init__(self, arrays: list[np.ndarray], stride: int):
        self.items = iter([dict(zip(("images", "widths"), pad_batch([a], stride))) for a in arrays])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def _quantize(fp32: Path, out: Path, mode: str, reader: Recognizer, calibration: Sequence | None) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = fp32.with_name(fp32.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    if mode == "dynamic":
        # Linear layers (MatMul/Gemm) in int8; convolutions stay fp32 (ConvInteger is slower on CPU).
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                         per_channel=True)
    else:
        lines = _CalibrationReader(_readable(reader, calibration, "calibration"), reader.stride)
        quantize_static(str(pre), str(out), lines, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    pre.unlink()


def _export_torchscript(reader: Recognizer, path: Path, meta: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(reader.model, _example_inputs(reader), check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={"htrjand.json": json.dumps(meta, ensure_ascii=False)})


class _TorchScriptReader:
    """A TorchScript file run like the checkpoint it came from (for verification)."""

    def __init__(self, path: Path):
        extra = {"htrjand.json": ""}
        self.module = torch.jit.load(str(path), _extra_files=extra)
        self.meta = json.loads(extra["htrjand.json"])

    @torch.inference_mode()
    def run(self, images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, lengths = self.module(torch.from_numpy(images), torch.from_numpy(widths))
        return logits.numpy(), lengths.numpy()


def _compare(reference: Recognizer, exported, arrays: list[np.ndarray], batch_size: int) -> ExportReport:
    """Run both engines on the same batches: largest logit difference, identical transcriptions."""
    report = ExportReport("", "", None, 0, lines=len(arrays))
    order = sorted(range(len(arrays)), key=lambda i: arrays[i].shape[1])
    same, errors, chars = 0, 0, 0
    for start in range(0, len(order), batch_size):
        x, w = pad_batch([arrays[i] for i in order[start:start + batch_size]], reference.stride)
        ref_logits, ref_len = reference.run(x, w)
        out_logits, out_len = exported.run(x, w)
        if not np.array_equal(ref_len, out_len):
            raise ExportError(f"the exported model gives other frame counts ({out_len.tolist()} vs {ref_len.tolist()})")
        for j, n in enumerate(ref_len.tolist()):
            report.max_abs_diff = max(report.max_abs_diff, float(np.abs(ref_logits[j, :n] - out_logits[j, :n]).max()))
            a = reference.decoder.decode_line(ref_logits[j, :n]).text
            b = reference.decoder.decode_line(out_logits[j, :n]).text
            same += a == b
            errors += char_errors(a, b)
            chars += max(len(a), 1)
    report.text_agreement = same / max(len(arrays), 1)
    report.cer_vs_torch = errors / max(chars, 1)
    return report
