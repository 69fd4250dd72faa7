"""`spanet associate` with no threshold argument: how good is the cut it derives from the footage itself?

    .venv/bin/python benchmarks/bench_association_default.py --checkpoint demo/run/last.pt

The default cut (`threshold_from_cannot_links`) is a quantile of the distances between tracks known to be different
people (one camera, overlapping in time) — no labels. Its one parameter, the quantile, is chosen on calibration
footage (seed 100: 48 people, 40 s) as the largest candidate whose pairwise precision there is at least 0.95, then
measured on test footage it was not chosen on (seeds 0-4: 3 cameras, 24 people, 20 s at 10 fps, 640×360), on
ground-truth tracks and on the same tracks cut into pieces of at most 2 s ("fragmented", as bench_association.py).
For comparison: the old fixed default 1.0, and the cut calibrated with labels on the calibration footage (best
pairwise F1, as bench_association.py). Pairwise precision = share of track pairs put together that are one person;
recall = share of same-person track pairs put together. Results: benchmarks/results/association_default.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from spanet.synth.video import VideoOptions, generate_video
from spanet.tracking.associate import (
    fit_track_threshold, cannot_link, embed_tracks, global_ids, pairwise_precision_recall, threshold_from_cannot_links,
)  # fmt: skip
from spanet.tracking.mot import read_sequence, read_tracks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_association import prepare_tracks, truth_of  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
QUANTILES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def footage_tracks(embed, footage: Path, work: Path, *, fragmented: bool) -> tuple[list, np.ndarray]:
    work.mkdir(parents=True, exist_ok=True)
    sequences, files = prepare_tracks(footage, work, cameras=3, fragmented=fragmented)
    seqs = [read_sequence(s) for s in sequences]
    tables = [read_tracks(f, sequence=s) for f, s in zip(files, seqs)]
    tracks = embed_tracks(seqs, tables, embed=embed, crops_per_track=8)
    return tracks, np.array([truth_of(t.track_id, fragmented=fragmented) for t in tracks])


def evaluate(tracks: list, truth: np.ndarray, threshold: float) -> dict[str, float]:
    labels = global_ids(tracks, threshold=threshold)
    precision, recall = pairwise_precision_recall(labels, truth)
    return {"threshold": round(threshold, 4), "precision": round(precision, 4), "recall": round(recall, 4),
            "ids": int(len(np.unique(labels))), "people": int(len(np.unique(truth)))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--stem", default="association_default")
    args = parser.parse_args()
    from spanet.deploy.reid import ReID

    embed = ReID(args.checkpoint, device="cpu").get_features
    results: dict = {"checkpoint": str(args.checkpoint), "quantiles": QUANTILES, "calibration": {}, "test": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_video(tmp / "calib", VideoOptions(people=48, seconds=40.0, seed=100))
        chosen = {}
        for fragmented in (False, True):
            kind = "fragmented" if fragmented else "gt tracks"
            tracks, truth = footage_tracks(embed, tmp / "calib", tmp / f"calib_{fragmented}", fragmented=fragmented)
            per_q = {q: evaluate(tracks, truth, threshold_from_cannot_links(tracks, quantile=q)) for q in QUANTILES}
            good = [q for q in QUANTILES if per_q[q]["precision"] >= 0.95]
            labelled, _f1 = fit_track_threshold(tracks, truth)
            chosen[fragmented] = (max(good) if good else min(QUANTILES), labelled)
            results["calibration"][kind] = {"per_quantile": {str(q): v for q, v in per_q.items()},
                                            "chosen_quantile": chosen[fragmented][0], "labelled_threshold": labelled,
                                            "cannot_link_pairs": int(np.triu(cannot_link(tracks), 1).sum())}  # fmt: skip
            print(kind, results["calibration"][kind], flush=True)
        for seed in args.seeds:
            generate_video(tmp / f"test{seed}", VideoOptions(seed=seed))
            for fragmented in (False, True):
                tracks, truth = footage_tracks(embed, tmp / f"test{seed}", tmp / f"t{seed}_{fragmented}", fragmented=fragmented)
                quantile, labelled = chosen[fragmented]
                row = {"seed": seed, "tracks": "fragmented" if fragmented else "gt tracks",
                       "q0.02": evaluate(tracks, truth, threshold_from_cannot_links(tracks, quantile=0.02)),
                       f"chosen_q{quantile}": evaluate(tracks, truth, threshold_from_cannot_links(tracks, quantile=quantile)),
                       "old_fixed_1.0": evaluate(tracks, truth, 1.0), "labelled_calibration": evaluate(tracks, truth, labelled)}  # fmt: skip
                results["test"].append(row)
                print(row, flush=True)
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
