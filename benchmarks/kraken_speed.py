"""Kraken recogniser speed baseline: lines/s of Kraken's default recognition network on line images.

Run with the Kraken venv built by benchmarks/kraken_env.sh (never with the project's environment):

    .bench/kraken-venv/bin/python benchmarks/kraken_speed.py --lines LIST.txt \\
        --batch-size 16 --threads 2 --json OUT.json [--charset CHARS.txt] [--api batched|task]

LIST.txt holds one line-image path per line (relative paths are relative to LIST.txt's folder).
The network is Kraken's default recognition spec (the one `ketos train` uses when given no --spec)
with its CTC output layer sized to the codec, untrained: weights cost the same time whether trained
or not. Each image is a whole text line (as `kraken ocr --no-segmentation`): a bbox line covering the
image, cut with Kraken's extract_polygons, normalised with Kraken's ImageInputTransforms (centre-line
normalisation to the spec's height 120, 16 px padding), run through the network and decoded with
Kraken's greedy CTC decoder and codec.

--api batched (default) feeds lines through Kraken's own batched CTC path
(CTCRecognitionInferenceMixin._recognize_box_lines) --batch-size lines at a time, as Kraken batches
the lines of one page. --api task calls the public RecognitionTaskModel.predict once per image, as
`kraken ocr -s` does; one image is one line, so that path runs lines one at a time whatever the
batch size.

seconds_total runs from the start of this script (before torch and kraken are imported) to the last
recognised line: imports, model build, image loading and recognition. seconds_recognition covers
preprocessing, network and decoding of all lines (images already decoded in memory). The 1-minute
load average at start and end and the process's CPU seconds are recorded too: torch's OpenMP threads
slow down sharply when other processes hold the cores, so numbers taken under load are not comparable.

torchvision has no CPU wheel on PyPI, and the CUDA one's compiled ops do not load beside torch's CPU
build; torchvision then fails at import when it registers fake kernels for two of its ops. When its
ops do not load, the two operator schemas are declared here without kernels (calling them raises), so
that the pure-Python transforms Kraken's recognition path uses import and run unchanged.
"""
from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

DEFAULT_ALPHABET = (" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
                    "abcdefghijklmnopqrstuvwxyz{|}~¡£§«°»ÀÂÄÇÈÉÊËÎÏÔÖÙÛÜàâäæçèéêëîïñôöùûüŒœ‘’“”€")
_TORCHVISION_SCHEMAS = None  # keeps the declared operator schemas alive


class UsageError(Exception):
    """Bad input: reported as one line, no traceback."""


def allow_torchvision_without_ops() -> bool:
    """Declare torchvision's nms/qnms schemas when its compiled ops cannot load; True if declared."""
    global _TORCHVISION_SCHEMAS
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations or _TORCHVISION_SCHEMAS is not None:
        return False
    library = next(Path(spec.submodule_search_locations[0]).glob("_C*.so"), None)
    if library is not None:
        try:
            torch.ops.load_library(str(library))
            return False
        except OSError:
            pass
    _TORCHVISION_SCHEMAS = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        _TORCHVISION_SCHEMAS.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True


def import_kraken() -> dict:
    """Import torch, torchvision and kraken; return their versions."""
    import importlib.metadata

    warnings.filterwarnings("ignore", message="Failed to load image Python extension")
    shimmed = allow_torchvision_without_ops()
    import kraken.lib.dataset  # noqa: F401  (imports torchvision)
    import kraken.models  # noqa: F401

    version = importlib.metadata.version
    return {"kraken_version": version("kraken"), "torch_version": version("torch"),
            "torchvision_version": version("torchvision"), "torchvision_ops": not shimmed}


def read_list(path: Path) -> list[tuple[Path, int]]:
    """(image path, line number) from a list file, one path a line; blank and '#' lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read line list {path}: {e}")
    paths = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        image = Path(line) if Path(line).is_absolute() else path.parent / line
        if not image.is_file():
            raise UsageError(f"{path}:{number}: no such image file {image}")
        paths.append((image, number))
    if not paths:
        raise UsageError(f"{path}: no image paths")
    return paths


def read_charset(path: Path | None) -> str:
    """Distinct characters of a UTF-8 file (line breaks and tabs excluded), or the default alphabet."""
    if path is None:
        return DEFAULT_ALPHABET
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read charset {path}: {e}")
    chars = "".join(sorted(set(text) - set("\r\n\t")))
    if not chars:
        raise UsageError(f"{path}: charset has no characters")
    return chars


def default_spec() -> str:
    """The VGSL spec `ketos train` uses when none is given (kraken 7: configs; older: default_specs)."""
    try:
        from kraken.configs import VGSLRecognitionTrainingConfig
        return VGSLRecognitionTrainingConfig().spec
    except ImportError:
        from kraken.lib.default_specs import RECOGNITION_SPEC
        return RECOGNITION_SPEC


def build_model(charset: str, seed: int = 0):
    """Kraken's default recognition network with a fresh CTC output layer for `charset`, untrained."""
    import torch
    from kraken.lib.codec import PytorchCodec
    from kraken.models import create_model

    torch.manual_seed(seed)
    codec = PytorchCodec(charset)
    spec = default_spec().strip()
    spec = f"[{spec[1:-1]} O1c{codec.max_label + 1}]"  # as ketos train builds a new model
    net = create_model("TorchVGSLModel", model_type=["recognition"], vgsl=spec)
    net.init_weights()
    net.add_codec(codec)
    net.seg_type = "bbox"
    net.one_channel_mode = "L"
    return net


