"""`spanet associate` with no threshold argument: how good is the cut it derives from the footage itself?

    .venv/bin/python benchmarks/bench_association_default.py --checkpoint demo/run/last.pt

The default cut (`threshold_from_cannot_links`) is the mean minus z standard deviations of the distances between
tracks known to be different people (one camera, overlapping in time) — no labels. Its one parameter, z, is chosen on
calibration footage (seed 100: 48 people, 40 s) as the smallest candidate whose pairwise precision there is at least
0.95 (per kind of tracks; the default 3 is the fragmented kind's choice — the ground-truth kind has too few pairs there
for a stable precision), then
measured on test footage it was not chosen on (seeds 0-4: 3 cameras, 24 people, 20 s at 10 fps, 640×360), on
ground-truth tracks and on the same tracks cut into pieces of at most 2 s ("fragmented", as bench_association.py).
Each in the two feature spaces `associate` can cluster in: the raw track features, and the features centred per
camera (`centre_cameras`, the default), and the centred ones with `--disjoint-views` (synth-video's cameras never see
one person at once, and their frames are synchronised). For comparison: the old fixed default 1.0, and the cut calibrated with
labels on the calibration footage (best pairwise F1, as bench_association.py). `--cache FILE` keeps the embedded
tracks (a pickle) so that a second run with the same checkpoint skips the embedding. Pairwise precision = share of track pairs put together that are one person;
recall = share of same-person track pairs put together. Results: benchmarks/results/association_default.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np

from spanet.synth.video import VideoOptions, generate_video
from spanet.tracking.associate import (
    DEFAULT_SPREAD, centre_cameras, fit_track_threshold, cannot_link, embed_tracks, global_ids,
    pairwise_precision_recall, threshold_from_cannot_links,
)  # fmt: skip
from spanet.tracking.mot import read_sequence, read_tracks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_association import prepare_tracks, truth_of  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SPREADS = (2.0, 2.5, 2.75, 3.0, 3.25, 3.5)


def footage_tracks(embed, footage: Path, work: Path, *, fragmented: bool) -> tuple[list, np.ndarray]:
    work.mkdir(parents=True, exist_ok=True)
    sequences, files = prepare_tracks(footage, work, cameras=3, fragmented=fragmented)
    seqs = [read_sequence(s) for s in sequences]
    tables = [read_tracks(f, sequence=s) for f, s in zip(files, seqs)]
    tracks = embed_tracks(seqs, tables, embed=embed, crops_per_track=8)
    return tracks, np.array([truth_of(t.track_id, fragmented=fragmented) for t in tracks])


def evaluate(tracks: list, truth: np.ndarray, threshold: float, *, disjoint_views: bool = False) -> dict[str, float]:
    labels = global_ids(tracks, threshold=threshold, disjoint_views=disjoint_views)
    precision, recall = pairwise_precision_recall(labels, truth)
    return {"threshold": round(threshold, 4), "precision": round(precision, 4), "recall": round(recall, 4),
            "ids": int(len(np.unique(labels))), "people": int(len(np.unique(truth)))}  # fmt: skip


def spaces(tracks: list) -> dict[str, list]:
    """The two feature spaces `associate` can cluster in: raw track features and features centred per camera."""
    centred = centre_cameras(tracks)
    return {"raw": tracks, "centred": centred if centred is not None else tracks}


def choose(tracks: list, truth: np.ndarray) -> dict:
    """On calibration footage: the smallest spread (the largest cut) with pairwise precision >= 0.95 (else the
    largest spread), and the labelled cut with the best pairwise F1."""
    per_z = {z: evaluate(tracks, truth, threshold_from_cannot_links(tracks, spread=z)) for z in SPREADS}
    good = [z for z in SPREADS if per_z[z]["precision"] >= 0.95]
    labelled, _f1 = fit_track_threshold(tracks, truth)
    return {"per_spread": {str(z): v for z, v in per_z.items()}, "chosen_spread": min(good) if good else max(SPREADS),
            "labelled_threshold": labelled, "cannot_link_pairs": int(np.triu(cannot_link(tracks), 1).sum())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--stem", default="association_default")
    parser.add_argument("--cache", type=Path, help="pickle of the embedded tracks, written once, then reused")
    args = parser.parse_args()
    from spanet.deploy.reid import ReID

    cached = pickle.loads(args.cache.read_bytes()) if args.cache and args.cache.exists() else {}
    reid = ReID(args.checkpoint, device="cpu")

    def footage_tracks_cached(footage: Path, work: Path, *, seed: int, fragmented: bool) -> tuple[list, np.ndarray]:
        if (seed, fragmented) not in cached:
            cached[(seed, fragmented)] = footage_tracks(reid.get_features, footage, work, fragmented=fragmented)
        return cached[(seed, fragmented)]

    results: dict = {"checkpoint": str(args.checkpoint), "spreads": SPREADS, "default_spread": DEFAULT_SPREAD,
                     "calibration": {}, "test": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if {(100, False), (100, True)} - cached.keys():
            generate_video(tmp / "calib", VideoOptions(people=48, seconds=40.0, seed=100))
        chosen = {}
        for fragmented in (False, True):
            kind = "fragmented" if fragmented else "gt tracks"
            tracks, truth = footage_tracks_cached(tmp / "calib", tmp / f"calib_{fragmented}", seed=100,
                                                  fragmented=fragmented)
            features = spaces(tracks)
            for space, feats in features.items():
                chosen[(fragmented, space)] = choose(feats, truth)
                results["calibration"][f"{kind}, {space}"] = chosen[(fragmented, space)]
                print(kind, space, chosen[(fragmented, space)], flush=True)
            centred = features["centred"]
            chosen[(fragmented, "disjoint")] = fit_track_threshold(centred, truth, disjoint_views=True)[0]
        for seed in args.seeds:
            if {(seed, False), (seed, True)} - cached.keys():
                generate_video(tmp / f"test{seed}", VideoOptions(seed=seed))
            for fragmented in (False, True):
                tracks, truth = footage_tracks_cached(tmp / f"test{seed}", tmp / f"t{seed}_{fragmented}", seed=seed,
                                                      fragmented=fragmented)
                row = {"seed": seed, "tracks": "fragmented" if fragmented else "gt tracks",
                       "old_fixed_1.0 (raw)": evaluate(tracks, truth, 1.0)}  # fmt: skip
                features = spaces(tracks)
                for space, feats in features.items():
                    cal = chosen[(fragmented, space)]
                    z = cal["chosen_spread"]
                    row[f"default: mean - {DEFAULT_SPREAD:g} sd ({space})"] = evaluate(
                        feats, truth, threshold_from_cannot_links(feats))
                    row[f"chosen on this kind's calibration: {z:g} sd ({space})"] = evaluate(
                        feats, truth, threshold_from_cannot_links(feats, spread=z))
                    row[f"labelled calibration ({space})"] = evaluate(feats, truth, cal["labelled_threshold"])
                centred = features["centred"]  # again with --disjoint-views: synth-video's views never overlap
                row[f"default: mean - {DEFAULT_SPREAD:g} sd (centred, --disjoint-views)"] = evaluate(
                    centred, truth, threshold_from_cannot_links(centred, disjoint_views=True), disjoint_views=True)
                row["labelled calibration (centred, --disjoint-views)"] = evaluate(
                    centred, truth, chosen[(fragmented, "disjoint")], disjoint_views=True)
                results["test"].append(row)
                print(row, flush=True)
    if args.cache:
        args.cache.write_bytes(pickle.dumps(cached))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{args.stem}.md").write_text(_markdown(results))
    print(_markdown(results))


def _markdown(results: dict) -> str:
    lines = ["| tracks | cut | threshold (mean) | pairwise precision | pairwise recall | ids / people |", "|---|---|---:|---:|---:|---:|"]
    for kind in ("gt tracks", "fragmented"):
        rows = [r for r in results["test"] if r["tracks"] == kind]
        for name in [k for k in rows[0] if k not in ("seed", "tracks")]:
            vals = [r[name] for r in rows]
            mean = {k: float(np.mean([v[k] for v in vals])) for k in ("threshold", "precision", "recall", "ids", "people")}
            lo = min(v["precision"] for v in vals)
            lines.append(f"| {kind} | {name} | {mean['threshold']:.3f} | {mean['precision']:.3f} (min {lo:.3f}) | "
                         f"{mean['recall']:.3f} | {mean['ids']:.1f} / {mean['people']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
