"""Where a model's character errors come from, read from an `htrjand evaluate --json` report.

Per dataset: substitutions, deletions and insertions as % of reference characters, overall and by
quartile of CTC frames per character (line width at the model's input height / width stride /
reference length: is the frame rate too low for dense writing?), and the share of errors made on
lines the model barely reads (output under `--lost` of the reference length: clipped or faint
lines), and the pages (the report's page groups) that hold the most errors: a few damaged pages can
dominate a split. For the decision between width strides 8 and 4 (docs/decisions.md).

    htrjand evaluate MODEL copiste/val.tsv hooker/val.tsv --json val.json
    python benchmarks/error_analysis.py val.json [--height 64 --stride 8] [--lost 0.4] [--pages 5] [--root .] \\
        [--name error-analysis] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from htrjand.charset import normalize_text
from htrjand.images import image_width
from htrjand.metrics import ErrorTotals

from machine import write_results  # benchmarks/machine.py

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("sub", "del", "ins")


def rates(rows: list[dict]) -> dict:
    chars = max(sum(r["chars"] for r in rows), 1)
    return {"lines": len(rows), "chars": chars,
            **{f"{k} %": round(100 * sum(r[k] for r in rows) / chars, 2) for k in KINDS},
            "CER %": round(100 * sum(r["errors"] for r in rows) / chars, 2)}


def worst_pages(rows: list[dict], count: int) -> list[dict]:
    """The `count` page groups with the most character errors, with their share of the dataset's errors."""
    pages: dict[str, list[dict]] = {}
    for r in rows:
        if r["page"]:
            pages.setdefault(r["page"], []).append(r)
    errors = max(sum(r["errors"] for r in rows), 1)
    ranked = sorted(pages.items(), key=lambda item: (-sum(r["errors"] for r in item[1]), item[0]))[:count]
    return [{"page": page, "lines": len(group), "CER %": rates(group)["CER %"],
             "lost lines": sum(r["lost"] for r in group),
             "share of errors %": round(100 * sum(r["errors"] for r in group) / errors, 1)} for page, group in ranked]


def analyse(report: dict, height: int, stride: int, lost: float, root: Path = Path("."),
            pages: int = 5) -> tuple[dict, int]:
    """The analysis per dataset, and how many lines were left out for want of their image file."""
    datasets: dict[str, list[dict]] = {}
    missing = 0
    for line in report["lines"]:
        reference, image = normalize_text(line["reference"]), root / line["image"]
        if not reference:
            continue  # no frames-per-character figure for an empty reference
        if not image.is_file():  # a page crop, or a path relative to another directory
            missing += 1
            continue
        t = ErrorTotals()
        t.add(reference, line["hypothesis"])
        datasets.setdefault(line["dataset"], []).append({
            "sub": t.substitutions, "del": t.deletions, "ins": t.insertions, "errors": t.char_errors, "chars": t.chars,
            "frames_per_char": image_width(image, height) / stride / len(reference),
            "lost": len(normalize_text(line["hypothesis"])) < lost * len(reference), "page": line.get("group") or ""})
    result = {}
    for name, rows in sorted(datasets.items()):
        fpc = np.array([r["frames_per_char"] for r in rows])
        edges = np.quantile(fpc, [0, 0.25, 0.5, 0.75, 1])
        quartiles = []
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            chosen = [r for r, f in zip(rows, fpc) if lo <= f <= hi and (i == 0 or f > lo)]
            quartiles.append({"frames per char": f"{lo:.2f}-{hi:.2f}", **rates(chosen)})
        lost_rows = [r for r in rows if r["lost"]]
        errors = max(sum(r["errors"] for r in rows), 1)
        result[name] = {"all": rates(rows), "quartiles": quartiles,
                        "lost_lines": len(lost_rows),
                        "lost_share_of_errors %": round(100 * sum(r["errors"] for r in lost_rows) / errors, 1),
                        "CER % without lost lines": rates([r for r in rows if not r["lost"]])["CER %"],
                        "worst_pages": worst_pages(rows, pages)}
    return result, missing


def markdown(result: dict, source: str, height: int, stride: int, lost: float) -> str:
    lines = [f"# Error analysis of `{source}`", "",
             f"CTC frames per character at height {height}, width stride {stride}; a line is *lost* when the "
             f"output is under {lost:.0%} of the reference length.", "",
             "| dataset | frames per char | lines | CER % | sub % | del % | ins % |", "|---|---|---|---|---|---|---|"]
    for name, r in result.items():
        for label, row in [("all", r["all"]), *[(q["frames per char"], q) for q in r["quartiles"]]]:
            lines.append(f"| {name} | {label} | {row['lines']} | {row['CER %']} | {row['sub %']} | {row['del %']} "
                         f"| {row['ins %']} |")
    lines += ["", "| dataset | lost lines | their share of the errors % | CER % without them |", "|---|---|---|---|"]
    lines += [f"| {n} | {r['lost_lines']} | {r['lost_share_of_errors %']} | {r['CER % without lost lines']} |"
              for n, r in result.items()]
    worst = [(n, p) for n, r in result.items() for p in r["worst_pages"]]
    if worst:
        lines += ["", "| dataset | page (most errors first) | lines | CER % | lost lines | share of the dataset's errors % |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {n} | {p['page']} | {p['lines']} | {p['CER %']} | {p['lost lines']} | {p['share of errors %']} |"
                  for n, p in worst]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="JSON written by `htrjand evaluate --json`")
    parser.add_argument("--height", type=int, default=64, help="the model's input height")
    parser.add_argument("--stride", type=int, default=8, help="the model's width stride (pixels per CTC frame)")
    parser.add_argument("--lost", type=float, default=0.4, help="output/reference length ratio under which a line is lost")
    parser.add_argument("--pages", type=int, default=5, help="how many of each dataset's worst pages to list")
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="directory the report's relative image paths start from (where evaluate ran)")
    parser.add_argument("--name", default="error-analysis")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
        report["lines"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        parser.error(f"{args.report}: not an `htrjand evaluate --json` report ({e})")
    result, missing = analyse(report, args.height, args.stride, args.lost, args.root, args.pages)
    if not result:
        parser.error(f"{args.report}: none of its {len(report['lines'])} lines has an image file under "
                     f"{args.root.resolve()} (give --root, the directory `htrjand evaluate` ran in)")
    if missing:
        print(f"warning: {missing} lines left out, their image files are not under {args.root.resolve()}",
              file=sys.stderr)
    command = "python benchmarks/error_analysis.py " + " ".join(sys.argv[1:])
    text = markdown(result, args.report.name, args.height, args.stride, args.lost) + (
        f"\n\nModel: `{Path(report.get('model', {}).get('path', '')).name}` ({report.get('decoder', '')}) on "
        f"{', '.join(sorted(result))}. Command: `{command}`")
    write_results(args.out, args.name, {"report": str(args.report), "model": report.get("model"),
                                        "height": args.height, "stride": args.stride, "lost": args.lost,
                                        "datasets": result, "command": command}, text)
    print(text)


if __name__ == "__main__":
    main()
