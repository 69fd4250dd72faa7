"""Gallery backends and extraction engines side by side (docs/scale.md), in one run on this machine.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_scale.py          # 100k × 256-d, 200 queries
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_scale.py --quick  # 20k × 256-d, 100 queries

OMP_NUM_THREADS=1: one query at a time is fastest single-threaded on a 2-core machine shared with other work
(faiss' OpenMP threads spin against the other processes); it applies to faiss in every backend alike (Milvus Lite
searches with faiss too). Extraction sets its torch threads itself.

Needs spanet[milvus,ray]. Measured:
- search: one query at a time through each backend's `search` (what `spanet serve` does per request), top-10,
  p50/p99 latency and recall@10 against exact numpy search, without a filter and with a camera filter; Milvus also
  with camera + time window (the SQLite gallery has no time filter yet). Backends: SQLite + faiss flat (default),
  Milvus Lite file (in-process gRPC server), Milvus Lite server (`milvus-lite server`, a separate process on
  127.0.0.1). The gallery is filled at the row level (no image files), timed as "fill".
- enrolment: `add` in batches of 128 entries with ~2 KB image bytes each (image files written and fsynced).
- extraction: images/s of `spanet extract`'s loop vs `--engine ray` with 1 and 2 model actors (wall time of the
  whole job, Ray start and actor start included; ray.init time also reported alone).
Vectors: re-ID-like clustered unit vectors from bench_search.py. Results: benchmarks/results/scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import clustered_vectors  # noqa: E402

from spanet.deploy.backend import open_gallery  # noqa: E402
from spanet.deploy.gallery import NewEntry  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CAMERAS = 8
T0 = 1_714_521_600  # 2024-05-01T00:00:00Z


def _info(dim: int) -> dict:
    return {"feature_dim": dim, "kind": "global", "args_fingerprint": "bench", "weights_fingerprint": "benchscale"}


def _start_milvus_server(data: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data), "--host",
                                "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(300):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"milvus://127.0.0.1:{port}"
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("milvus-lite server did not start")


def _fill(gallery, vectors: np.ndarray, cameras: np.ndarray, times: np.ndarray) -> float:
    """Rows without image files, straight into the backend's store (timed)."""
    from spanet.deploy.milvus_schema import to_row

    start = time.perf_counter()
    for lo in range(0, len(vectors), 5000):
        hi = min(len(vectors), lo + 5000)
        news = [NewEntry(data=b"", suffix=".jpg", camera=int(cameras[i]),
                         timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(times[i])))) for i in range(lo, hi)]  # fmt: skip
        names = [f"{i:064d}.jpg" for i in range(lo, hi)]
        if hasattr(gallery, "client"):
            rows = [to_row(i + 1, n, name, gallery.fingerprint, vectors[i]) for i, n, name in zip(range(lo, hi), news, names)]
            gallery.client.insert(gallery.collection, rows)
        else:
            ids = gallery.store.insert([(n, name, gallery.fingerprint, vectors[i]) for i, n, name in zip(range(lo, hi), news, names)])
            gallery.index.add_with_ids(vectors[lo:hi], np.array(ids, dtype=np.int64))
    if hasattr(gallery, "client"):
        gallery._record = {**gallery._record, "next_id": len(vectors) + 1}
        gallery._unflushed = len(vectors)
        gallery.save_index()  # flush: seal the rows into indexed segments, as a build or import does
    else:
        gallery._cameras.update({i + 1: int(c) for i, c in enumerate(cameras)})
    return time.perf_counter() - start


def _latency(search, queries: np.ndarray, exact: np.ndarray) -> dict:
    times, found = [], []
    for query in queries:
        start = time.perf_counter()
        hits = search(query)
        times.append(time.perf_counter() - start)
        found.append([h for h in hits])
    recall = np.mean([len(set(f) & set(e.tolist())) / max(1, len(e)) for f, e in zip(found, exact)])
    return {"p50_ms": 1000 * float(np.percentile(times, 50)), "p99_ms": 1000 * float(np.percentile(times, 99)),
            "recall_at_10": float(recall)}  # fmt: skip


