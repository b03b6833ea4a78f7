"""`htrjand recognize --shard K/N` and `htrjand merge-results`: shards of a mixed input list (line
images, PAGE and ALTO files) merge into what one run writes; incomplete or foreign shards are refused."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

from htrjand.cli import main
from htrjand.datasets import read_dataset
from htrjand.demo import render_line
from htrjand.shards import Shard, assign, parse_shard, shard_path

from conftest import TINY_MODEL

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"
ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"


def _page_image(folder: Path, name: str, texts: list[str], seed: int) -> tuple[Path, list[tuple[int, int, int, int]]]:
    rng = random.Random(seed)
    page = Image.new("L", (700, 90 * len(texts) + 40), 250)
    boxes = []
    for i, text in enumerate(texts):
        im = render_line(text, rng)
        im = im.crop((0, 0, min(im.width, 640), im.height))
        x, y = 20, 20 + 90 * i
        page.paste(im, (x, y))
        boxes.append((x, y, x + im.width, y + im.height))
    path = folder / name
    page.save(path)
    return path, boxes


def make_page(folder: Path, stem: str, texts: list[str], seed: int) -> Path:
    """A PAGE 2013 file (one region, a line per text) and its page image."""
    image, boxes = _page_image(folder, f"{stem}.png", texts, seed)
    lines = "".join(f'<TextLine id="{stem}_l{i}"><Coords points="{l},{t} {r},{t} {r},{b} {l},{b}"/>'
                    f'<Baseline points="{l},{b - 12} {r},{b - 12}"/></TextLine>'
                    for i, (l, t, r, b) in enumerate(boxes))
    with Image.open(image) as im:
        width, height = im.size
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<PcGts xmlns="{PAGE_NS}"><Metadata><Creator>test</Creator>'
           "<Created>2024-01-01T00:00:00</Created><LastChange>2024-01-01T00:00:00</LastChange></Metadata>"
           f'<Page imageFilename="{image.name}" imageWidth="{width}" imageHeight="{height}">'
           f'<TextRegion id="{stem}_r"><Coords points="0,0 {width},0 {width},{height} 0,{height}"/>{lines}'
           "</TextRegion></Page></PcGts>\n")
    path = folder / f"{stem}.xml"
    path.write_text(xml, encoding="utf-8")
    return path


def make_alto(folder: Path, stem: str, texts: list[str], seed: int) -> Path:
    """An ALTO v4 file (pixel units, one block, a line per text) and its page image."""
    image, boxes = _page_image(folder, f"{stem}.png", texts, seed)
    with Image.open(image) as im:
        width, height = im.size
    lines = "".join(f'<TextLine ID="{stem}_l{i}" HPOS="{l}" VPOS="{t}" WIDTH="{r - l}" HEIGHT="{b - t}">'
                    f'<Shape><Polygon POINTS="{l} {t} {r} {t} {r} {b} {l} {b}"/></Shape>'
                    f'<String CONTENT="x" HPOS="{l}" VPOS="{t}" WIDTH="{r - l}" HEIGHT="{b - t}"/></TextLine>'
                    for i, (l, t, r, b) in enumerate(boxes))
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<alto xmlns="{ALTO_NS}"><Description>'
           "<MeasurementUnit>pixel</MeasurementUnit><sourceImageInformation>"
           f"<fileName>{image.name}</fileName></sourceImageInformation></Description>"
           f'<Layout><Page ID="p1" WIDTH="{width}" HEIGHT="{height}" PHYSICAL_IMG_NR="1">'
           f'<PrintSpace HPOS="0" VPOS="0" WIDTH="{width}" HEIGHT="{height}"><TextBlock ID="{stem}_b">'
           f"{lines}</TextBlock></PrintSpace></Page></Layout></alto>\n")
    path = folder / f"{stem}.xml"
    path.write_text(xml, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model(rendered, tmp_path_factory) -> Path:
    """A tiny checkpoint barely moved from its random start, so that it writes varied, non-empty text."""
    from htrjand.config import load_config
    from htrjand.training import train

    out = tmp_path_factory.mktemp("shard_model")
    cfg = load_config(preset_name="student", overrides={
        "data": {"train": [str(rendered["train"])], "val": [str(rendered["val"])], "batch_size": 16,
                 "workers": 0, "augment": 0},
        "train": {"output": str(out), "lr": 1e-7, "warmup_steps": 1, "progress": False, "epochs": 1, "max_steps": 1},
        "model": dict(TINY_MODEL)})
    train(cfg)
    return out / "last.ckpt"


@pytest.fixture(scope="module")
def inputs(rendered, tmp_path_factory) -> list[str]:
    """A mixed list: a folder of 6 line images, two PAGE files (3 and 2 lines), an ALTO file (4 lines)
    and one more line image."""
    root = tmp_path_factory.mktemp("shard_inputs")
    lines = root / "lines"
    lines.mkdir()
    images = [s.image for s in read_dataset(rendered["test"])]
    for image in images[:6]:
        shutil.copy(image, lines / image.name)
    pages = root / "pages"
    pages.mkdir()
    page_a = make_page(pages, "page_a", ["the first line", "a second one", "and a third"], 1)
    page_b = make_page(pages, "page_b", ["only two", "lines here"], 2)
    alto = make_alto(pages, "alto_c", ["four lines", "in this", "alto file", "to read"], 3)
    return [str(lines), str(page_a), str(alto), str(images[7]), str(page_b)]


def _recognize(model: Path, inputs: list[str], *flags: str) -> int:
    return main(["recognize", str(model), *inputs, "--batch-size", "4", *flags])


def _records(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def _texts(xml: Path) -> list[str]:
    """The recognised texts written into a PAGE (TextLine Unicode) or ALTO (String CONTENT) file."""
    from lxml import etree

    root = etree.parse(str(xml)).getroot()
    return [el.text or "" for el in root.iter("{*}Unicode") if etree.QName(el.getparent().getparent()).localname == "TextLine"] \
        + [el.get("CONTENT") for el in root.iter("{*}String")]


def _same(a: list[dict], b: list[dict]) -> None:
    """Equal results; confidences to 1e-3 (another batch mix may move float rounding in the last digit)."""
    assert [r["image"] for r in a] == [r["image"] for r in b]
    assert [r["text"] for r in a] == [r["text"] for r in b]
    assert [r["confidence"] for r in a] == pytest.approx([r["confidence"] for r in b], abs=1e-3)


def test_three_shards_merge_into_the_single_run(model, inputs, tmp_path, capsys):
    assert _recognize(model, inputs, "--json", str(tmp_path / "one.json"), "--output-dir", str(tmp_path / "one")) == 0
    single = _records(tmp_path / "one.json")
    assert len(single) == 6 + 3 + 4 + 1 + 2 and sum(1 for r in single if r["text"]) >= 8  # varied text
    single_pages = sorted(p.name for p in (tmp_path / "one").glob("*.xml"))
    assert single_pages == ["alto_c.xml", "page_a.xml", "page_b.xml"]
    capsys.readouterr()

    written_by: dict[str, list[int]] = {}
    for k in range(3):
        assert _recognize(model, inputs, "--shard", f"{k}/3", "--json", str(tmp_path / "out.json"),
                          "--output-dir", str(tmp_path / "sharded")) == 0
        for line in capsys.readouterr().err.splitlines():
            if line.startswith("written: ") and line.endswith(".xml"):
                written_by.setdefault(Path(line[9:]).name, []).append(k)
    # every page file written by exactly one shard, and its lines (all of them) recognised there
    assert sorted(written_by) == single_pages and all(len(v) == 1 for v in written_by.values())
    shards = [tmp_path / f"out.shard-{k}-of-3.json" for k in range(3)]
    assert all(p.is_file() for p in shards)
    sizes = [json.loads(p.read_text())["htrjand_shard"]["items"] for p in shards]
    assert sum(sizes) == len(single) and max(sizes) - min(sizes) <= 4  # balanced by lines, pages kept whole
    for name in single_pages:
        assert _texts(tmp_path / "sharded" / name) == _texts(tmp_path / "one" / name)

    assert main(["merge-results", str(tmp_path / "merged.json"), *map(str, reversed(shards))]) == 0
    assert "16 JSON records of 16 inputs from 3 shards" in capsys.readouterr().out
    _same(_records(tmp_path / "merged.json"), single)


def _tsv_rows(path: Path) -> list[tuple[str, str]]:
    """(image resolved against the TSV's folder, or a page line's file:line, text) per row."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        image, text = line.split("\t")[:2]
        rows.append((image if image.endswith(tuple(f".xml:{n}" for n in range(10))) else
                     str((path.parent / image).resolve()), text))
    return rows


