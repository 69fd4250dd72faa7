"""Open-set measurement: does a calibrated threshold hold on identities never seen in calibration?

Renders two synthetic test sets with different seeds (new people, never trained on), calibrates the checkpoint's
threshold on the first (pairwise FPR 1e-3 / 1e-2, FPIR 5 % for a 1,000-image gallery) and measures on the second:
the pairwise false-accept rate, the true-accept rate, and the share of strangers (held-out identities) whose nearest
gallery image falls within the threshold. Not a speed benchmark: it needs a trained checkpoint.

    python benchmarks/open_set.py --checkpoint runs/demo/best.pt --work /tmp/open_set
Writes benchmarks/results/open_set.json and open_set.md.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from spanet.checkpoint import checkpoint_input_size, load_model
from spanet.data.datasets import load_dataset
from spanet.evaluation.calibration import calibrate_checkpoint
from spanet.evaluation.evaluate import extract_feature_set
from spanet.features import ExtractionOptions
from spanet.evaluation.distance import pairwise_distances
from spanet.evaluation.verification import open_set_identification, pair_distances, verification_metrics
from spanet.synth.generate import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
SET = dict(train_ids=2, test_ids=200, cameras=6, images_per_id=10, height=128, width=64, distractors=0, junk=0)
TARGETS = [{"target_fpr": 1e-3}, {"target_fpr": 1e-2}, {"target_fpir": 0.05, "gallery_size": 1000}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="folder for the rendered sets and calibration files")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "open_set")
    args = parser.parse_args()
    calib_root, report_root = args.work / "calibration_set", args.work / "report_set"
    for root, seed in ((calib_root, 101), (report_root, 102)):
        if not root.is_dir():
            generate_dataset(root, seed=seed, progress=False, **SET)
    calib, report = load_dataset("synthetic", calib_root), load_dataset("synthetic", report_root)

    model, state = load_model(args.checkpoint, map_location="cpu")
    features = extract_feature_set(model, report, input_size=checkpoint_input_size(state, path=args.checkpoint),
                                   options=ExtractionOptions(progress=False))
    q_pids, q_cams = _ids(features.query)
    g_pids, g_cams = _ids(features.gallery)
    distances = pairwise_distances(features.query_features, features.gallery_features)
    positives, negatives = pair_distances(distances, q_pids, g_pids, q_cams, g_cams)
    reported = verification_metrics(positives, negatives)
    open_set = open_set_identification(distances, q_pids, g_pids, q_cams, g_cams)

    rows = []
    for target in TARGETS:
        record, _ = calibrate_checkpoint(args.checkpoint, calib, out=args.work / "calibration.json", **target)
        t = record["threshold"]
        strangers = _stranger_accept_rate(distances, q_pids, g_pids, t)
        rows.append({"target": record["target"], "threshold": t, "calibration": record["calibration_data"],
                     "unseen_fpr": float(np.mean(negatives <= t)), "unseen_tpr": float(np.mean(positives <= t)),
                     "unseen_stranger_accept": strangers})
    result = {
        "checkpoint": str(args.checkpoint), "platform": platform.platform(), "sets": SET,
        "report_set": {"query": len(features.query), "gallery": len(features.gallery)},
        "verification": {k: reported[k] for k in ("pairs", "at_fpr", "auc")}, "open_set": open_set,
        "calibrated": rows,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))


def _stranger_accept_rate(distances: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, t: float) -> dict:
    """Every query searches the gallery without its own identity: how often is its nearest image within `t`?"""
    masked = np.where(q_pids[:, None] == g_pids[None, :], np.inf, distances)
    nearest = masked.min(axis=1)
    gallery_size = int(np.mean((q_pids[:, None] != g_pids[None, :]).sum(axis=1)))
    return {"rate": float(np.mean(nearest <= t)), "searches": int(len(nearest)), "gallery_size": gallery_size}


def _markdown(result: dict) -> str:
    lines = [
        f"Checkpoint `{result['checkpoint']}`; report set {result['report_set']['query']} query / "
        f"{result['report_set']['gallery']} gallery images of {SET['test_ids']} unseen synthetic people.", "",
        "| TPR@FPR=1e-4 | TPR@FPR=1e-3 | TPR@FPR=1e-2 | ROC AUC |", "|---|---|---|---|",
        "| " + " | ".join(f"{100 * r['tpr']:.2f} %" for r in result["verification"]["at_fpr"])
        + f" | {100 * result['verification']['auc']:.2f} % |", "",
        "| DIR@FPIR=0.01 | DIR@FPIR=0.05 | DIR@FPIR=0.1 | gallery images | non-mated searches |", "|---|---|---|---|---|",
        "| " + " | ".join(f"{100 * r['dir']:.2f} %" for r in result["open_set"]["at_fpir"])
        + f" | {result['open_set']['gallery_images']} | {result['open_set']['non_mated_searches']} |", "",
        "| calibrated for | threshold | FPR on calibration set | FPR on unseen people | TPR on unseen people "
        "| strangers matched (gallery ≈ N) |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in result["calibrated"]:
        achieved = row["calibration"]["achieved"]
        calib_rate = achieved.get("fpr", achieved.get("fpir"))
        stranger = row["unseen_stranger_accept"]
        target = row["target"]
        name = f"FPR {target['fpr']:g}" if "fpr" in target else f"FPIR {target['fpir']:g}, gallery {target['gallery_size']}"
        lines.append(f"| {name} | {row['threshold']:.4f} | {calib_rate:.4g} | {row['unseen_fpr']:.4g} | "
                     f"{100 * row['unseen_tpr']:.2f} % | {100 * stranger['rate']:.1f} % (N = {stranger['gallery_size']}) |")
    return "\n".join(lines) + "\n"


def _ids(samples) -> tuple[np.ndarray, np.ndarray]:
    return np.array([s.pid for s in samples]), np.array([s.camid for s in samples])


if __name__ == "__main__":
    main()
