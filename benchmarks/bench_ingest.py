"""`spanet ingest` speed and search with a time filter, on synthetic footage and a large synthetic gallery.

    .venv/bin/python benchmarks/bench_ingest.py --checkpoint demo/run/last.pt            # the whole thing
    .venv/bin/python benchmarks/bench_ingest.py --checkpoint demo/run/last.pt --quick    # a short smoke run

1. Ingest: `spanet synth-video` footage, one camera, 640×360, 20 s at 10 fps, with 5 and with 20 people; ingested
   with the default HOG detector and with the footage's ground-truth boxes as precomputed detections (what a
   stronger detector run elsewhere would give). Reported: frames/s over the whole run and the time split (decode,
   detect, track + crop choice, embed + enrol), tracks, and crops enrolled per minute of video. Each with the
   default IoU tracker and, where boxmot is installed, `--tracker botsort` (BoT-SORT with the model as its
   appearance model); with ground-truth detections also how many tracks mix two people (each crop's person is the
   ground-truth box of its frame closest to it in size). Real footage too where `--real` exists (OpenCV's
   `vtest.avi`, 768×576, 795 frames: `bash scripts/fetch_real_video.sh`): HOG at its default smallest person
   height (128 px) and at 64 px (frames upscaled 2×), with each tracker.
2. Search with a time filter: a gallery of N random unit-stripe vectors of the model's dimension (rows written
   straight to the store, no image files: only the search is measured), times spread over 30 days on 8 cameras.
   Per query: `Gallery.search_many` with a one-day window and 3 of the 8 cameras, against the same search unfiltered.
   p50 / p99 over the queries, one query at a time (no batching), embedding not included.
Results: benchmarks/results/ingest.json and ingest.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def bench_ingest(checkpoint: Path, *, people: int, seconds: float, detector: str, tracker: str, work: Path,
                 real: Path | None = None, hog_min_height: int = 128) -> dict:
    """One ingest of synthetic footage with `people` walkers (or of the `real` video file, HOG only)."""
    from spanet.deploy.gallery import Gallery
    from spanet.deploy.ingest import CameraFootage, IngestOptions, ingest, iou_tracker
    from spanet.features import FeatureExtractor
    from spanet.synth.video import VideoOptions, generate_video
    from spanet.tracking.detect import HOGDetector, MOTDetections

    foot = work / f"foot_{people}"
    if real is None and not foot.exists():
        generate_video(foot, VideoOptions(cameras=1, people=people, seconds=seconds, fps=10, seed=people))
    extractor = FeatureExtractor(checkpoint, device="cpu", batch_size=64)
    gallery = Gallery.open(work / f"g_{people}_{detector}_{tracker}_{real is not None}", model_info=extractor.info,
                           create=True)  # fmt: skip
    item = CameraFootage(camera=1, path=real or foot / "cam1", start_time=dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc))
    make = (lambda _item: HOGDetector(min_height=hog_min_height)) if detector == "hog" else \
        (lambda it: MOTDetections(it.path / "gt" / "gt.txt"))  # fmt: skip
    track = iou_tracker
    if tracker == "botsort":
        from spanet.deploy.reid import ReID
        from spanet.tracking.botsort import BotSortTracker

        reid = ReID(checkpoint, device="cpu", batch_size=64)
        track = lambda fps: BotSortTracker(reid, fps=fps)  # noqa: E731
    began = time.perf_counter()
    report = ingest(gallery, extractor, [item], detector=make, tracker=track, options=IngestOptions())
    wall = time.perf_counter() - began
    mixed = _mixed_tracks(gallery, foot / "cam1" / "gt" / "gt.txt") if detector == "gt" and real is None else None
    gallery.close()
    minutes = report.frames / 10 / 60
    return {
        "people": real.name if real else people, "detector": detector if real is None else f"hog{hog_min_height}", "tracker": tracker, "mixed_tracks": mixed, "frames": report.frames, "wall_s": round(wall, 2),
        "frames_per_s": round(report.frames / wall, 2), "split_s": {k: round(v, 2) for k, v in report.seconds.items()},
        "tracks": report.tracks, "crops": report.entries, "crops_per_video_minute": round(report.entries / minutes, 1),
    }  # fmt: skip


def _mixed_tracks(gallery, truth_file: Path) -> int:
    """Tracks whose crops show more than one person (a crop's person: the ground-truth box of its frame closest
    to the crop in width and height)."""
    from PIL import Image

    truth: dict[int, list[tuple[int, float, float]]] = {}
    for line in truth_file.read_text().splitlines():
        frame, pid, _x, _y, w, h = (float(v) for v in line.split(",")[:6])
        truth.setdefault(int(frame), []).append((int(pid), w, h))
    people: dict[int, set[int]] = {}
    entries, _ = gallery.store.query(limit=100_000, offset=0)
    for entry in entries:
        with Image.open(gallery.image_path(entry)) as image:
            width, height = image.size
        rows = truth[int(entry.source.rsplit("=", 1)[1])]
        pid = min(rows, key=lambda r: abs(r[1] - width) + abs(r[2] - height))[0]
        people.setdefault(entry.track, set()).add(pid)
    return sum(len(found) > 1 for found in people.values())


def bench_search(*, size: int, dim: int, queries: int, work: Path) -> dict:
    from spanet.deploy.filters import Where
    from spanet.deploy.gallery import Gallery, NewEntry

    rng = np.random.default_rng(0)
    gallery = Gallery.open(work / f"big_{size}", model_info={"feature_dim": dim, "kind": "parts"}, create=True)
    start = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
    began = time.perf_counter()
    for first in range(0, size, 5000):
        n = min(5000, size - first)
        vectors = _unit_stripes(rng, n, dim)
        offsets = rng.uniform(0, 30 * 86400, n)
        rows = [(NewEntry(data=b"", suffix=".jpg", camera=int(c), timestamp=(start + dt.timedelta(seconds=float(o))).isoformat(),
                          track=first + i), f"{first + i:064x}.jpg", "", v)  # fmt: skip
                for i, (c, o, v) in enumerate(zip(rng.integers(1, 9, n), offsets, vectors))]
        ids = gallery.store.insert(rows)
        gallery.index.add_with_ids(vectors, np.array(ids, dtype=np.int64))
    fill_s = time.perf_counter() - began
    probes = _unit_stripes(rng, queries, dim)
    plain, filtered, kept = [], [], []
    for row in range(queries):
        day = start + dt.timedelta(days=int(rng.integers(0, 30)))
        where = Where(cameras=tuple(int(c) for c in rng.choice(np.arange(1, 9), 3, replace=False)),
                      after=day.timestamp(), before=(day + dt.timedelta(days=1)).timestamp())  # fmt: skip
        clock = time.perf_counter()
        gallery.search_many(probes[row : row + 1], [(10, None, None)])
        plain.append(time.perf_counter() - clock)
        clock = time.perf_counter()
        hits = gallery.search_many(probes[row : row + 1], [(10, None, None)], where=[where])[0]
        filtered.append(time.perf_counter() - clock)
        kept.append(len(hits))
    gallery.store.close()  # no index file needed
    return {
        "gallery": size, "dim": dim, "queries": queries, "fill_s": round(fill_s, 1), "window": "1 day of 30, 3 of 8 cameras",
        "unfiltered_ms": _percentiles(plain), "filtered_ms": _percentiles(filtered), "hits_per_query_min": int(min(kept)),
    }  # fmt: skip


def _unit_stripes(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, 6, dim // 6)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    return vectors.reshape(n, dim)


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p99": round(float(np.percentile(ms, 99)), 2)}


def _markdown(results: dict) -> str:
    lines = ["| people | detector | tracker | frames | frames/s | decode s | detect s | track s | embed s | tracks | "
             "mixed tracks | crops / video minute |", "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in results["ingest"]:
        s = r["split_s"]
        mixed = "n/a" if r.get("mixed_tracks") is None else r["mixed_tracks"]
        lines.append(f"| {r['people']} | {r['detector']} | {r.get('tracker', 'iou')} | {r['frames']} | {r['frames_per_s']} | "
                     f"{s['decode']} | {s['detect']} | {s['track']} | {s['embed']} | {r['tracks']} | {mixed} | "
                     f"{r['crops_per_video_minute']} |")  # fmt: skip
    s = results["search"]
    lines += ["", f"Search, gallery of {s['gallery']:,} × {s['dim']}-d, {s['queries']} queries ({s['window']}):",
              f"unfiltered p50 {s['unfiltered_ms']['p50']} ms / p99 {s['unfiltered_ms']['p99']} ms; "
              f"time + camera filter p50 {s['filtered_ms']['p50']} ms / p99 {s['filtered_ms']['p99']} ms"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the model to embed with (speed only)")
    parser.add_argument("--quick", action="store_true", help="4 s footage and a 10k gallery")
    parser.add_argument("--gallery-size", type=int, default=100_000)
    parser.add_argument("--stem", default="ingest", help="results file name (default: ingest)")
    parser.add_argument("--search-only", action="store_true", help="keep the ingest rows of the results file")
    parser.add_argument("--real", type=Path, default=Path(".cache/real-video/vtest.avi"),
                        help="real footage to ingest with HOG as well, where the file exists (default: OpenCV's "
                        "vtest.avi from scripts/fetch_real_video.sh)")
    parser.add_argument("--trackers", nargs="+", choices=("iou", "botsort"), default=None,
                        help="trackers to measure (default: iou, and botsort where boxmot is installed)")
    args = parser.parse_args()
    import torch

    from spanet.features import FeatureExtractor

    dim = FeatureExtractor(args.checkpoint, device="cpu").feature_dim
    trackers = args.trackers or ["iou", *(["botsort"] if importlib.util.find_spec("boxmot") else [])]
    seconds, size = (4.0, 10_000) if args.quick else (20.0, args.gallery_size)
    results: dict = {"date": dt.date.today().isoformat(), "torch_threads": torch.get_num_threads(), "ingest": []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.search_only:
            results["ingest"] = json.loads((RESULTS / f"{args.stem}.json").read_text())["ingest"]
        for people in () if args.search_only else (5, 20):
            for detector in ("gt", "hog"):
                for tracker in trackers:
                    results["ingest"].append(bench_ingest(args.checkpoint, people=people, seconds=seconds,
                                                          detector=detector, tracker=tracker, work=Path(tmp)))  # fmt: skip
                    print(results["ingest"][-1], flush=True)
        if not args.search_only and args.real.is_file():
            for tracker in trackers:
                for height in (128, 64):
                    results["ingest"].append(bench_ingest(args.checkpoint, people=0, seconds=0, detector="hog",
                                                          tracker=tracker, work=Path(tmp), real=args.real,
                                                          hog_min_height=height))  # fmt: skip
                    print(results["ingest"][-1], flush=True)
        results["search"] = bench_search(size=size, dim=dim, queries=200, work=Path(tmp))
        print(results["search"], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{args.stem}.md").write_text(_markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