def test_tsv_shards_merge_and_rebase_paths(model, inputs, tmp_path):
    assert _recognize(model, inputs, "--format", "tsv", "--output-dir", str(tmp_path / "one")) == 0
    for k in range(3):
        assert _recognize(model, inputs, "--format", "tsv", "--output-dir", str(tmp_path / "tsv"),
                          "--shard", f"{k}/3") == 0
    shards = sorted((tmp_path / "tsv").glob("results.shard-*-of-3.tsv"))
    assert len(shards) == 3
    # merged into another folder: relative image paths are rewritten for it
    merged = tmp_path / "elsewhere" / "deeper" / "merged.tsv"
    assert main(["merge-results", str(merged), *map(str, shards)]) == 0
    single = _tsv_rows(tmp_path / "one" / "results.tsv")
    assert len(single) == 16 and _tsv_rows(merged) == single
    assert all(Path(image).is_file() for image, _ in single if image.endswith(".png"))
    assert merged.read_text(encoding="utf-8").splitlines()[0] == \
        (tmp_path / "one" / "results.tsv").read_text(encoding="utf-8").splitlines()[0]


def test_missing_duplicate_and_foreign_shards_are_refused(model, inputs, tmp_path, capsys):
    for k in range(3):
        assert _recognize(model, inputs, "--shard", f"{k}/3", "--json", str(tmp_path / "r.json"),
                          "--format", "text", "--output-dir", str(tmp_path / "txt")) == 0
    shards = [str(tmp_path / f"r.shard-{k}-of-3.json") for k in range(3)]
    capsys.readouterr()
    assert main(["merge-results", str(tmp_path / "m.json"), shards[0], shards[2]]) == 2
    assert "missing shard 1/3" in capsys.readouterr().err
    assert main(["merge-results", str(tmp_path / "m.json"), shards[0], shards[1], shards[1], shards[2]]) == 2
    assert "given twice" in capsys.readouterr().err
    # a shard of another job (other inputs) is not mixed in
    assert _recognize(model, inputs[:2], "--shard", "1/3", "--json", str(tmp_path / "other.json")) == 0
    capsys.readouterr()
    assert main(["merge-results", str(tmp_path / "m.json"), shards[0], str(tmp_path / "other.shard-1-of-3.json"),
                 shards[2]]) == 2
    assert "not shards of the same job" in capsys.readouterr().err
    cut = tmp_path / "cut.json"
    data = json.loads(Path(shards[1]).read_text())
    data["results"] = data["results"][:-1]
    cut.write_text(json.dumps(data))
    assert main(["merge-results", str(tmp_path / "m.json"), shards[0], str(cut), shards[2]]) == 2
    assert "truncated" in capsys.readouterr().err
    plain = tmp_path / "plain.json"
    plain.write_text("[]")
    assert main(["merge-results", str(tmp_path / "m.json"), str(plain)]) == 2
    assert "plain.json: not a shard file" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_more_shards_than_files_gives_empty_shards(model, inputs, tmp_path, capsys):
    few = inputs[1:3]  # two page files: 7 lines
    for k in range(4):
        assert _recognize(model, few, "--shard", f"{k}/4", "--json", str(tmp_path / "r.json")) == 0
    sizes = [json.loads((tmp_path / f"r.shard-{k}-of-4.json").read_text())["htrjand_shard"]["items"] for k in range(4)]
    assert sorted(sizes) == [0, 0, 3, 4]
    assert main(["merge-results", str(tmp_path / "m.json"), *(str(tmp_path / f"r.shard-{k}-of-4.json")
                                                              for k in range(4))]) == 0
    assert len(_records(tmp_path / "m.json")) == 7


