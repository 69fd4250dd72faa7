"""Gallery search at scale: exact flat L2 vs IVF-PQ (spanet's `ivfpq` index) on 1M synthetic vectors.

    .venv/bin/python benchmarks/bench_search.py            # 1M × 256-d gallery, 300 queries (~15-30 min on 2 busy cores)
    .venv/bin/python benchmarks/bench_search.py --quick    # 100k gallery, 200 queries

Why 256-d: a 1M × 12288-d float32 gallery is 49 GB, more than this machine's RAM, so it cannot be searched flat
here; 256-d is both the "global" embedding and the dimension spanet's ivfpq index reduces wide features to (PCA).
A second, smaller experiment (`--wide-num`) measures whether that PCA helps on 12288-d stripe-like vectors.

Data: re-ID-like vectors on the unit sphere with a low intrinsic dimension (32-d latent): coarse "appearance"
clusters, identities inside them, ~12 images per identity; queries are new images of gallery identities. Uniform
random vectors would have no neighbours worth finding, and isotropic 256-d clusters make every identity trivially
separable (an earlier version of this script: recall did not depend on nprobe at all).

Measured, all in the same run: build time, index size (serialised bytes, ≈ resident memory), query latency
(a batch of queries → ms per query; and one query at a time), recall@10 against the exact top-10.
Results: benchmarks/results/search.json and search.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from spanet.runtime import cpu_info

import faiss
import numpy as np

from spanet.deploy.index import GalleryIndex, choose_params

RESULTS = Path(__file__).resolve().parent / "results"


def clustered_vectors(
    num: int, dim: int, *, num_ids: int, num_coarse: int, seed: int, latent: int = 32, id_seed: int = 12345
) -> tuple[np.ndarray, np.ndarray]:
    """`num` unit vectors of low intrinsic dimension, grouped by identity; also returns each vector's identity.

    Identities are points of a `latent`-d Gaussian mixture (`num_coarse` "appearance" clusters); an image is its
    identity's point plus noise, mapped to `dim` dims by a fixed random matrix, plus a little isotropic noise.
    Like CNN features (and unlike isotropic clusters in 256-d, where every identity is trivially separated),
    neighbourhoods then overlap, so how many inverted lists a query visits matters. Identity points depend only
    on `id_seed`, so queries made with another `seed` are new images of gallery identities.
    """
    id_rng = np.random.default_rng(id_seed)
    coarse = id_rng.normal(size=(num_coarse, latent)).astype(np.float32)
    id_points = coarse[id_rng.integers(0, num_coarse, num_ids)] + 0.5 * id_rng.normal(size=(num_ids, latent)).astype(np.float32)
    mapping = id_rng.normal(size=(latent, dim)).astype(np.float32) / np.sqrt(latent)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, num_ids, num)
    out = np.empty((num, dim), dtype=np.float32)
    for start in range(0, num, 100_000):  # chunks keep the temporaries small
        stop = min(num, start + 100_000)
        points = id_points[ids[start:stop]] + 0.5 * rng.normal(size=(stop - start, latent)).astype(np.float32)
        chunk = points @ mapping + 0.05 * rng.normal(size=(stop - start, dim)).astype(np.float32)
        out[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out, ids


def recall_at(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k that the approximate top-k contains."""
    return float(np.mean([len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, exact)]))


def timed_search(index: faiss.Index, queries: np.ndarray, k: int, *, singles: int) -> dict:
    start = time.perf_counter()
    _, rows = index.search(queries, k)
    batch_ms = (time.perf_counter() - start) * 1000 / len(queries)
    start = time.perf_counter()
    for q in queries[:singles]:
        index.search(q[None], k)
    single_ms = (time.perf_counter() - start) * 1000 / singles
    return {"rows": rows, "batch_ms_per_query": batch_ms, "single_query_ms": single_ms}


def index_bytes(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).size)