def bench_search(num: int, dim: int, num_queries: int, tmp: Path) -> dict:
    vectors, _ = clustered_vectors(num, dim, num_ids=max(10, num // 12), num_coarse=64, seed=0)
    queries, _ = clustered_vectors(num_queries, dim, num_ids=max(10, num // 12), num_coarse=64, seed=1)
    rng = np.random.default_rng(0)
    cameras = rng.integers(1, CAMERAS + 1, num)
    times = T0 + rng.integers(0, 86_400, num)
    query_cams = rng.integers(1, CAMERAS + 1, num_queries)
    after, before = T0 + 43_200, T0 + 86_400  # the second half of the day
    distances = ((queries**2).sum(1)[:, None] - 2 * queries @ vectors.T + (vectors**2).sum(1)[None])  # (Q, N)
    exact = np.argsort(distances, axis=1)[:, :10] + 1
    exact_cam = [np.argsort(np.where(cameras == c, d, np.inf))[:10] + 1 for c, d in zip(query_cams, distances)]
    window = (times >= after) & (times < before)
    exact_cam_time = [np.argsort(np.where((cameras == c) & window, d, np.inf))[:10] + 1 for c, d in zip(query_cams, distances)]
    server, url = _start_milvus_server(tmp / "server")
    out = {}
    try:
        for name, store in (("sqlite+faiss", "sqlite"), ("milvus-lite file", f"milvus:{tmp / 'g.db'}"), ("milvus-lite server", url)):
            gallery = open_gallery(tmp / name.replace(" ", "_"), model_info=_info(dim), create=True, store=store)
            try:
                row = {"fill_s": _fill(gallery, vectors, cameras, times)}
                row["no_filter"] = _latency(lambda q: [h.entry.id for h in gallery.search(q, top_k=10)], queries, exact)
                cams = iter(np.tile(query_cams, 1))
                row["camera"] = _latency(lambda q: [h.entry.id for h in gallery.search(q, top_k=10, camera=int(next(cams)))],
                                         queries, np.array(exact_cam))  # fmt: skip
                if hasattr(gallery, "client"):
                    from spanet.deploy.filters import Where
                    from spanet.deploy.milvus_schema import where_expression

                    cams = iter(np.tile(query_cams, 1))
                    row["camera_time"] = _latency(
                        lambda q: [h["id"] for h in gallery.client.search(
                            gallery.collection, data=[q.tolist()], limit=10, anns_field="vector",
                            filter=where_expression(Where(after=after, before=before), camera=int(next(cams))))[0]],
                        queries, np.array(exact_cam_time))  # fmt: skip
                out[name] = row
                print(name, json.dumps(row), flush=True)
            finally:
                gallery.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return out


def bench_enrol(count: int, dim: int, tmp: Path) -> dict:
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    datas = [rng.bytes(2048) for _ in range(count)]
    server, url = _start_milvus_server(tmp / "enrol_server")
    out = {}
    try:
        for name, store in (("sqlite+faiss", "sqlite"), ("milvus-lite file", f"milvus:{tmp / 'e.db'}"), ("milvus-lite server", url)):
            gallery = open_gallery(tmp / f"enrol_{name.replace(' ', '_')}", model_info=_info(dim), create=True, store=store)
            start = time.perf_counter()
            for lo in range(0, count, 128):
                hi = min(count, lo + 128)
                gallery.add([NewEntry(data=d, suffix=".jpg", camera=int(i % CAMERAS)) for i, d in enumerate(datas[lo:hi], lo)],
                            vectors[lo:hi])  # fmt: skip
            gallery.save_index()
            seconds = time.perf_counter() - start
            gallery.close()
            out[name] = {"entries": count, "seconds": seconds, "entries_per_s": count / seconds}
            print("enrol", name, json.dumps(out[name]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return out


def bench_extract(count: int, tmp: Path) -> dict:
    import torch
    from PIL import Image

    from spanet.checkpoint import save_checkpoint
    from spanet.deploy.ray_extract import RayOptions, extract_with_ray
    from spanet.features import FeatureExtractor
    from spanet.model import SPANet

    torch.manual_seed(0)
    args = {"num_classes": 10, "backbone": "resnet18", "pretrained": None}
    checkpoint = save_checkpoint(tmp / "model.pt", {"model": SPANet(**args).state_dict(), "model_args": args,
                                                    "input_size": [256, 128], "config": {}})  # fmt: skip
    rng = np.random.default_rng(3)
    folder = tmp / "images"
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}_c{1 + i % 6}s1_{i:06d}_00.jpg"
        Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    out = {}
    torch.set_num_threads(os.cpu_count() or 1)  # also when OMP_NUM_THREADS=1 keeps faiss single-threaded
    start = time.perf_counter()
    FeatureExtractor(checkpoint, device="cpu", batch_size=32).extract_files(paths)
    seconds = time.perf_counter() - start
    out["spanet extract (torch, 1 process)"] = {"images": count, "seconds": seconds, "images_per_s": count / seconds}
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    out["ray.init_s"] = time.perf_counter() - start
    try:
        for workers in (1, 2):
            start = time.perf_counter()
            extract_with_ray(checkpoint, paths, out=tmp / f"shards{workers}",
                             options=RayOptions(workers=workers, batch_size=32, device="cpu", shard_size=count))  # fmt: skip
            seconds = time.perf_counter() - start
            out[f"--engine ray, {workers} actor(s)"] = {"images": count, "seconds": seconds, "images_per_s": count / seconds}
    finally:
        ray.shutdown()
    for key, value in out.items():
        print("extract", key, value, flush=True)
    return out


def markdown(result: dict) -> str:
    """The results as Markdown tables (also written next to the JSON)."""
    sizes = result["sizes"]
    lines = [f"Search: {sizes['gallery']:,} × {sizes['dim']}-d, {sizes['queries']} single queries, top-10 "
             f"({result['date']}, {result['machine']['cpus']} cores, load {result['machine']['load_before'][0]:.1f} → "
             f"{result['machine'].get('load_after', [float('nan')])[0]:.1f})", "",
             "| backend | fill s | p50 ms | p99 ms | recall@10 | camera: p50 / p99 ms, recall | camera + time: p50 / p99 ms, recall |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in result.get("search", {}).items():
        if name == "error":
            lines.append(f"| error: {row} |")
            continue
        cells = [f"{row['fill_s']:.1f}", f"{row['no_filter']['p50_ms']:.1f}", f"{row['no_filter']['p99_ms']:.1f}",
                 f"{row['no_filter']['recall_at_10']:.3f}"]  # fmt: skip
        for key in ("camera", "camera_time"):
            r = row.get(key)
            cells.append(f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}, {r['recall_at_10']:.3f}" if r else "not supported yet")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Enrolment: {sizes['enrol']} entries of {sizes['dim']}-d with 2 KB images, batches of 128", "",
              "| backend | entries/s |", "|---|---|"]  # fmt: skip
    lines += [f"| {n} | {r['entries_per_s']:.0f} |" if "entries_per_s" in r else f"| {n} | {r} |"
              for n, r in result.get("enrol", {}).items() if isinstance(r, dict)]  # fmt: skip
    lines += ["", f"Extraction: {sizes['images']} images, ResNet-18 SPANet at 256×128, CPU, batches of 32", "",
              "| engine | images/s | wall s |", "|---|---|---|"]  # fmt: skip
    for name, r in result.get("extract", {}).items():
        if isinstance(r, dict):
            lines.append(f"| {name} | {r['images_per_s']:.1f} | {r['seconds']:.1f} |")
        else:
            lines.append(f"| {name} | | {r if isinstance(r, str) else f'{r:.1f}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--table", type=Path, metavar="JSON", help="only print the Markdown tables of a results file")
    parser.add_argument("--num", type=int, help="gallery vectors (default 100000; --quick 20000)")
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.table.read_text(encoding="utf-8"))), end="")
        return
    num = args.num or (20_000 if args.quick else 100_000)
    queries, enrol, images = (100, 500, 64) if args.quick else (200, 2000, 256)
    torch_threads = os.cpu_count()
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_before": os.getloadavg()},
              "sizes": {"gallery": num, "dim": args.dim, "queries": queries, "enrol": enrol, "images": images,
                        "torch_threads": torch_threads}, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("scale_quick.json" if args.quick else "scale.json")
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for section, run in (("search", lambda: bench_search(num, args.dim, queries, Path(tmp))),
                             ("enrol", lambda: bench_enrol(enrol, args.dim, Path(tmp))),
                             ("extract", lambda: bench_extract(images, Path(tmp)))):  # fmt: skip
            try:
                result[section] = run()
            except Exception as exc:  # noqa: BLE001 - recorded: e.g. Ray's head node timing out on a loaded machine
                result[section] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            result["machine"]["load_after"] = os.getloadavg()
            out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")  # partial results survive a crash
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(f"written {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