def test_shard_argument_and_environment():
    assert parse_shard("2/5") == Shard(2, 5)
    assert parse_shard("auto", {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "RANK": "1", "WORLD_SIZE": "2"}) == Shard(3, 8)
    assert parse_shard("auto", {"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2)
    assert parse_shard("auto", {}) == Shard(0, 1)
    for bad in ("3/3", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="from SLURM_PROCID/SLURM_NTASKS"):
        parse_shard("auto", {"SLURM_PROCID": "4", "SLURM_NTASKS": "4"})
    assert shard_path("out/res.json", Shard(1, 4)) == Path("out/res.shard-1-of-4.json")
    assert shard_path("out/res.shard-1-of-4.json", Shard(1, 4)) == Path("out/res.shard-1-of-4.json")


def test_assignment_keeps_files_whole_and_is_balanced(inputs):
    from htrjand.cli import _expand_images

    items = _expand_images(inputs)
    owner = assign(items, 3)
    by_file: dict[str, set[int]] = {}
    for item, k in zip(items, owner):
        source = getattr(item, "source", str(item)).rsplit(":", 1)[0] if hasattr(item, "crop") else str(item)
        by_file.setdefault(source, set()).add(k)
    assert all(len(v) == 1 for v in by_file.values())  # a page's lines in one shard
    loads = [owner.count(k) for k in range(3)]
    assert sorted(loads) == [5, 5, 6]
    assert assign(items, 3) == owner  # deterministic