def run_large(args: argparse.Namespace) -> dict:
    print(f"generating {args.num:,} × {args.dim} gallery + {args.queries} queries …", flush=True)
    num_ids = max(1, args.num // 12)  # ~12 images per identity, like a re-ID gallery
    gallery, _ = clustered_vectors(args.num, args.dim, num_ids=num_ids, num_coarse=1000, seed=args.seed)
    queries, _ = clustered_vectors(args.queries, args.dim, num_ids=num_ids, num_coarse=1000, seed=args.seed + 1)
    paths = [f"g{i}" for i in range(args.num)]
    k = 10

    print("flat: build + exact search …", flush=True)
    start = time.perf_counter()
    flat = GalleryIndex.build(gallery, paths, params=choose_params(args.num, args.dim, kind="flat"))
    flat_build = time.perf_counter() - start
    flat_run = timed_search(flat.index, queries, k, singles=args.singles)
    exact = flat_run["rows"]
    rows = [{
        "index": "flat (IndexFlatL2)", "nprobe": None, "build_s": round(flat_build, 2),
        "bytes": index_bytes(flat.index), "batch_ms_per_query": round(flat_run["batch_ms_per_query"], 3),
        "single_query_ms": round(flat_run["single_query_ms"], 3), "recall_at_10": 1.0,
    }]
    del flat

    params = choose_params(args.num, args.dim, kind="ivfpq")
    print(f"ivfpq: build {params.factory_string(args.dim)} (train on {params.train_size:,}) …", flush=True)
    start = time.perf_counter()
    ivf = GalleryIndex.build(gallery, paths, params=params)
    ivf_build = time.perf_counter() - start
    refine = ivf.index  # IndexRefine: IVF-PQ candidates re-ranked with 8-bit vectors
    base = faiss.downcast_index(refine.base_index)  # the IVF-PQ alone, for the "no re-ranking" rows
    base_bytes = index_bytes(base)
    total_bytes = index_bytes(refine)
    for nprobe in args.nprobes:
        if nprobe > params.nlist:
            continue
        ivf.set_nprobe(nprobe)
        for label, index, size in (("IVF-PQ", base, base_bytes), ("IVF-PQ + SQ8 re-rank", refine, total_bytes)):
            run = timed_search(index, queries, k, singles=args.singles)
            rows.append({
                "index": f"{label} ({params.factory_string(args.dim)})" if label != "IVF-PQ" else
                f"IVF-PQ (IVF{params.nlist},PQ{params.m}x{params.nbits})",
                "nprobe": nprobe, "build_s": round(ivf_build, 2), "bytes": size,
                "batch_ms_per_query": round(run["batch_ms_per_query"], 3),
                "single_query_ms": round(run["single_query_ms"], 3),
                "recall_at_10": round(recall_at(run["rows"], exact, k), 4),
            })
            print(f"  {rows[-1]}", flush=True)
    return {"num": args.num, "dim": args.dim, "queries": args.queries, "params": ivf.meta["params"], "rows": rows}


def stripe_vectors(num: int, *, seed: int, num_ids: int, rank: int) -> np.ndarray:
    """12288-d vectors shaped like SPANet's parts feature: six 2048-d stripes, each non-negative and L2-normalised.

    Each identity has a low-rank (`rank`) latent code mapped to every stripe by a fixed random non-negative basis,
    plus noise; real CNN features are likewise far from using all 12288 directions.
    """
    id_rng = np.random.default_rng(99)
    basis = np.abs(id_rng.normal(size=(6, rank, 2048))).astype(np.float32)
    codes = id_rng.normal(size=(num_ids, rank)).astype(np.float32)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, num_ids, num)
    latent = codes[ids] + 0.5 * rng.normal(size=(num, rank)).astype(np.float32)
    stripes = []
    for s in range(6):
        part = np.maximum(latent @ basis[s], 0) + 0.3 * np.abs(rng.normal(size=(num, 2048))).astype(np.float32)
        stripes.append(part / np.linalg.norm(part, axis=1, keepdims=True))
    return np.concatenate(stripes, axis=1)


