"""Export: ONNX/TorchScript parity with PyTorch, int8, the torch-free runtime, and broken model files."""
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from htrjand.cli import main  # noqa: E402
from htrjand.config import load_config  # noqa: E402
from htrjand.datasets import read_dataset  # noqa: E402
from htrjand.export import ExportError, export  # noqa: E402
from htrjand.recognition import Recognizer  # noqa: E402
from htrjand.runtime import ModelFileError, OnnxRecognizer, load  # noqa: E402
from htrjand.training import train  # noqa: E402

from conftest import TINY_MODEL  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(rendered, tmp_path_factory):
    out = tmp_path_factory.mktemp("export-run")
    cfg = load_config(preset_name="student", overrides={
        "data": {"train": [str(rendered["train"])], "val": [str(rendered["val"])], "batch_size": 8, "workers": 0,
                 "augment": 0.0},
        "train": {"output": str(out), "warmup_steps": 2, "progress": False, "max_steps": 30, "epochs": 10},
        "model": dict(TINY_MODEL)})
    train(cfg)
    return out / "best.ckpt"


@pytest.fixture(scope="module")
def onnx_model(checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    report = export(checkpoint, path)
    return path, report


def _images(rendered):
    return [s.image for s in read_dataset(rendered["test"])]


def test_onnx_matches_pytorch_on_every_width_and_batch(onnx_model, checkpoint, rendered):
    path, report = onnx_model
    assert report.lines == 32 and report.max_abs_diff < 1e-4 and report.text_agreement == 1.0
    torch_reader, onnx_reader = Recognizer.from_checkpoint(checkpoint), OnnxRecognizer(path)
    images = _images(rendered)
    widths = {torch_reader.prepare(i)[0].shape[1] for i in images}
    assert len(widths) > 5  # the dynamic width axis is exercised
    a = torch_reader.forward(images, batch_size=5)
    b = onnx_reader.forward(images, batch_size=3)  # other batch compositions, other padding
    for x, y in zip(a, b):
        assert x.logits.shape == y.logits.shape
        assert np.abs(x.logits - y.logits).max() < 1e-4
    assert [r.text for r in torch_reader.recognize(images)] == [r.text for r in onnx_reader.recognize(images)]
    torch_reader.scales = onnx_reader.scales = 3  # multi-scale reading is the engines' shared LineReader
    assert [r.text for r in torch_reader.recognize(images)] == [r.text for r in onnx_reader.recognize(images)]


def test_onnx_file_alone_carries_the_settings(onnx_model, checkpoint):
    path, _ = onnx_model
    reader, original = load(path), load(checkpoint)
    assert reader.engine == "onnx" and reader.charset == original.charset
    assert (reader.height, reader.stride) == (original.height, original.stride)
    assert reader.meta["parameters"] == original.parameters and reader.meta["source_sha256"]


def test_runtime_runs_without_torch(onnx_model, rendered):
    path, _ = onnx_model
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
            "import htrjand, htrjand.runtime as rt\n"
            f"r = rt.load({str(path)!r})\n"
            f"print(len([x for x in r.recognize({[str(i) for i in _images(rendered)]!r}) if x.error is None]))\n"
            "from htrjand.cli import main\n"
            f"assert main(['recognize', {str(path)!r}, {str(_images(rendered)[0])!r}]) == 0\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "16" and out.stdout.splitlines()[1].startswith(str(_images(rendered)[0]))


def test_int8_export(checkpoint, rendered, tmp_path):
    report = export(checkpoint, tmp_path / "m.int8.onnx", int8="dynamic", verify=_images(rendered))
    assert report.int8 == "dynamic" and report.lines == 16 and report.max_abs_diff < 1.0
    meta = load(tmp_path / "m.int8.onnx").meta
    assert meta["int8"] == "dynamic"
    static = export(checkpoint, tmp_path / "s.onnx", int8="static", verify=_images(rendered),
                    calibration=[s.image for s in read_dataset(rendered["val"])])
    assert static.bytes < report.bytes  # convolutions quantised too
    with pytest.raises(ExportError, match="calibration"):
        export(checkpoint, tmp_path / "x.onnx", int8="static")


def test_torchscript_export(checkpoint, tmp_path):
    report = export(checkpoint, tmp_path / "m.pt", fmt="torchscript")
    assert report.max_abs_diff < 1e-4 and report.text_agreement == 1.0


def test_broken_onnx_files_are_refused(onnx_model, tmp_path, capsys):
    path, _ = onnx_model
    data = path.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated.onnx"):
        OnnxRecognizer(truncated)
    # flip bytes inside the largest weight: still a valid protobuf, but not the exported model
    import onnx

    model = onnx.load(str(path))
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    start = data.index(weight.raw_data[:64]) + 8
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(data[:start] + bytes(b ^ 0xFF for b in data[start:start + 16]) + data[start + 16:])
    with pytest.raises(ModelFileError, match="hash mismatch"):
        OnnxRecognizer(tampered)
    foreign = tmp_path / "foreign.onnx"
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    with pytest.raises(ModelFileError, match="not an htrjand model"):
        OnnxRecognizer(foreign)
    assert main(["recognize", str(truncated), "x.png"]) == 2
    assert "truncated.onnx" in capsys.readouterr().err


def test_bad_images_give_per_line_errors(onnx_model, rendered, tmp_path):
    path, _ = onnx_model
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    reader = OnnxRecognizer(path)
    results = reader.recognize([_images(rendered)[0], str(empty), np.zeros((0, 10), np.uint8),
                                str(tmp_path / "missing.png")])
    assert results[0].error is None and results[0].text == reader.recognize(_images(rendered)[0])[0].text
    assert all(r.error for r in results[1:])
    assert "empty.png" in results[1].error and "missing.png" in results[3].error


def test_cli_export_and_onnx_recognize(checkpoint, rendered, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(checkpoint), "--output", str(out), "--verify", str(rendered["test"]),
                 "--json", str(tmp_path / "e.json")]) == 0
    assert "identical transcriptions 100.0%" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["lines"] == 16
    image = str(_images(rendered)[0])
    assert main(["recognize", str(checkpoint), image]) == 0
    via_torch = capsys.readouterr().out
    assert main(["recognize", str(out), image]) == 0
    assert capsys.readouterr().out == via_torch
