"""The bundled default job: render a small line dataset, train a Student on it, evaluate, recognise.

Needs nothing outside the package: lines are drawn with Pillow's built-in scalable font, so
`htrjand demo` runs on a fresh machine with no data and no download.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WORDS = ("the of and to in is was for on are with as his they at be this from have or by one had not "
         "but what all were when we there can an your which their said if do will each about how up out "
         "them then she many some so these would other into has more her two like him see time could no "
         "make than first been its who now people my made over did down only way find use may water long "
         "little very after words called just where most know get through back much before go good new "
         "write our used me man too any day same right look think also around another came come work three "
         "le la les des une est dans pour que qui sur avec pas plus par sont mais comme tout nous elle "
         "2024 1851 12 7 30").split()
PUNCT = [",", ".", ";", ":", "?", "!"]


def random_text(rng: random.Random, min_words: int = 1, max_words: int = 4) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
    if rng.random() < 0.3:
        words[0] = words[0].capitalize()
    if rng.random() < 0.3:
        words[-1] += rng.choice(PUNCT)
    return " ".join(words)


def render_line(text: str, rng: random.Random, height: int = 64) -> Image.Image:
    """Dark text on light paper with random size, position, rotation, stroke, blur and noise."""
    size = rng.randint(30, 40)
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = rng.randint(4, 16), rng.randint(6, 14)
    w, h = right - left + 2 * pad_x, bottom - top + 2 * pad_y
    paper = rng.randint(200, 255)
    image = Image.new("L", (w, h), paper)
    ink = rng.randint(0, 90)
    ImageDraw.Draw(image).text((pad_x - left, pad_y - top), text, fill=ink, font=font,
                               stroke_width=rng.choice([0, 0, 1]), stroke_fill=ink)
    image = image.rotate(rng.uniform(-2, 2), resample=Image.Resampling.BILINEAR, expand=True, fillcolor=paper)
    shear = rng.uniform(-0.3, 0.3)
    image = image.transform((image.width + int(abs(shear) * image.height), image.height), Image.Transform.AFFINE,
                            (1, shear, -abs(shear) * image.height if shear > 0 else 0, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR, fillcolor=paper)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    arr = np.asarray(image, dtype=np.float32)
    arr += np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(0, 12), arr.shape)
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return image.resize((max(8, round(image.width * height / image.height)), height), Image.Resampling.BILINEAR)


def make_dataset(root: Path, counts: dict[str, int], seed: int = 0) -> dict[str, Path]:
    """Render `counts` lines per split into `root/lines` with one TSV manifest per split."""
    rng = random.Random(seed)
    (root / "lines").mkdir(parents=True, exist_ok=True)
    manifests = {}
    for split, n in counts.items():
        rows = []
        for i in range(n):
            text = random_text(rng)
            name = f"lines/{split}_{i:05d}.png"
            render_line(text, rng).save(root / name)
            rows.append(f"{name}\t{text}")
        manifests[split] = root / f"{split}.tsv"
        manifests[split].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifests


def run_demo(output: str | Path = "runs/demo", train_lines: int = 1500, epochs: int = 10, seed: int = 0,
             progress: bool = True) -> dict:
    """Render data, train a Student, evaluate on a held-out split and read three lines."""
    from .config import load_config
    from .datasets import read_dataset
    from .evaluation import evaluate, format_report
    from .recognition import load
    from .training import train
    from .training.faults import StopRequested

    output = Path(output)
    manifests = make_dataset(output / "rendered", {"train": train_lines, "val": 100, "test": 100}, seed)
    print(f"rendered {train_lines} training lines into {output / 'rendered'}")
    cfg = load_config(preset_name="student", overrides={
        "data": {"train": [str(manifests["train"])], "val": [str(manifests["val"])], "batch_size": 24,
                 "workers": 1, "augment": 0.0},
        "train": {"output": str(output / "model"), "epochs": epochs, "lr": 3e-3, "warmup_steps": 60,
                  "seed": seed, "progress": progress, "checkpoint_every": 100, "patience": 100},
        "model": {"dropout": 0.05, "cnn_dropout": 0.1},
    })
    try:
        summary = train(cfg)
    except StopRequested as stop:  # the demo has no --resume: a stop just ends it
        raise StopRequested(stop.signum, stop.step, resume=None) from None
    recognizer = load(summary["best_checkpoint"])
    report = evaluate(recognizer, read_dataset(manifests["test"]))
    print(format_report(report))
    print("\nexamples (image, recognised text, confidence):")
    for line in report["lines"][:3]:
        print(f"  {line['image']}\t{line['hypothesis']}\t{line['confidence']:.2f}   (truth: {line['reference']})")
    result = {"train": summary, "test": {k: v for k, v in report.items() if k != "lines"}}
    (output / "demo.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result
