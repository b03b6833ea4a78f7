"""Dataset tools behind `htrjand dataset stats|validate|extract` and `htrjand charset`.

They read any dataset spec (docs/datasets.md) the way training does, so what they report is what a
training run would see.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .charmap import CharMapping
from .charset import Charset, ctc_frames_needed
from .datasets import Problems, Sample, read_dataset, spec_of
from .images import ImageError, line_size, load_line, normalize_height


def read_all(values: Sequence[str], problems: Problems, mapping: CharMapping | None = None,
             keep_empty: bool = False) -> dict[str, list[Sample]]:
    """Samples per dataset spec (as given), texts standardised with `mapping` when one is given."""
    out: dict[str, list[Sample]] = {}
    for value in values:
        spec = spec_of(value)
        spec.keep_empty = spec.keep_empty or keep_empty
        samples = read_dataset(spec, problems)
        if mapping is not None:
            for s in samples:
                s.text = mapping.apply(s.text, s.dataset)
        out[str(value)] = samples
    return out


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    q = np.percentile(values, [0, 10, 50, 90, 100])
    return {"min": float(q[0]), "p10": float(q[1]), "median": float(q[2]), "p90": float(q[3]), "max": float(q[4])}


def stats(samples: list[Sample], height: int = 64, stride: int = 8) -> dict:
    """Lines, groups, characters, original and normalised size distributions, CTC feasibility."""
    sizes, widths, frames_per_char, infeasible, unreadable = [], [], [], [], 0
    for s in samples:
        try:
            w, h = line_size(s.image, s.crop)
        except Exception:  # noqa: BLE001 - unreadable headers are `validate`'s business; count them
            unreadable += 1
            continue
        if w < 2 or h < 2:
            unreadable += 1
            continue
        sizes.append((w, h))
        norm = max(8, round(w * height / h))
        widths.append(norm)
        frames = math.ceil(norm / stride)
        if s.text:
            frames_per_char.append(frames / len(s.text))
            if ctc_frames_needed(s.text) > frames:
                infeasible.append(s.source)
    chars = Counter(ch for s in samples for ch in s.text)
    return {
        "lines": len(samples), "groups": len({s.group for s in samples}),
        "datasets": dict(Counter(s.dataset for s in samples)),
        "characters": sum(chars.values()), "charset_size": len(chars),
        "empty_lines": sum(not s.text for s in samples), "unreadable_headers": unreadable,
        "original_width": _quantiles([w for w, _ in sizes]), "original_height": _quantiles([h for _, h in sizes]),
        f"width_at_height_{height}": _quantiles(widths),
        "frames_per_char": _quantiles(frames_per_char),
        "ctc_infeasible": len(infeasible), "ctc_infeasible_examples": infeasible[:10],
        "height": height, "stride": stride,
    }


@dataclass
class Validation:
    """Every problem of a dataset, each with the record (file:line) it came from."""

    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, where, message)
    lines: int = 0

    def add(self, kind: str, where: str, message: str) -> None:
        self.problems.append((kind, where, message))

    def counts(self) -> Counter:
        return Counter(kind for kind, _, _ in self.problems)


def _decode_check(sample: Sample) -> str | None:
    try:
        gray = load_line(sample.image, sample.crop, sample.source)
    except ImageError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - PIL/cv2 raise many types for broken files
        return f"cannot decode image: {err}"
    if gray.shape[0] < 2 or gray.shape[1] < 2:
        return f"image is only {gray.shape[1]}x{gray.shape[0]} pixels"
    return None


def validate(samples: list[Sample], read_problems: Problems, charset: Charset | None = None,
             height: int = 64, stride: int = 8, workers: int = 2) -> Validation:
    """Decode every image and check every text: reader problems, unreadable images, empty texts,
    characters outside `charset` (when given) and labels too long for CTC at `stride`."""
    report = Validation(list(read_problems.entries) + list(read_problems.warnings), len(samples))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        errors = list(pool.map(_decode_check, samples))
    for s, err in zip(samples, errors):
        if err:
            report.add("unreadable image", s.source, err)
            continue
        if not s.text:
            report.add("empty transcription", s.source, "line has no transcription")
            continue
        if charset is not None:
            missing = charset.unknown(s.text)
            if missing:
                report.add("unknown characters", s.source, f"characters the model cannot produce: {''.join(sorted(missing))!r}")
        w, h = line_size(s.image, s.crop)
        frames = math.ceil(max(8, round(w * height / h)) / stride)
        needed = ctc_frames_needed(s.text)
        if needed > frames:
            report.add("label too long", s.source,
                       f"label needs {needed} CTC frames but the image gives {frames} (CTC-infeasible)")
    return report


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "line"


def extract(samples: list[Sample], out: Path, height: int = 0, image_format: str = "png",
            problems: Problems | None = None) -> Path:
    """Write each sample's line image (cut and masked from its page) to OUT/lines/ and a TSV manifest
    OUT/lines.tsv (`lines/<id>.<ext><TAB>text`); `height` > 0 also normalises the height."""
    problems = problems if problems is not None else Problems()
    (out / "lines").mkdir(parents=True, exist_ok=True)
    rows, used = [], set()
    for i, s in enumerate(samples):
        stem = Path(s.source.split(":")[0].split("#")[0]).stem if s.source else f"line{i}"
        name = _safe(f"{stem}_{s.line_id}" if s.line_id else f"{stem}_{i:05d}")
        while name in used:
            name += "_"
        used.add(name)
        try:
            gray = load_line(s.image, s.crop, s.source)
            if height:
                gray = normalize_height(gray, height)
        except ImageError as err:
            problems.add("unreadable image", s.source, str(err))
            continue
        rel = f"lines/{name}.{image_format}"
        Image.fromarray(gray).save(out / rel, **({"quality": 90} if image_format in ("jpg", "jpeg") else {}))
        rows.append(f"{rel}\t{s.text}")
    manifest = out / "lines.tsv"
    tmp = out / ".lines.tsv.tmp"
    tmp.write_text("\n".join(rows) + ("\n" if rows else ""), encoding="utf-8")
    tmp.replace(manifest)
    return manifest


def charset_report(datasets: dict[str, list[Sample]], mapping: CharMapping, charset: Charset | None = None) -> dict:
    """Merged charset with counts per dataset (after `mapping`), the replacements the mapping makes,
    and the characters `charset` (a model's) cannot produce."""
    counts: dict[str, Counter] = defaultdict(Counter)
    changes: Counter = Counter()
    for samples in datasets.values():
        for s in samples:
            text, found = mapping.apply_with_changes(s.text, s.dataset)
            changes.update(found)
            counts[s.dataset].update(text)
    total = Counter()
    for c in counts.values():
        total.update(c)
    rows = [{"char": ch, "codepoint": f"U+{ord(ch):04X}", "name": unicodedata.name(ch, "?"),
             "total": n, **{f"count:{d}": counts[d][ch] for d in sorted(counts)}}
            for ch, n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))]
    report = {"datasets": sorted(counts), "charset": "".join(r["char"] for r in rows), "characters": rows,
              "mapping_changes": [{"from": a, "to": b, "count": n} for (a, b), n in changes.most_common()]}
    if charset is not None:
        report["model_cannot_produce"] = {ch: n for ch, n in total.items() if ch not in charset}
    return report