def run_wide(args: argparse.Namespace) -> dict:
    """IVF-PQ on 12288-d vectors with and without the PCA-256 pre-transform, same nlist/m/nbits, no re-ranking."""
    num = args.wide_num
    print(f"wide: {num:,} × 12288 stripe-like vectors …", flush=True)
    gallery = stripe_vectors(num, seed=args.seed, num_ids=max(1, num // 12), rank=64)
    queries = stripe_vectors(200, seed=args.seed + 1, num_ids=max(1, num // 12), rank=64)
    exact_index = faiss.IndexFlatL2(12288)
    exact_index.add(gallery)
    _, exact = exact_index.search(queries, 10)
    paths = [str(i) for i in range(num)]
    nlist = max(1, min(256, num // 64))
    rows = []
    for pca_dim in (0, 256):
        params = choose_params(num, 12288, kind="ivfpq", nlist=nlist, m=64, nbits=8, nprobe=min(16, nlist),
                               pca_dim=pca_dim, refine="none")
        start = time.perf_counter()
        index = GalleryIndex.build(gallery, paths, params=params)
        build = time.perf_counter() - start
        run = timed_search(index.index, queries, 10, singles=20)
        rows.append({
            "index": index.meta["factory"], "build_s": round(build, 2), "bytes": index_bytes(index.index),
            "batch_ms_per_query": round(run["batch_ms_per_query"], 3),
            "recall_at_10": round(recall_at(run["rows"], exact, 10), 4),
        })
        print(f"  {rows[-1]}", flush=True)
    return {"num": num, "dim": 12288, "queries": 200, "rows": rows}



def to_markdown(result: dict) -> str:
    large = result["large"]
    lines = [
        f"# Gallery search: {large['num']:,} × {large['dim']}-d synthetic vectors, {large['queries']} queries",
        "",
        f"CPU: {result['cpu']}, faiss {result['faiss']}, {result['threads']} OpenMP threads, shared with other jobs.",
        "recall@10 = share of the exact top-10 found; batch = all queries in one call; single = one query per call.",
        "",
        "| index | nprobe | build (s) | size (MB) | batch ms/query | single-query ms | recall@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in large["rows"]:
        lines.append(
            f"| {row['index']} | {row['nprobe'] or '–'} | {row['build_s']} | {row['bytes'] / 2**20:.0f} | "
            f"{row['batch_ms_per_query']:.3f} | {row['single_query_ms']:.2f} | {row['recall_at_10']:.3f} |"
        )
    if result.get("wide"):
        wide = result["wide"]
        lines += [
            "",
            f"## PCA for wide features: {wide['num']:,} × 12288-d stripe-like vectors, IVF-PQ without re-ranking",
            "",
            "| index | build (s) | size (MB) | batch ms/query | recall@10 |",
            "|---|---|---|---|---|",
        ]
        for row in wide["rows"]:
            lines.append(
                f"| {row['index']} | {row['build_s']} | {row['bytes'] / 2**20:.1f} | "
                f"{row['batch_ms_per_query']:.3f} | {row['recall_at_10']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k gallery, 200 queries, small wide experiment")
    parser.add_argument("--num", type=int, default=1_000_000, help="gallery vectors (default 1M)")
    parser.add_argument("--dim", type=int, default=256, help="vector dimension (default 256)")
    parser.add_argument("--queries", type=int, default=300, help="queries (default 300)")
    parser.add_argument("--singles", type=int, default=20, help="queries timed one at a time (default 20)")
    parser.add_argument("--nprobes", type=int, nargs="+", default=[2, 4, 8, 16, 32, 62], help="nprobe values to sweep")
    parser.add_argument("--wide-num", type=int, default=5000, help="vectors in the 12288-d PCA experiment (0: skip)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="faiss OpenMP threads (default 1: on cores shared with other jobs, 2 spinning threads ran 2x slower)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.num, args.queries, args.singles, args.wide_num = 100_000, 200, 20, min(args.wide_num, 2000)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    result = {
        "cpu": cpu_info().name,
        "faiss": faiss.__version__,
        "threads": faiss.omp_get_max_threads(),
        "quick": args.quick,
        "large": run_large(args),
        "wide": run_wide(args) if args.wide_num else None,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (args.out_dir / f"search{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = to_markdown(result)
    (args.out_dir / f"search{suffix}.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
