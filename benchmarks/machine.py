"""What the benchmarks record about the machine they ran on, and where they write their results."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def write_results(out: Path, name: str, result: dict, markdown: str) -> None:
    """OUT/NAME.json (the figures) and OUT/NAME.md (the table a person reads)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown.rstrip("\n") + "\n", encoding="utf-8")


def speed(recognizers: dict, samples: list, batch_size: int, repeats: int) -> dict[str, float]:
    """Lines/s of each model: the best of `repeats` passes, models taking turns in each round."""
    for r in recognizers.values():  # warm-up
        r.recognize(samples[:batch_size], batch_size=batch_size)
    best = dict.fromkeys(recognizers, 0.0)
    for _ in range(max(1, repeats)):
        for name, r in recognizers.items():
            started = time.perf_counter()
            r.recognize(samples, batch_size=batch_size)
            best[name] = max(best[name], len(samples) / (time.perf_counter() - started))
    return best
