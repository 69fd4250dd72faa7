"""The search service under load: search latency at 1, 4 and 16 concurrent clients on a 10k gallery, and enrolment.

    .venv/bin/python benchmarks/bench_serve.py             # 10k gallery, ~2-4 min on 2 busy cores
    .venv/bin/python benchmarks/bench_serve.py --quick     # 2k gallery, fewer requests

Model: the demo checkpoint (demo/run/last.pt: resnet18 SPANet, 96×48 input, 3072-d "parts" features) when
`make demo` has run, else a resnet18 SPANet of the same shape with random weights (timing does not depend on the
weights). Gallery: the demo's test images (or random pictures) enrolled with `spanet gallery build`'s code
(measured: enrolment throughput), then filled up to --gallery-size entries with perturbed copies of their feature
vectors (an exact flat search costs the same for any vectors; embedding 10k images would only slow the benchmark).

Load: a `spanet serve` subprocess on 127.0.0.1 and a bounded asyncio client (httpx) sending POST /search with real
query images, C requests in flight at a time; each level stops after --requests requests or --seconds seconds.
Latency is measured per request on the client, embedding included. Enrolment over HTTP: POST /gallery with 1 and
with 16 images per request. Results: benchmarks/results/serve.json and serve.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests"))  # start_server / make_checkpoint helpers


def demo_or_random_model(work: Path, checkpoint: Path | None) -> tuple[Path, str]:
    demo = REPO / "demo" / "run" / "last.pt"
    if checkpoint is None and demo.is_file():
        checkpoint = demo
    if checkpoint is not None:
        return checkpoint, "/".join(checkpoint.resolve().parts[-3:])  # e.g. demo/run/last.pt
    import torch

    from spanet.checkpoint import save_checkpoint
    from spanet.model import SPANet

    args = {"num_classes": 100, "backbone": "resnet18", "pretrained": None}
    model = SPANet(**args).eval()
    path = work / "random_resnet18.pt"
    save_checkpoint(path, {"model": model.state_dict(), "model_args": args, "input_size": [96, 48], "config": {}})
    del torch
    return path, "resnet18 SPANet 96x48, random weights (no demo checkpoint)"


def source_images(work: Path, folder: Path | None, count: int) -> list[Path]:
    from spanet.data.images import collect_images

    folder = folder or REPO / "demo" / "data" / "bounding_box_test"
    if folder.is_dir():
        return collect_images([folder])[:count]
    from builders import make_images

    return make_images(work / "images", count=count, size=(48, 96))


def build_gallery(gallery_dir: Path, checkpoint: Path, images: list[Path], size: int) -> dict:
    from spanet.deploy.enrol import enrol_files
    from spanet.deploy.gallery import Gallery, NewEntry
    from spanet.features import FeatureExtractor

    extractor = FeatureExtractor(checkpoint, device="cpu", batch_size=128)
    gallery = Gallery.open(gallery_dir, model_info=extractor.info, create=True)
    start = time.perf_counter()
    report = enrol_files(gallery, extractor, images, batch_size=128)
    build_seconds = time.perf_counter() - start
    real = gallery.store.features(gallery.store.ids())
    rng = np.random.default_rng(0)
    filler = images[0].read_bytes()
    for begin in range(len(gallery), size, 2000):
        count = min(2000, size - begin)
        base = real[rng.integers(0, len(real), count)]
        vectors = (base + 0.05 * rng.normal(size=base.shape)).astype(np.float32)
        gallery.add([NewEntry(data=filler, suffix=".jpg", camera=int(c), source=f"synthetic_{begin + i}")
                     for i, c in enumerate(rng.integers(1, 7, count))], vectors)  # fmt: skip
    size = len(gallery)
    gallery.close()
    info = extractor.info
    return {"model": f"{info['model_args'].get('backbone')} SPANet {info['input_size'][0]}x{info['input_size'][1]}, "
                     f"{info['kind']} features ({info['feature_dim']}-d)",
            "enrolled_images": len(report.ids), "build_seconds": round(build_seconds, 2),
            "build_images_per_s": round(len(report.ids) / build_seconds, 1), "gallery_size": size}  # fmt: skip


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def search_level(url: str, queries: list[bytes], *, clients: int, requests: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for n in counter:
            if time.monotonic() > deadline:
                return
            start = time.perf_counter()
            response = await http.post("/search", files={"file": ("q.jpg", queries[n % len(queries)], "image/jpeg")},
                                       data={"top_k": "10"})  # fmt: skip
            latencies.append(time.perf_counter() - start)
            failures += response.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        await http.post("/search", files={"file": ("q.jpg", queries[0], "image/jpeg")})  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(ms), "failures": failures, "throughput_per_s": round(len(ms) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(float(ms.max()), 1)}  # fmt: skip


def enrol_over_http(url: str, images: list[Path], *, per_request: int, requests: int) -> dict:
    import httpx

    rng = np.random.default_rng(per_request)
    with httpx.Client(base_url=url, timeout=120) as http:
        start = time.perf_counter()
        for _ in range(requests):
            chosen = [images[i] for i in rng.integers(0, len(images), per_request)]
            files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in chosen]
            assert http.post("/gallery", files=files).status_code == 200
        wall = time.perf_counter() - start
    return {"images_per_request": per_request, "requests": requests,
            "images_per_s": round(per_request * requests / wall, 1), "ms_per_request": round(1000 * wall / requests, 1)}  # fmt: skip


def write_results(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# `spanet serve` load test ({result['gallery']['gallery_size']} entries; {result['gallery'].get('model', '')}, "
        f"{result['model']})", "",
        f"Machine: {result['machine']}; server and client share the CPU; 1-minute load average before / after: "
        f"{result['load_average_before_after'][0]} / {result['load_average_before_after'][1]}.", "",
        "| concurrent clients | requests | failures | searches/s | p50 ms | p99 ms | max ms | server CPU ms/search |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in result["search"]:
        lines.append(f"| {row['clients']} | {row['requests']} | {row['failures']} | {row['throughput_per_s']} | "
                     f"{row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} | {row.get('server_cpu_ms_per_search')} |")  # fmt: skip
    g = result["gallery"]
    lines += ["", "| enrolment | images/s | ms per request |", "|---|---|---|",
              f"| `spanet gallery build` ({g['enrolled_images']} images, batches of 128) | {g['build_images_per_s']} | – |"]
    for row in result["enrol_http"]:
        lines.append(f"| POST /gallery, {row['images_per_request']} image(s) per request | {row['images_per_s']} | {row['ms_per_request']} |")
    (out / "serve.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2k gallery, fewer requests")
    parser.add_argument("--checkpoint", type=Path, help="default: demo/run/last.pt, else random resnet18 weights")
    parser.add_argument("--images", type=Path, help="default: demo/data/bounding_box_test, else random pictures")
    parser.add_argument("--gallery-size", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300, help="search requests per concurrency level (max)")
    parser.add_argument("--seconds", type=float, default=40, help="time limit per concurrency level")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.gallery_size, args.requests, args.seconds = 2000, 60, 15
    from builders import start_server

    load_before = round(os.getloadavg()[0], 2)  # other work on the machine shifts every latency: recorded
    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    try:
        checkpoint, model = demo_or_random_model(work, args.checkpoint)
        images = source_images(work, args.images, 800)
        gallery = build_gallery(work / "gallery", checkpoint, images, args.gallery_size)
        print(f"gallery: {gallery}", flush=True)
        process, url = start_server(work / "gallery", checkpoint)
        try:
            queries = [p.read_bytes() for p in images[:50]]
            levels = []
            for clients in (1, 4, 16):
                before = cpu_seconds(process.pid)
                level = asyncio.run(search_level(url, queries, clients=clients, requests=args.requests, seconds=args.seconds))
                after = cpu_seconds(process.pid)
                # server CPU per search: what the latency would be on an otherwise idle core, whatever else runs
                level["server_cpu_ms_per_search"] = None if before is None else round(1000 * (after - before) / level["requests"], 1)
                levels.append(level)
                print(level, flush=True)
            enrol = [enrol_over_http(url, images, per_request=n, requests=r) for n, r in ((1, 30), (16, 8))]
            print(enrol, flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
        result = {"model": model, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                  "load_average_before_after": [load_before, round(os.getloadavg()[0], 2)],
                  "gallery": gallery, "search": levels, "enrol_http": enrol}  # fmt: skip
        write_results(result, args.out)
        print(f"results written to {args.out}/serve.json and serve.md")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