def load_images(entries: list[tuple[Path, int]], list_file: Path):
    """Decode every line image (Kraken's open_image: PIL plus EXIF rotation)."""
    from kraken.lib.util import open_image

    images = []
    for path, number in entries:
        try:
            image = open_image(path)
            image.load()
        except Exception as e:  # PIL raises OSError, ValueError, DecompressionBombError...
            raise UsageError(f"{list_file}:{number}: cannot read image {path}: {e}")
        images.append(image)
    return images


def whole_line(image, name: str):
    """A one-line bbox segmentation covering the whole image (as `kraken ocr --no-segmentation`)."""
    from kraken.containers import BBoxLine, Segmentation

    return Segmentation(type="bbox", imagename=name, text_direction="horizontal-lr",
                        script_detection=False,
                        lines=[BBoxLine(id=name, bbox=(0, 0, image.width, image.height))])


def recognise_batched(net, images, names, batch_size: int) -> list[str]:
    """Kraken's batched CTC path, with the lines of consecutive images batched together."""
    import dataclasses

    import torch
    from kraken.lib.dataset import ImageInputTransforms
    from kraken.lib.segmentation import extract_polygons

    batch, channels, height, width = net.input
    transforms = ImageInputTransforms(batch, height, width, channels, (net._inf_config.padding, 0),
                                      valid_norm=True, dtype=net._m_dtype)
    texts = [""] * len(images)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            queue, lines = [], []
            for i in range(start, min(start + batch_size, len(images))):
                seg = whole_line(images[i], names[i])
                line_image, _ = next(extract_polygons(images[i], seg))
                tensor = transforms(line_image)
                if tensor.max() == tensor.min():  # Kraken emits an empty record for blank lines
                    continue
                queue.append((tensor, line_image, len(lines)))
                lines.append((i, seg.lines[0]))
            if not queue:
                continue
            seg = dataclasses.replace(seg, lines=[line for _, line in lines])
            for record, idx in net._recognize_box_lines(queue, seg):
                texts[lines[idx][0]] = record.prediction
    return texts


def recognise_task(net, images, names, config) -> list[str]:
    """The public API: RecognitionTaskModel.predict on each image, one whole-image line each."""
    from kraken.tasks import RecognitionTaskModel

    model = RecognitionTaskModel([net])
    return ["".join(r.prediction for r in model.predict(image, whole_line(image, name), config))
            for image, name in zip(images, names)]


def run(args: argparse.Namespace) -> dict:
    load_start = os.getloadavg()[0]
    entries = read_list(args.lines)
    paths = [path for path, _ in entries]
    charset = read_charset(args.charset)

    import torch
    from threadpoolctl import threadpool_limits

    versions = import_kraken()
    from kraken.configs import RecognitionInferenceConfig

    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):  # numpy/scipy pools, as `kraken --threads`
        t_build = time.perf_counter()
        net = build_model(charset)
        config = RecognitionInferenceConfig(batch_size=args.batch_size, num_line_workers=0,
                                            accelerator="cpu", device="auto", precision="32-true")
        net.prepare_for_inference(config)
        t_load = time.perf_counter()
        images = load_images(entries, args.lines)
        names = [p.name for p in paths]
        t_rec = time.perf_counter()
        if args.api == "batched":
            texts = recognise_batched(net, images, names, args.batch_size)
        else:
            texts = recognise_task(net, images, names, config)
        end = time.perf_counter()
    if args.predictions:
        args.predictions.write_text("".join(f"{p}\t{t}\n" for p, t in zip(paths, texts)), encoding="utf-8")
    n = len(paths)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        **versions,
        "lines": n,
        "seconds_total": round(end - START, 3),
        "seconds_recognition": round(end - t_rec, 3),
        "seconds_startup": round(t_build - START, 3),
        "seconds_model_build": round(t_load - t_build, 3),
        "seconds_image_loading": round(t_rec - t_load, 3),
        "lines_per_second": round(n / (end - START), 3),
        "lines_per_second_recognition": round(n / (end - t_rec), 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),  # far below threads x total: contended
        "load_average_start": round(load_start, 2),
        "load_average_end": round(os.getloadavg()[0], 2),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "spec": net.spec,
        "parameters": sum(p.numel() for p in net.parameters()),
        "codec_size": len(net.codec),
        "api": args.api,
        "mean_image_width": round(sum(i.width for i in images) / n, 1),
        "mean_image_height": round(sum(i.height for i in images) / n, 1),
        "empty_predictions": sum(not t for t in texts),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=Path, help="file with one line-image path per line")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here (also printed)")
    parser.add_argument("--charset", type=Path, help="UTF-8 file whose characters form the codec")
    parser.add_argument("--api", choices=("batched", "task"), default="batched")
    parser.add_argument("--predictions", type=Path, help="write path<TAB>prediction lines here")
    parser.add_argument("--check", action="store_true", help="import kraken, print versions, exit")
    args = parser.parse_args(argv)
    try:
        if args.check:
            v = import_kraken()
            print(f"kraken {v['kraken_version']}, torch {v['torch_version']}, "
                  f"torchvision {v['torchvision_version']} (compiled ops: {v['torchvision_ops']})")
            return 0
        if args.lines is None:
            raise UsageError("--lines LIST.txt is required")
        if args.batch_size < 1 or args.threads < 1:
            raise UsageError("--batch-size and --threads must be at least 1")
        result = run(args)
    except UsageError as e:
        print(f"kraken_speed.py: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"kraken_speed.py: {e}; run it with the venv from benchmarks/kraken_env.sh "
              "(.bench/kraken-venv/bin/python)", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