def format_charset_report(report: dict) -> str:
    datasets = report["datasets"]
    lines = ["char  code     " + "  ".join(f"{d:>10}" for d in datasets) + "       total  name"]
    for r in report["characters"]:
        shown = "␣" if r["char"] == " " else r["char"]
        lines.append(f"{shown:<5} {r['codepoint']:<8} " + "  ".join(f"{r[f'count:{d}']:>10}" for d in datasets)
                     + f"  {r['total']:>10}  {r['name']}")
    lines.append(f"\n{len(report['characters'])} characters (␣ = space): {report['charset'].replace(' ', '␣')}")
    if report["mapping_changes"]:
        lines.append("\nthe character mapping changed:")
        lines += [f"  {c['from']!r} -> {c['to']!r}  x{c['count']}" for c in report["mapping_changes"]]
    if "model_cannot_produce" in report:
        missing = report["model_cannot_produce"]
        lines.append("\nthe model cannot produce: " + (", ".join(f"{c!r} x{n}" for c, n in missing.items()) or "none"))
    return "\n".join(lines)


def format_stats(name: str, s: dict) -> str:
    def q(d: dict) -> str:
        return " / ".join(f"{d[k]:.0f}" for k in ("min", "p10", "median", "p90", "max")) if d else "-"

    fpc, widths = s["frames_per_char"], s[f"width_at_height_{s['height']}"]
    return "\n".join([
        f"{name}",
        f"  lines {s['lines']}, groups (writers/pages) {s['groups']}, characters {s['characters']} "
        f"({s['charset_size']} distinct), empty {s['empty_lines']}, unreadable {s['unreadable_headers']}",
        f"  original width  min/p10/median/p90/max {q(s['original_width'])}",
        f"  original height min/p10/median/p90/max {q(s['original_height'])}",
        f"  width at height {s['height']}  {q(widths)}",
        f"  CTC frames per character (stride {s['stride']}): "
        + (f"median {fpc['median']:.2f}, p10 {fpc['p10']:.2f}" if fpc else "-"),
        f"  CTC-infeasible labels: {s['ctc_infeasible']}",
    ])
