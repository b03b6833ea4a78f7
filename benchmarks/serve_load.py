"""Load test of `htrjand serve`: latency, throughput, status codes and server memory under concurrent clients.

Starts `htrjand serve MODEL` (uvicorn) on a free loopback port in a child process, then C client
threads fire N requests at `/api/recognize`: most upload 1-4 real line images (../shared/data test
lines when present, else rendered ones), a share are malformed or oversized and must be refused with
their 4xx (never a 5xx, never a dropped connection). The server's resident memory is polled from
/proc/PID/status all along. Writes benchmarks/results/serve_load.{json,md} (or --out).

    python benchmarks/serve_load.py --model runs/x/best.ckpt [--requests 2000] [--clients 16]
    python benchmarks/serve_load.py --tiny --requests 200 --clients 8    # a tiny untrained model

Server settings: --max-upload-mb 2, --max-files 8, --max-megapixels 4 (so that refused uploads stay small).
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from machine import write_results  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LIMITS = {"max_upload_mb": 2.0, "max_files": 8, "max_megapixels": 4.0}

# malformed kinds: (share of all requests, expected status)
BAD = {"not_an_image": (0.03, 422), "truncated_image": (0.02, 422), "empty_file": (0.01, 422),
       "too_many_files": (0.01, 413), "oversized_body": (0.01, 413), "too_many_pixels": (0.01, 413),
       "bad_decoder": (0.005, 422), "no_files": (0.005, 422)}


def line_images(count: int, seed: int = 0, source: str = "auto") -> tuple[list[bytes], str]:
    """Encoded line images: real test lines from ../shared/data (`shared`, or `auto` when present),
    else rendered ones."""
    rng = random.Random(seed)
    manifests = [SHARED / name / "test.tsv" for name in ("copiste", "hooker")]
    if source != "rendered" and all(m.is_file() for m in manifests):
        rows = []
        for m in manifests:
            lines = m.read_text(encoding="utf-8").splitlines()
            rows += [m.parent / line.split("\t")[0] for line in lines if line.strip()]
        rng.shuffle(rows)
        return [p.read_bytes() for p in rows[:count]], f"{min(count, len(rows))} real test lines of ../shared/data"
    from htrjand.demo import random_text, render_line

    out = []
    for _ in range(count):
        buf = io.BytesIO()
        render_line(random_text(rng), rng).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out, f"{count} rendered lines"


def tiny_model(folder: Path) -> Path:
    """A tiny Student after one optimiser step on 64 rendered lines (what the CI test serves)."""
    from htrjand.config import load_config
    from htrjand.demo import make_dataset
    from htrjand.training import train

    data = make_dataset(folder / "data", {"train": 32, "val": 8}, seed=1)
    cfg = load_config(preset_name="student", overrides={
        "data": {"train": [str(data["train"])], "val": [str(data["val"])], "batch_size": 16, "workers": 0,
                 "augment": 0},
        "train": {"output": str(folder / "run"), "warmup_steps": 1, "progress": False, "epochs": 1, "max_steps": 1},
        "model": {"channels": [8, 12, 16, 16, 16, 16], "d_model": 32, "heads": 2, "blocks": 1, "dropout": 0.0,
                  "cnn_dropout": 0.0}})
    train(cfg)
    return folder / "run" / "last.ckpt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


class Server:
    """`htrjand serve` in a child process; memory polled every 50 ms."""

    def __init__(self, model: Path, threads: int | None, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **(env or {})}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        cmd = [sys.executable, "-m", "htrjand", "serve", str(model), "--port", str(self.port),
               "--max-upload-mb", str(LIMITS["max_upload_mb"]), "--max-files", str(LIMITS["max_files"]),
               "--max-megapixels", str(LIMITS["max_megapixels"])]
        self.process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.samples: list[tuple[float, int]] = []  # (time, VmRSS kB)
        self._stop = threading.Event()

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"htrjand serve exited ({self.process.returncode}): {self.process.stdout.read()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    threading.Thread(target=self._poll, daemon=True).start()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"htrjand serve did not answer within {timeout:.0f} s")

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), rss_kb(self.process.pid)["VmRSS"]))
            except (OSError, KeyError):
                return
            self._stop.wait(0.05)

    def rss_now(self) -> int:
        return rss_kb(self.process.pid)["VmRSS"]

    def stop(self) -> dict[str, int]:
        self._stop.set()
        memory = rss_kb(self.process.pid)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return memory


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), 255).save(buf, format="PNG")
    return buf.getvalue()


def plan_requests(n: int, images: list[bytes], seed: int) -> list[tuple[str, list, dict]]:
    """(kind, multipart files, form data) per request; the malformed kinds mixed in at their shares."""
    rng = random.Random(seed)
    kinds = [k for k, (share, _) in BAD.items() for _ in range(max(1, round(share * n)))]
    kinds += ["lines"] * (n - len(kinds))
    rng.shuffle(kinds)
    oversized = rng.randbytes(int(LIMITS["max_upload_mb"] * 2**20) + 50_000)
    bomb = _png(2500, 2000)  # 5 Mpx, a few kB
    plan = []
    for kind in kinds:
        picks = [rng.choice(images) for _ in range(rng.randint(1, 4))]
        files = [("files", (f"line{i}.png", data, "image/png")) for i, data in enumerate(picks)]
        form: dict = {}
        if kind == "not_an_image":
            files[-1] = ("files", ("notes.png", b"this is not an image " * 20, "image/png"))
        elif kind == "truncated_image":
            files[-1] = ("files", ("cut.png", picks[-1][: len(picks[-1]) // 3], "image/png"))
        elif kind == "empty_file":
            files[-1] = ("files", ("empty.png", b"", "image/png"))
        elif kind == "too_many_files":
            files = [("files", (f"line{i}.png", images[i % len(images)], "image/png"))
                     for i in range(LIMITS["max_files"] + 1)]
        elif kind == "oversized_body":
            files = [("files", ("huge.png", oversized, "image/png"))]
        elif kind == "too_many_pixels":
            files[-1] = ("files", ("bomb.png", bomb, "image/png"))
        elif kind == "bad_decoder":
            form = {"decoder": "telepathy"}
        elif kind == "no_files":
            files = []
            form = {"decoder": "greedy"}
        plan.append((kind, files, form))
    return plan


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def run(model: Path, requests: int = 2000, clients: int = 16, seed: int = 0, threads: int | None = None,
        timeout: float = 120.0, images: str = "auto", server_env: dict[str, str] | None = None) -> dict:
    """The load test; returns the report (see `markdown` for its fields). `server_env`: extra
    environment of the server, e.g. {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0", "MALLOC_ARENA_MAX": "2"}."""
    import httpx

    images, source = line_images(200, seed, images)
    plan = plan_requests(requests, images, seed)
    server = Server(model, threads, server_env)
    try:
        started_server = time.monotonic()
        server.wait_ready()
        startup = time.monotonic() - started_server
        rss_idle = server.rss_now()
        records: list[dict] = [None] * len(plan)  # type: ignore[list-item]
        counter = iter(range(len(plan)))
        lock = threading.Lock()
        done = [0]
        deciles: list[int] = []  # server RSS (kB) after each tenth of the requests

        def client() -> None:
            with httpx.Client(base_url=server.url, timeout=timeout) as http:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    kind, files, form = plan[i]
                    t0 = time.perf_counter()
                    try:
                        r = http.post("/api/recognize", files=files or None, data=form or None)
                        status, body = r.status_code, r.content
                        ok = _valid(kind, status, body, len(files))
                    except httpx.TimeoutException:
                        status, ok = "timeout", False
                    except httpx.HTTPError as err:
                        status, ok = f"connection error ({type(err).__name__})", False
                    records[i] = {"kind": kind, "status": status, "seconds": time.perf_counter() - t0, "ok": ok,
                                  "lines": len(files) if kind == "lines" else 0}
                    with lock:
                        done[0] += 1
                        if done[0] * 10 >= (len(deciles) + 1) * len(plan):
                            deciles.append(server.rss_now())

        t0 = time.perf_counter()
        workers = [threading.Thread(target=client) for _ in range(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - t0
        rss_end = server.rss_now()
    finally:
        memory = server.stop()
    result = report(records, wall, clients, model, source, startup, rss_idle, deciles, rss_end,
                    memory.get("VmHWM", 0), server.samples, threads)
    result["server_env"] = dict(server_env or {})
    return result


def _valid(kind: str, status: int, body: bytes, files: int) -> bool:
    """A good request: 200 and one result per file; a malformed one: its 4xx with a JSON error."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    if kind == "lines":
        return status == 200 and isinstance(data, list) and len(data) == files and all("text" in r for r in data)
    return status == BAD[kind][1] and isinstance(data, dict) and bool(data.get("error"))


def report(records: list[dict], wall: float, clients: int, model: Path, source: str, startup: float,
           rss_idle: int, deciles: list[int], rss_end: int, peak: int, samples: list, threads: int | None) -> dict:
    good = [r for r in records if r["kind"] == "lines"]
    bad = [r for r in records if r["kind"] != "lines"]
    lat = [r["seconds"] for r in good if r["status"] == 200]
    all_lat = [r["seconds"] for r in records if isinstance(r["status"], int)]
    by_status = Counter(str(r["status"]) for r in records)
    by_kind = {k: dict(Counter(str(r["status"]) for r in bad if r["kind"] == k)) for k in BAD}
    deciles = deciles or [rss_end]
    rss_10, rss_half = deciles[0], deciles[len(deciles) // 2 - 1] if len(deciles) > 1 else deciles[0]
    growth, late = rss_end - rss_10, rss_end - rss_half
    ms = lambda v: round(1000 * v, 1) if v is not None else None  # noqa: E731
    return {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": str(model), "images": source, "clients": clients, "requests": len(records),
        "server_threads": threads or "default", "limits": LIMITS, "startup_seconds": round(startup, 1),
        "wall_seconds": round(wall, 2), "requests_per_second": round(len(records) / wall, 1),
        "lines_per_second": round(sum(r["lines"] for r in good if r["status"] == 200) / wall, 1),
        "latency_ms": {"p50": ms(percentile(lat, 0.5)), "p95": ms(percentile(lat, 0.95)),
                       "p99": ms(percentile(lat, 0.99)), "max": ms(max(lat) if lat else None)},
        "latency_ms_all": {"p50": ms(percentile(all_lat, 0.5)), "p95": ms(percentile(all_lat, 0.95)),
                           "p99": ms(percentile(all_lat, 0.99))},
        "status_counts": dict(sorted(by_status.items())),
        "server_errors": sum(1 for r in records if isinstance(r["status"], int) and r["status"] >= 500),
        "transport_errors": sum(1 for r in records if not isinstance(r["status"], int)),
        "good_requests": len(good), "good_ok": sum(r["ok"] for r in good),
        "malformed_requests": len(bad), "malformed_refused_as_expected": sum(r["ok"] for r in bad),
        "malformed_by_kind": by_kind,
        "rss_mb": {"idle": round(rss_idle / 1024, 1), "after_10_percent": round(rss_10 / 1024, 1),
                   "end": round(rss_end / 1024, 1), "peak": round(peak / 1024, 1),
                   "growth_after_10_percent": round(growth / 1024, 1),
                   "growth_second_half": round(late / 1024, 1),
                   "by_tenth": [round(v / 1024, 1) for v in deciles],
                   "polled_max": round(max((s for _, s in samples), default=0) / 1024, 1)},
        # warm-up (oneDNN kernels and allocator pools for new line widths) grows RSS early; a leak keeps growing
        "memory_bounded": late <= max(0.05 * rss_half, 24 * 1024),
    }


def markdown(r: dict) -> str:
    lat, mem = r["latency_ms"], r["rss_mb"]
    rows = [f"# `htrjand serve` under load ({r['date']})", "",
            f"{r['requests']} POST /api/recognize requests from {r['clients']} concurrent clients against "
            f"`htrjand serve {Path(r['model']).name}` on {r['machine']} (server threads: {r['server_threads']}"
            f"{''.join(f', {k}={v}' for k, v in r.get('server_env', {}).items())}; "
            f"limits {r['limits']}); images: {r['images']}. Good requests upload 1-4 line images; "
            f"{r['malformed_requests']} are malformed or oversized.", "",
            "| figure | value |", "|---|---|",
            f"| wall time | {r['wall_seconds']} s (server start {r['startup_seconds']} s) |",
            f"| throughput | {r['requests_per_second']} requests/s, {r['lines_per_second']} lines/s |",
            f"| latency of good requests p50 / p95 / p99 / max | {lat['p50']} / {lat['p95']} / {lat['p99']} / "
            f"{lat['max']} ms |",
            f"| status counts | {', '.join(f'{k}: {v}' for k, v in r['status_counts'].items())} |",
            f"| 5xx / transport errors | {r['server_errors']} / {r['transport_errors']} |",
            f"| good requests answered correctly | {r['good_ok']} of {r['good_requests']} |",
            f"| malformed refused with the expected 4xx | {r['malformed_refused_as_expected']} of "
            f"{r['malformed_requests']} |",
            f"| server RSS idle / after 10% / end / peak (VmHWM) | {mem['idle']} / {mem['after_10_percent']} / "
            f"{mem['end']} / {mem['peak']} MB |",
            f"| RSS growth after the first 10% / over the second half | {mem['growth_after_10_percent']} / "
            f"{mem['growth_second_half']} MB ({'bounded' if r['memory_bounded'] else 'GROWING'}) |",
            f"| RSS after each tenth of the requests | {' '.join(map(str, mem['by_tenth']))} MB |", "",
            "Malformed requests by kind (status: count): "
            + "; ".join(f"{k} {v}" for k, v in r["malformed_by_kind"].items()), ""]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="checkpoint or .onnx to serve")
    p.add_argument("--tiny", action="store_true", help="serve a tiny model trained for one step (no --model)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server (default: inherited)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment of the server (repeatable), e.g. ONEDNN_PRIMITIVE_CACHE_CAPACITY=0")
    p.add_argument("--images", choices=("auto", "shared", "rendered"), default="auto",
                   help="line images: ../shared/data test lines (auto: when present) or rendered ones")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for serve_load.{json,md}")
    args = p.parse_args(argv)
    if not args.model and not args.tiny:
        p.error("give --model CKPT or --tiny")
    if args.tiny:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="serve_load_"))
        args.model = tiny_model(folder)
    server_env = dict(item.split("=", 1) for item in args.server_env)
    result = run(args.model, args.requests, args.clients, args.seed, args.threads, images=args.images,
                 server_env=server_env)
    write_results(args.out, "serve_load", result, markdown(result))
    print(markdown(result))
    return 0 if result["server_errors"] == 0 and result["transport_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
