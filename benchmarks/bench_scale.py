"""Gallery backends and extraction engines side by side (docs/scale.md), in one run on this machine.

    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/bench_scale.py   # ~1 h on 2 cores
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_scale.py --quick      # small sizes, minutes
    ... bench_scale.py --only search-wide   # one section again; the others' results are kept

OMP_NUM_THREADS=1: one query at a time is fastest single-threaded on a 2-core machine shared with other work
(faiss' OpenMP threads spin against the other processes); it applies to faiss in every backend alike (Milvus Lite
searches with numpy/faiss too). Extraction sets its torch threads itself.

Needs spanet[milvus,ray]. Measured:
- search (1M × 256-d) and search-wide (100k × 3072-d, the parts feature of the ResNet-18 SPANet; spanet galleries
  store the model's feature as it is, with no PCA): one query at a time through each backend's `search` (what
  `spanet serve` does per request), top-10, p50/p99 latency and recall@10 against exact numpy search, without a
  filter, with a camera, and with a camera + time window. Backends: SQLite + faiss flat (default), all rows;
  Milvus Lite file (in-process gRPC server), filled in inserts of 5000 until all rows are in or `--budget` seconds
  have passed (the rows reached are reported; fewer queries, Milvus Lite being slow); then the same data folder
  served by Milvus Lite's server mode (`python -m milvus_lite server`, a separate process on 127.0.0.1: the gRPC
  path a Milvus server takes), searched with the same queries. Rows are written at the row level (no image files).
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
import shutil
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
    for _ in range(1500):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"milvus://127.0.0.1:{port}"
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("milvus-lite server did not start")


def _rows(vectors: np.ndarray, cameras: np.ndarray, times: np.ndarray, lo: int, hi: int):
    """Entries lo..hi-1 as (NewEntry, image name) without image files; entry i gets id i + 1."""
    news = [NewEntry(data=b"", suffix=".jpg", camera=int(cameras[i]),
                     timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(times[i])))) for i in range(lo, hi)]  # fmt: skip
    return news, [f"{i:064d}.jpg" for i in range(lo, hi)]


def _fill_sqlite(gallery, vectors: np.ndarray, cameras: np.ndarray, times: np.ndarray) -> dict:
    """All rows straight into the SQLite store and the faiss index (timed)."""
    start = time.perf_counter()
    for lo in range(0, len(vectors), 5000):
        hi = min(len(vectors), lo + 5000)
        news, names = _rows(vectors, cameras, times, lo, hi)
        ids = gallery.store.insert([(n, name, gallery.fingerprint, vectors[i]) for i, n, name in zip(range(lo, hi), news, names)])
        gallery.index.add_with_ids(vectors[lo:hi], np.array(ids, dtype=np.int64))
    gallery._cameras.update({i + 1: int(c) for i, c in enumerate(cameras)})
    return {"rows": len(vectors), "fill_s": time.perf_counter() - start}


def _fill_milvus(gallery, vectors: np.ndarray, cameras: np.ndarray, times: np.ndarray, budget_s: float) -> dict:
    """Rows into the collection in inserts of 5000 until all are in or `budget_s` has passed, then a flush (timed);
    the rows reached are ids 1..rows (a prefix of `vectors`)."""
    from spanet.deploy.milvus_schema import to_row

    start, hi = time.perf_counter(), 0
    while hi < len(vectors) and time.perf_counter() - start < budget_s:
        lo, hi = hi, min(len(vectors), hi + 5000)
        news, names = _rows(vectors, cameras, times, lo, hi)
        gallery.client.insert(gallery.collection, [to_row(i + 1, n, name, gallery.fingerprint, vectors[i])
                                                   for i, n, name in zip(range(lo, hi), news, names)])  # fmt: skip
        if hi % 100_000 == 0:
            print(f"  milvus fill {hi:,} rows {time.perf_counter() - start:.0f} s", flush=True)
    insert_s = time.perf_counter() - start
    gallery._record = {**gallery._record, "next_id": hi + 1}
    gallery._unflushed = hi
    gallery.save_index()  # flush: seal the rows into indexed segments, as a build or import does
    return {"rows": hi, "fill_s": time.perf_counter() - start, "insert_s": insert_s, "budget_s": budget_s,
            "stopped_by_budget": hi < len(vectors)}  # fmt: skip


def _exact(vectors: np.ndarray, queries: np.ndarray, masks: list[np.ndarray | None]) -> list[np.ndarray]:
    """Exact top-10 ids (1-based) of each query among the rows its mask allows (None: all), by numpy."""
    norms = (vectors**2).sum(1)
    out = []
    for lo in range(0, len(queries), 16):
        distances = norms[None] - 2 * queries[lo : lo + 16] @ vectors.T  # (q, N); |q|^2 does not change the order
        for row, mask in zip(distances, masks[lo : lo + 16]):
            row = row if mask is None else np.where(mask, row, np.inf)
            top = np.argpartition(row, 10)[:10]
            out.append(top[np.argsort(row[top], kind="stable")] + 1)
    return out


def _latency(search, queries: np.ndarray, exact: list[np.ndarray]) -> dict:
    times, found = [], []
    for i, query in enumerate(queries):
        start = time.perf_counter()
        hits = search(i, query)
        times.append(time.perf_counter() - start)
        found.append([h.entry.id for h in hits])
    recall = np.mean([len(set(f) & set(e.tolist())) / max(1, len(e)) for f, e in zip(found, exact)])
    return {"queries": len(queries), "p50_ms": 1000 * float(np.percentile(times, 50)),
            "p99_ms": 1000 * float(np.percentile(times, 99)), "recall_at_10": float(recall)}  # fmt: skip


def _measure(gallery, data: dict, rows: int, num_queries: int) -> dict:
    """p50/p99 and recall@10 through the contract's `search`: no filter, a camera, a camera + time window."""
    from spanet.deploy.filters import Where

    vectors, queries, cams = data["vectors"][:rows], data["queries"][:num_queries], data["query_cams"]
    cameras, times = data["cameras"][:rows], data["times"][:rows]
    window = (times >= data["after"]) & (times < data["before"])
    when = Where(after=float(data["after"]), before=float(data["before"]))
    out = {}
    for name, mask, search in (
        ("no_filter", lambda i: None, lambda i, q: gallery.search(q, top_k=10)),
        ("camera", lambda i: cameras == cams[i], lambda i, q: gallery.search(q, top_k=10, camera=int(cams[i]))),
        ("camera_time", lambda i: (cameras == cams[i]) & window,
         lambda i, q: gallery.search(q, top_k=10, camera=int(cams[i]), where=when)),
    ):  # fmt: skip
        exact = _exact(vectors, queries, [mask(i) for i in range(len(queries))])
        out[name] = _latency(search, queries, exact)
        print(f"  {name}: {json.dumps(out[name])}", flush=True)
    return out


