"""Cross-camera association on synthetic footage: IDF1 / identity purity of SPANet, −SA and a colour histogram.

    .venv/bin/python benchmarks/bench_association.py --spanet demo/run/best.pt --no-sa demo/run_without_sa/best.pt

Footage: `spanet synth-video` (3 cameras, 24 people, 20 s at 10 fps, 640×360), test seed 0; the threshold of every
method is calibrated (`fit_track_threshold`, best pairwise F1) on separate footage with seed 100 (other people).
Tracks given to `associate`: the ground-truth tracks ("gt tracks": one track per person and camera), and the same cut
into pieces of at most 2 s ("fragmented": what an imperfect tracker gives; same-camera pieces must be re-joined).
Metrics: `spanet.tracking.metrics.cross_camera_scores` (motmetrics over all cameras joined into one sequence, so a
person keeps credit only if one global id follows them from camera to camera): IDF1; identity purity = share of
boxes whose global id's most frequent true person is theirs; and the number of global ids vs true people.
Results: benchmarks/results/association.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from spanet.synth.video import VideoOptions, generate_video
from spanet.tracking.associate import associate, centre_cameras, fit_track_threshold, embed_tracks
from spanet.tracking.metrics import cross_camera_scores
from spanet.tracking.mot import Tracks, read_sequence, read_tracks, write_tracks

RESULTS = Path(__file__).resolve().parent / "results"


class ColourHistogram:
    """Baseline appearance: 8×8×8 RGB histogram of the top and of the bottom half of each box, square-rooted
    (Hellinger), unit length. Same `get_features(xyxy, bgr)` contract as `spanet.ReID`."""

    def get_features(self, xyxy: np.ndarray, img: np.ndarray) -> np.ndarray:
        rows = []
        for x0, y0, x1, y1 in np.asarray(xyxy, dtype=np.float64):
            x0, y0 = max(0, int(x0)), max(0, int(y0))
            crop = img[y0 : int(np.ceil(y1)), x0 : int(np.ceil(x1)), ::-1]
            feature = np.zeros(1024, dtype=np.float32)
            if crop.size:
                half = crop.shape[0] // 2
                for part, pixels in enumerate((crop[:half], crop[half:])):
                    bins = (pixels.reshape(-1, 3) // 32).astype(np.int64)
                    codes = bins[:, 0] * 64 + bins[:, 1] * 8 + bins[:, 2]
                    feature[part * 512 : (part + 1) * 512] = np.bincount(codes, minlength=512)
                feature = np.sqrt(feature)
                feature /= max(float(np.linalg.norm(feature)), 1e-12)
            rows.append(feature)
        return np.stack(rows) if rows else np.zeros((0, 1024), np.float32)


def fragment(tracks: Tracks, *, max_frames: int) -> tuple[Tracks, dict[int, int]]:
    """Cut every track into pieces of at most `max_frames` frames; new ids, and the true person of each."""
    new_ids = np.zeros_like(tracks.ids)
    truth = {}
    for tid in tracks.track_ids():
        rows = np.flatnonzero(tracks.ids == tid)
        first = tracks.frames[rows].min()
        piece = (tracks.frames[rows] - first) // max_frames
        new_ids[rows] = tid * 1000 + piece
        truth.update({int(tid * 1000 + p): int(tid) for p in np.unique(piece)})
    return Tracks(path=tracks.path, frames=tracks.frames, ids=new_ids, boxes=tracks.boxes, scores=tracks.scores), truth


def prepare_tracks(footage: Path, work: Path, *, cameras: int, fragmented: bool) -> tuple[list[Path], list[Path]]:
    sequences = [footage / f"cam{c + 1}" for c in range(cameras)]
    files = []
    for seq in sequences:
        gt = read_tracks(seq / "gt" / "gt.txt")
        if fragmented:
            gt, _ = fragment(gt, max_frames=20)
        files.append(write_tracks(work / f"{seq.name}_tracks.txt", gt))
    return sequences, files


def truth_of(track_id: int, *, fragmented: bool) -> int:
    return track_id // 1000 if fragmented else track_id


def calibrate(embed, footage: Path, work: Path, *, cameras: int, fragmented: bool) -> tuple[float, float]:
    sequences, files = prepare_tracks(footage, work, cameras=cameras, fragmented=fragmented)
    seqs = [read_sequence(s) for s in sequences]
    tables = [read_tracks(f, sequence=s) for f, s in zip(files, seqs)]
    tracks = embed_tracks(seqs, tables, embed=embed, crops_per_track=8)
    tracks = centre_cameras(tracks) or tracks  # the space `associate` clusters in by default
    return fit_track_threshold(tracks, [truth_of(t.track_id, fragmented=fragmented) for t in tracks])


def score(footage: Path, out: Path, *, cameras: int) -> dict[str, float]:
    truth = [read_tracks(footage / f"cam{c + 1}" / "gt" / "gt.txt") for c in range(cameras)]
    return cross_camera_scores(truth, [read_tracks(out / f"cam{c + 1}.txt") for c in range(cameras)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spanet", type=Path, required=True, help="SPANet checkpoint (e.g. demo/run/best.pt)")
    parser.add_argument("--no-sa", type=Path, help="the same model trained without spatial attention")
    parser.add_argument("--people", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="test footage seeds")
    parser.add_argument("--calib-scale", type=float, default=2.0, help="calibration footage: people and seconds ×")
    args = parser.parse_args()
    from spanet.deploy.reid import ReID

    methods = {"SPANet": ReID(args.spanet, device="cpu").get_features}
    if args.no_sa:
        methods["SPANet −SA"] = ReID(args.no_sa, device="cpu").get_features
    methods["colour histogram"] = ColourHistogram().get_features
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = VideoOptions(cameras=args.cameras, people=args.people, seconds=args.seconds)
        scale = args.calib_scale
        calib = VideoOptions(**{**base.__dict__, "people": round(scale * args.people), "seconds": scale * args.seconds,
                                "seed": 100})  # fmt: skip
        generate_video(tmp / "calib", calib)
        thresholds = {}
        for fragmented in (False, True):
            for name, embed in methods.items():
                work = tmp / f"calib_{name}_{fragmented}".replace(" ", "_")
                work.mkdir()
                thresholds[(name, fragmented)] = calibrate(embed, tmp / "calib", work, cameras=args.cameras,
                                                           fragmented=fragmented)  # fmt: skip
        for seed in args.seeds:
            generate_video(tmp / f"test{seed}", VideoOptions(**{**base.__dict__, "seed": seed}))
            for fragmented in (False, True):
                for name, embed in methods.items():
                    work = tmp / f"{seed}_{name}_{fragmented}".replace(" ", "_")
                    work.mkdir()
                    threshold, calib_f1 = thresholds[(name, fragmented)]
                    sequences, files = prepare_tracks(tmp / f"test{seed}", work, cameras=args.cameras,
                                                      fragmented=fragmented)  # fmt: skip
                    result = associate(sequences, files, embed=embed, out_dir=work / "out", threshold=threshold)
                    metrics = score(tmp / f"test{seed}", work / "out", cameras=args.cameras)
                    rows.append({"seed": seed, "tracks": "fragmented" if fragmented else "gt tracks", "method": name,
                                 "threshold": threshold, "calibration_pairwise_f1": calib_f1,
                                 "input_tracks": len(result.tracks), **metrics})  # fmt: skip
                    print(rows[-1], flush=True)
    write_results(rows, args=args)


def write_results(rows: list[dict], *, args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    meta = {"spanet": str(args.spanet), "no_sa": str(args.no_sa), "people": args.people, "seconds": args.seconds,
            "cameras": args.cameras, "seeds": args.seeds, "calib_scale": args.calib_scale}  # fmt: skip
    (RESULTS / "association.json").write_text(json.dumps({"setting": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"Cross-camera association on synthetic footage ({args.cameras} cameras, {args.people} people, "
        f"{args.seconds:g} s at 10 fps, 640×360), mean over test seeds {args.seeds} (min–max in brackets); "
        f"thresholds calibrated on seed 100 footage ({round(args.calib_scale * args.people)} other people, "
        f"{args.calib_scale * args.seconds:g} s).",
        "",
        "| tracks | method | threshold | IDF1 % | identity purity % | global ids / people |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["tracks"], r["method"]), []).append(r)
    for (tracks, method), group in groups.items():
        def cell(key: str) -> str:
            values = [100 * g[key] for g in group]
            return f"{np.mean(values):.1f} ({min(values):.1f}–{max(values):.1f})"

        ids = f"{np.mean([g['global_ids'] for g in group]):.1f} / {np.mean([g['true_people'] for g in group]):.1f}"
        lines.append(f"| {tracks} | {method} | {group[0]['threshold']:.2f} | {cell('idf1')} | {cell('purity')} | {ids} |")
    (RESULTS / "association.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
