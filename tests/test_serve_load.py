"""A short, bounded run of benchmarks/serve_load.py: `htrjand serve` in a child process under 8
concurrent clients answers every good request, refuses every malformed one with its 4xx, never 5xx."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="htrjand serve needs the serve extra: pip install 'htrjand[serve]'")
pytest.importorskip("httpx")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"


@pytest.fixture(scope="module")
def serve_load():
    sys.path.insert(0, str(SCRIPT.parent))  # its `machine` module, as when run as a script
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_mixes_every_malformed_kind(serve_load):
    images, _ = serve_load.line_images(4, source="rendered")
    plan = serve_load.plan_requests(200, images, seed=1)
    kinds = [k for k, _, _ in plan]
    assert len(plan) == 200 and set(serve_load.BAD) <= set(kinds)
    assert 150 < kinds.count("lines") < 200
    assert all(1 <= len(files) <= 4 for k, files, _ in plan if k == "lines")
    big = next(files for k, files, _ in plan if k == "oversized_body")
    assert len(big[0][1][1]) > serve_load.LIMITS["max_upload_mb"] * 2**20


def test_service_under_load_stays_correct_and_bounded(serve_load, rendered, tmp_path):
    from test_serve import tiny_checkpoint

    model = tiny_checkpoint(rendered, tmp_path / "model")
    # oneDNN's kernel cache (one entry per new input shape, up to 1024) and glibc's per-thread arenas
    # grow RSS for a while under varied widths; without them RSS is flat, so that a leak shows
    quiet = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0", "MALLOC_ARENA_MAX": "2"}
    report = serve_load.run(model, requests=200, clients=8, threads=1, images="rendered", timeout=60,
                            server_env=quiet)
    assert report["requests"] == 200
    assert report["server_errors"] == 0 and report["transport_errors"] == 0, report["status_counts"]
    assert report["good_ok"] == report["good_requests"] > 150  # 200 with one result per image
    assert report["malformed_refused_as_expected"] == report["malformed_requests"] >= 8, report["malformed_by_kind"]
    assert set(report["status_counts"]) == {"200", "413", "422"}
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["requests_per_second"] > 0 and report["lines_per_second"] > 0
    mem = report["rss_mb"]
    assert len(mem["by_tenth"]) == 10 and 0 < mem["idle"] <= mem["peak"]
    assert mem["growth_after_10_percent"] < 64 and report["memory_bounded"], mem  # measured: 20-26 MB, 5-11 MB
    md = serve_load.markdown(report)
    assert "p50 / p95 / p99" in md and "RSS" in md
    json.dumps(report)  # serialisable as written to benchmarks/results