def _server_gallery(folder: Path, url: str, dim: int):
    """The Milvus Lite file gallery's collection, served by a separate `milvus_lite server` process on the same data
    folder: a MilvusGallery on its gRPC address (the folder's lock and checks are skipped: it is only searched)."""
    from spanet.deploy.milvus_gallery import MilvusGallery
    from spanet.deploy.milvus_schema import check_collection, connect
    from spanet.deploy.store_spec import STORE_FILE, parse_store

    spec = parse_store(url)
    record = {**json.loads((folder / STORE_FILE).read_text(encoding="utf-8")), "uri": spec.uri}
    meta = json.loads((folder / "gallery.json").read_text(encoding="utf-8"))
    client = connect(spec)
    check_collection(client, record, meta, spec)  # loads the collection
    return MilvusGallery(folder, meta, client, record, lock=None, spec=spec)


def bench_search(num: int, dim: int, num_queries: int, tmp: Path, *, milvus_queries: int, budget_s: float) -> dict:
    """SQLite + faiss with all `num` rows; Milvus Lite as a file with as many as fit in `budget_s`, then the same data
    folder served by Milvus Lite's server mode (a separate process; the fill is not repeated)."""
    vectors, _ = clustered_vectors(num, dim, num_ids=max(10, num // 12), num_coarse=64, seed=0)
    queries, _ = clustered_vectors(num_queries, dim, num_ids=max(10, num // 12), num_coarse=64, seed=1)
    rng = np.random.default_rng(0)
    data = {"vectors": vectors, "queries": queries, "cameras": rng.integers(1, CAMERAS + 1, num),
            "times": T0 + rng.integers(0, 86_400, num), "query_cams": rng.integers(1, CAMERAS + 1, num_queries),
            "after": T0 + 43_200, "before": T0 + 86_400}  # the window: the second half of the day  # fmt: skip
    out = {}
    gallery = open_gallery(tmp / "sqlite", model_info=_info(dim), create=True, store="sqlite")
    try:
        out["sqlite+faiss"] = row = _fill_sqlite(gallery, vectors, data["cameras"], data["times"])
        print(f"sqlite+faiss {num:,} x {dim}: fill {row['fill_s']:.1f} s", flush=True)
        row.update(_measure(gallery, data, num, num_queries))
    finally:
        gallery.close()
    shutil.rmtree(tmp / "sqlite", ignore_errors=True)
    gallery = open_gallery(tmp / "milvus", model_info=_info(dim), create=True, store=f"milvus:{tmp / 'g.db'}")
    try:
        out["milvus-lite file"] = row = _fill_milvus(gallery, vectors, data["cameras"], data["times"], budget_s)
        print(f"milvus-lite file {num:,} x {dim}: {json.dumps(row)}", flush=True)
        row.update(_measure(gallery, data, row["rows"], milvus_queries))
    finally:
        gallery.close()
    server, url = _start_milvus_server(tmp / "g.db")
    try:
        start = time.perf_counter()
        gallery = _server_gallery(tmp / "milvus", url, dim)
        out["milvus-lite server"] = row = {"rows": out["milvus-lite file"]["rows"], "load_s": time.perf_counter() - start}
        print(f"milvus-lite server: load {row['load_s']:.1f} s", flush=True)
        row.update(_measure(gallery, data, row["rows"], milvus_queries))
        gallery.client.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    shutil.rmtree(tmp / "g.db", ignore_errors=True)
    shutil.rmtree(tmp / "milvus", ignore_errors=True)
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


def _cell(r: dict | None) -> str:
    return f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}, {r['recall_at_10']:.3f}" if r else "-"


def _when(result: dict, section: str) -> str:
    when = result.get("when", {}).get(section)
    return f" ({when['date']}, load {when['load_before'][0]:.1f} → {when['load_after'][0]:.1f})" if when else ""


def markdown(result: dict) -> str:
    """The results as Markdown tables (also written next to the JSON)."""
    machine, sizes = result["machine"], result["sizes"]
    lines = [f"{machine['cpus']} cores (shared with other work); p50 / p99 ms and recall@10 against exact numpy search, "
             "one query at a time, top-10", ""]  # fmt: skip
    when = {key: _when(result, section) for key, section in zip(result.get("search", {}), ("search", "search-wide"))}
    for key, rows in result.get("search", {}).items():
        lines += [f"Search: target {key} (rows reached and queries per backend in the table){when[key]}", "",
                  "| backend | rows | fill s | queries | no filter | camera | camera + time |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in rows.items():
            if not isinstance(row, dict):
                lines.append(f"| {name} | error: {row} |")
                continue
            fill = f"{row['fill_s']:.0f}" if "fill_s" in row else f"(same data; opened in {row.get('load_s', 0):.1f} s)"
            queries = row.get("no_filter", {}).get("queries", "-")
            lines.append(f"| {name} | {row.get('rows', 0):,} | {fill} | {queries} | {_cell(row.get('no_filter'))} | "
                         f"{_cell(row.get('camera'))} | {_cell(row.get('camera_time'))} |")  # fmt: skip
        lines.append("")
    lines += [f"Enrolment: {sizes['enrol']} entries of 256-d with 2 KB images (written and fsynced), batches of 128"
              f"{_when(result, 'enrol')}", "",
              "| backend | entries/s |", "|---|---|"]  # fmt: skip
    lines += [f"| {n} | {r['entries_per_s']:.0f} |" if isinstance(r, dict) else f"| {n} | {r} |"
              for n, r in result.get("enrol", {}).items()]  # fmt: skip
    lines += ["", f"Extraction: {sizes['images']} images, ResNet-18 SPANet at 256×128, CPU, batches of 32"
              f"{_when(result, 'extract')}", "",
              "| engine | images/s | wall s |", "|---|---|---|"]  # fmt: skip
    for name, r in result.get("extract", {}).items():
        if isinstance(r, dict):
            lines.append(f"| {name} | {r['images_per_s']:.1f} | {r['seconds']:.1f} |")
        else:
            lines.append(f"| {name} | | {r if isinstance(r, str) else f'{r:.1f}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, results in scale_quick.{json,md}")
    parser.add_argument("--table", type=Path, metavar="JSON", help="only print the Markdown tables of a results file")
    parser.add_argument("--only", nargs="+", choices=("search", "search-wide", "enrol", "extract"),
                        help="run these sections only and keep the others' results from the existing file")  # fmt: skip
    parser.add_argument("--budget", type=float, default=900.0, help="seconds to fill each Milvus Lite collection (default 900)")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.table.read_text(encoding="utf-8"))), end="")
        return
    # (gallery, dim, queries, Milvus queries) for 256-d and for the 3072-d parts feature of a ResNet-18 SPANet
    narrow, wide = ((20_000, 256, 100, 50), (5_000, 3072, 50, 20)) if args.quick else ((1_000_000, 256, 200, 50), (100_000, 3072, 100, 30))
    enrol, images = (500, 64) if args.quick else (2000, 256)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("scale_quick.json" if args.quick else "scale.json")
    result = json.loads(out.read_text(encoding="utf-8")) if args.only and out.is_file() else {}
    if result.get("layout") != 2:
        result = {"layout": 2, "search": {}}  # a results file of the older layout is not merged
    result.update(machine={"platform": platform.platform(), "cpus": os.cpu_count(), "load_before": os.getloadavg()},
                  sizes={"enrol": enrol, "images": images, "torch_threads": os.cpu_count()},
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        runs = {"search": lambda: bench_search(*narrow[:3], Path(tmp), milvus_queries=narrow[3], budget_s=args.budget),
                "search-wide": lambda: bench_search(*wide[:3], Path(tmp), milvus_queries=wide[3], budget_s=args.budget),
                "enrol": lambda: bench_enrol(enrol, 256, Path(tmp)), "extract": lambda: bench_extract(images, Path(tmp))}  # fmt: skip
        for section in args.only or list(runs):
            size = narrow if section == "search" else wide
            when = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": os.getloadavg()}
            try:
                value = runs[section]()
            except Exception as exc:  # noqa: BLE001 - recorded: e.g. Ray's head node timing out on a loaded machine
                value = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            if section.startswith("search"):
                result["search"][f"{size[0]:,} × {size[1]}-d"] = value
            else:
                result[section] = value
            result["machine"]["load_after"] = os.getloadavg()
            result.setdefault("when", {})[section] = {**when, "load_after": os.getloadavg()}  # kept by --only runs
            out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")  # partial results survive a crash
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(f"written {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
