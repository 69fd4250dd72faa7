"""boxmot's BoT-SORT on synthetic footage: IDF1 / ID switches with spanet's embeddings vs no appearance model.

    .venv/bin/pip install boxmot        # a test/benchmark peer, never a runtime dependency (in the `test` extra)
    .venv/bin/python benchmarks/bench_boxmot.py --spanet demo/run/last.pt --no-sa demo/run_without_sa/last.pt

Footage: `spanet synth-video` (3 cameras, 24 people, 20 s at 10 fps, 640×360; people pass in front of each other),
test seeds 0–2. Detections: the ground-truth boxes of each frame (confidence 1), so every difference comes from the
tracker's association, not from a detector; in the "gaps" setting each person's detections also vanish for 0.5–0.9 s
about once every 3 s of their track (a detector missing an occluded person), so tracks must be picked up again. Trackers: `boxmot.BotSort` with its defaults except `use_cmc=False`
(static cameras), `frame_rate=10` and `appearance_thresh` (`--appearance-thresh`, boxmot's default 0.25), either with `use_embeddings=False` (motion and IoU only) or with
`reid_model=` an appearance model whose `get_features(boxes, bgr_frame)` it calls on every frame: spanet.ReID
(SPANet, and the same recipe without SA) or an 8×8×8 RGB colour histogram of each box half. Metrics per camera
(single-camera tracking: a person's ids in different cameras are not compared), summed over cameras with motmetrics
through `spanet.tracking.metrics.cross_camera_scores`: IDF1, ID switches, and the number of track ids per person.
Results: benchmarks/results/boxmot.json and boxmot.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from spanet.synth.video import VideoOptions, generate_video
from spanet.tracking.metrics import cross_camera_scores
from spanet.tracking.mot import Tracks, read_sequence, read_tracks
from spanet.tracking.run import run_tracker

RESULTS = Path(__file__).resolve().parent / "results"
CAMERA_STRIDE = 100_000  # ids of camera c become c * CAMERA_STRIDE + id: each camera scored on its own


def per_camera_ids(tracks: Tracks, camera: int) -> Tracks:
    return Tracks(path=tracks.path, frames=tracks.frames, ids=camera * CAMERA_STRIDE + tracks.ids, boxes=tracks.boxes,
                  scores=tracks.scores)  # fmt: skip


def with_gaps(tracks: Tracks, *, seed: int) -> Tracks:
    """The detections minus, per track, gaps of 5–9 frames starting on average every 30 frames."""
    rng = np.random.default_rng(seed)
    keep = np.ones(len(tracks), dtype=bool)
    for track_id in tracks.track_ids():
        rows = np.flatnonzero(tracks.ids == track_id)
        frames = tracks.frames[rows]
        start = frames.min() + rng.integers(5, 30)
        while start < frames.max():
            keep[rows[(frames >= start) & (frames < start + rng.integers(5, 10))]] = False
            start += rng.integers(20, 41)
    return Tracks(path=tracks.path, frames=tracks.frames[keep], ids=tracks.ids[keep], boxes=tracks.boxes[keep],
                  scores=tracks.scores[keep])  # fmt: skip


def track_footage(footage: Path, *, cameras: int, make_tracker, gaps: bool) -> dict[str, float]:
    truth, predicted = [], []
    for camera in range(1, cameras + 1):
        sequence = read_sequence(footage / f"cam{camera}")
        gt = read_tracks(sequence.root / "gt" / "gt.txt", sequence=sequence)
        detections = with_gaps(gt, seed=camera) if gaps else gt
        truth.append(per_camera_ids(gt, camera))
        predicted.append(per_camera_ids(run_tracker(make_tracker(), sequence, detections), camera))
    scores = cross_camera_scores(truth, predicted)
    scores["ids_per_person"] = scores["global_ids"] / scores["true_people"]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spanet", type=Path, required=True, help="SPANet checkpoint (e.g. demo/run/last.pt)")
    parser.add_argument("--no-sa", type=Path, help="the same recipe trained without spatial attention")
    parser.add_argument("--people", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="test footage seeds")
    parser.add_argument("--appearance-thresh", type=float, default=0.25,
                        help="BotSort's largest cosine distance for an appearance match (boxmot's default 0.25)")
    parser.add_argument("--stem", default="boxmot", help="results file name (results/STEM.json, .md)")
    args = parser.parse_args()
    import boxmot
    from bench_association import ColourHistogram

    from spanet.deploy.reid import ReID

    models = {"none (motion + IoU only)": None, "SPANet": ReID(args.spanet, device="cpu")}
    if args.no_sa:
        models["SPANet −SA"] = ReID(args.no_sa, device="cpu")
    models["colour histogram"] = ColourHistogram()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            footage = Path(tmp) / f"test{seed}"
            generate_video(footage, VideoOptions(cameras=args.cameras, people=args.people, seconds=args.seconds,
                                                 seed=seed))  # fmt: skip
            for gaps, (name, model) in itertools.product((False, True), models.items()):
                def make_tracker(model=model):
                    if model is None:
                        return boxmot.BotSort(use_embeddings=False, use_cmc=False, frame_rate=10)
                    return boxmot.BotSort(reid_model=model, use_cmc=False, frame_rate=10,
                                          appearance_thresh=args.appearance_thresh)

                began = time.perf_counter()
                scores = track_footage(footage, cameras=args.cameras, make_tracker=make_tracker, gaps=gaps)
                rows.append({"seed": seed, "detections": "gaps" if gaps else "every box", "appearance": name,
                             "seconds": time.perf_counter() - began, **scores})  # fmt: skip
                print(rows[-1], flush=True)
    write_results(rows, args=args, boxmot_version=boxmot.__version__)


def write_results(rows: list[dict], *, args: argparse.Namespace, boxmot_version: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    meta = {"spanet": str(args.spanet), "no_sa": str(args.no_sa), "people": args.people, "seconds": args.seconds,
            "cameras": args.cameras, "seeds": args.seeds, "boxmot": boxmot_version,
            "appearance_thresh": args.appearance_thresh}  # fmt: skip
    (RESULTS / f"{args.stem}.json").write_text(json.dumps({"setting": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"boxmot {boxmot_version} BoT-SORT on synthetic footage ({args.cameras} cameras, {args.people} people, "
        f"{args.seconds:g} s at 10 fps, 640×360), ground-truth boxes as detections; per-camera tracking scores, "
        f"BotSort appearance_thresh {args.appearance_thresh:g}; mean over test seeds {args.seeds} (min–max in brackets).",
        "",
        "| detections | appearance model | IDF1 % | ID switches | track ids per person-camera |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["detections"], r["appearance"]), []).append(r)
    for (detections, name), group in groups.items():
        idf1 = [100 * g["idf1"] for g in group]
        switches = [g["id_switches"] for g in group]
        lines.append(
            f"| {detections} | {name} | {np.mean(idf1):.1f} ({min(idf1):.1f}–{max(idf1):.1f}) | "
            f"{np.mean(switches):.1f} ({min(switches)}–{max(switches)}) | "
            f"{np.mean([g['ids_per_person'] for g in group]):.2f} |"
        )
    (RESULTS / f"{args.stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
