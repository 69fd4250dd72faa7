"""Open-set decisions: "same person or not?" (verification) and "is this stranger in my gallery?" (open-set search).

Everything is exact and vectorised: a threshold `t` accepts a pair when its distance is `<= t`. For a target false
rate `f` over `n` negatives, at most `k = floor(f·n)` of them may be accepted, so the threshold is the largest float
below the (k+1)-th smallest negative distance — ties included, the achieved rate never exceeds the target. When
`f·n < 1` no negative may be accepted at all and the result says the target is not resolved by this much data.

Pairs follow the ranking protocol: under `cross-camera`, pairs of the same identity from the same camera are left
out (they are not re-identification); under `no-camera`, every query–gallery pair counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spanet.errors import SpanetError
from spanet.outputs import write_json

__all__ = [
    "FPR_TARGETS",
    "FPIR_TARGETS",
    "pair_distances",
    "threshold_at_rate",
    "verification_metrics",
    "open_set_identification",
    "calibrate_threshold",
    "save_calibration",
    "load_calibration",
    "is_unknown",
    "nearest_is_unknown",
]

FPR_TARGETS = (1e-4, 1e-3, 1e-2)
FPIR_TARGETS = (0.01, 0.05, 0.1)
_HISTOGRAM_BINS = 40


def pair_distances(
    distances: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray,
    *, cross_camera: bool = True,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(positive, negative) distances of all query–gallery pairs the protocol counts."""
    same_id = q_pids[:, None] == g_pids[None, :]  # (Q, G)
    counted = ~(same_id & (q_camids[:, None] == g_camids[None, :])) if cross_camera else np.ones_like(same_id)
    return distances[same_id & counted], distances[~same_id]


def threshold_at_rate(negatives: np.ndarray, target: float) -> tuple[float, bool]:
    """(largest threshold whose false rate over `negatives` is <= target, whether `target·n >= 1`)."""
    negatives = np.asarray(negatives, dtype=np.float64).ravel()
    if negatives.size == 0:
        raise SpanetError("no negative pairs (every image is of one identity); a false rate needs two identities")
    allowed = math.floor(target * negatives.size)
    if allowed >= negatives.size:
        return math.inf, True
    kth = np.partition(negatives, allowed)[allowed]  # (allowed+1)-th smallest
    return float(np.nextafter(kth, -np.inf)), allowed >= 1


def verification_metrics(positives: np.ndarray, negatives: np.ndarray) -> dict[str, Any]:
    """TPR at FPR 1e-4 / 1e-3 / 1e-2 with thresholds, ROC AUC, a short ROC and the two distance histograms."""
    positives = np.asarray(positives, dtype=np.float64).ravel()
    negatives = np.sort(np.asarray(negatives, dtype=np.float64).ravel())
    if positives.size == 0:
        raise SpanetError("no positive pairs (no identity has two counted images); verification needs them")
    at_fpr = []
    for target in FPR_TARGETS:
        threshold, resolved = threshold_at_rate(negatives, target)
        at_fpr.append({
            "fpr_target": target, "threshold": threshold, "resolved": resolved,
            "tpr": float(np.mean(positives <= threshold)), "fpr": float(np.mean(negatives <= threshold)),
        })  # fmt: skip
    # AUC = P(positive closer than negative) + ½ P(tie), from ranks in the sorted negatives.
    below = np.searchsorted(negatives, positives, side="left")
    tied = np.searchsorted(negatives, positives, side="right") - below
    auc = float(np.mean((negatives.size - below - tied + 0.5 * tied) / negatives.size))
    edges = np.linspace(min(positives.min(), negatives[0]), max(positives.max(), negatives[-1]), _HISTOGRAM_BINS + 1)
    roc_fpr = np.logspace(-5, 0, 21)
    roc_tpr = [float(np.mean(positives <= threshold_at_rate(negatives, f)[0])) for f in roc_fpr]
    return {
        "pairs": {"positive": int(positives.size), "negative": int(negatives.size)},
        "at_fpr": at_fpr,
        "auc": auc,
        "roc": {"fpr": [float(f) for f in roc_fpr], "tpr": roc_tpr},
        "histogram": {
            "edges": [float(e) for e in edges],
            "positive": np.histogram(positives, bins=edges)[0].tolist(),
            "negative": np.histogram(negatives, bins=edges)[0].tolist(),
        },
    }


def open_set_identification(
    distances: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray,
    *, cross_camera: bool = True, held_out_fraction: float = 0.5, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """DIR at FPIR 1% / 5% / 10%, with a seeded share of the query identities held out of the gallery.

    Held-out identities' queries are non-mated searches (the right answer is "not in the gallery"); a non-mated
    search is a false positive when its nearest gallery distance is within the threshold. A mated search counts as
    detected and identified when its nearest counted gallery entry is a true match within the threshold.
    """
    ids = np.unique(q_pids)
    if ids.size < 2:
        raise SpanetError("open-set identification needs queries of at least 2 identities (some held out)")
    rng = np.random.default_rng(seed)
    held = rng.permutation(ids)[: max(1, min(ids.size - 1, round(held_out_fraction * ids.size)))]
    held_q = np.isin(q_pids, held)
    enrolled_g = ~np.isin(g_pids, held)
    d = np.where(enrolled_g[None, :], distances.astype(np.float64), np.inf)
    if cross_camera:  # same identity, same camera: not counted, as in the ranking
        d = np.where((q_pids[:, None] == g_pids[None, :]) & (q_camids[:, None] == g_camids[None, :]), np.inf, d)
    nearest = np.argmin(d, axis=1)
    nearest_d = d[np.arange(len(d)), nearest]
    mated = ~held_q & np.isfinite(nearest_d)
    has_match = (np.isfinite(np.where(q_pids[:, None] == g_pids[None, :], d, np.inf))).any(axis=1)
    mated &= has_match
    correct = g_pids[nearest] == q_pids
    non_mated = nearest_d[held_q]
    rows = []
    for target in FPIR_TARGETS:
        threshold, resolved = threshold_at_rate(non_mated, target)
        rows.append({
            "fpir_target": target, "threshold": threshold, "resolved": resolved,
            "dir": float(np.mean(correct[mated] & (nearest_d[mated] <= threshold))) if mated.any() else None,
            "fpir": float(np.mean(non_mated <= threshold)),
        })  # fmt: skip
    return {
        "held_out_identities": int(held.size), "mated_searches": int(mated.sum()),
        "non_mated_searches": int(held_q.sum()), "gallery_images": int(enrolled_g.sum()),
        "rank1_closed_set": float(np.mean(correct[mated])) if mated.any() else None, "at_fpir": rows,
    }  # fmt: skip


def calibrate_threshold(
    features: np.ndarray, pids: np.ndarray, camids: np.ndarray, *, target_fpr: float | None = None,
    target_fpir: float | None = None, gallery_size: int | None = None, cross_camera: bool = True, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The threshold meeting a pairwise FPR, or an FPIR for galleries of `gallery_size` images, on these images.

    FPIR is simulated: every image searches a seeded random gallery of `gallery_size` images of other identities;
    the threshold lets `target_fpir` of those searches accept their nearest entry.
    """
    from spanet.evaluation.distance import pairwise_distances

    if (target_fpr is None) == (target_fpir is None):
        raise SpanetError("give exactly one of --target-fpr and --target-fpir")
    distances = pairwise_distances(features, features).astype(np.float64)  # (N, N)
    pids, camids = np.asarray(pids), np.asarray(camids)
    if target_fpr is not None:
        positives, negatives = _pairs_within(distances, pids, camids, cross_camera=cross_camera)
        threshold, resolved = threshold_at_rate(negatives, target_fpr)
        achieved = {"fpr": float(np.mean(negatives <= threshold)), "tpr": float(np.mean(positives <= threshold))}
        target: dict[str, Any] = {"fpr": target_fpr}
        counts = {"negative_pairs": int(negatives.size), "positive_pairs": int(positives.size)}
    else:
        if gallery_size is None or gallery_size < 1:
            raise SpanetError("--target-fpir needs --gallery-size N (how many images the searched gallery holds)")
        nearest = _nearest_in_random_galleries(distances, pids, gallery_size=gallery_size, seed=seed)
        threshold, resolved = threshold_at_rate(nearest, target_fpir)
        achieved = {"fpir": float(np.mean(nearest <= threshold))}
        target = {"fpir": target_fpir, "gallery_size": gallery_size}
        counts = {"non_mated_searches": int(nearest.size)}
    return {"threshold": threshold, "target": target, "resolved": resolved, "achieved": achieved, **counts}


def is_unknown(distance: float, threshold: float | None) -> bool:
    """The open-set rule every search applies: a match farther than the threshold is an unknown person (and with no
    threshold every match is known)."""
    return threshold is not None and not distance <= threshold  # NaN is unknown too


def nearest_is_unknown(distances: Sequence[float], threshold: float | None) -> bool:
    """A query is unknown when it has no match within the threshold (its nearest is beyond, or there is none)."""
    return threshold is not None and all(is_unknown(d, threshold) for d in distances)


def save_calibration(path: str | Path, record: dict[str, Any]) -> Path:
    """Write a calibration file: threshold, metric, model fingerprints, target and what it was calibrated on."""
    missing = [key for key in _CALIBRATION_KEYS if key not in record]
    if missing:
        raise SpanetError(f"calibration record lacks {', '.join(missing)}")
    return write_json(path, record, default=str)


def load_calibration(path: str | Path, *, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a calibration file; with `info` (a model's fingerprints), refuse one made for another model."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpanetError(f"no calibration file {path}; run `spanet calibrate` first or pass a number") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SpanetError(f"cannot read calibration file {path} ({exc}); run `spanet calibrate` again") from None
    if not isinstance(record, dict) or any(key not in record for key in _CALIBRATION_KEYS):
        raise SpanetError(f"{path} is not a calibration file (needs {', '.join(_CALIBRATION_KEYS)})")
    if info is not None:
        for key in ("weights_fingerprint", "args_fingerprint"):
            if info.get(key) is not None and record[key] != info.get(key):
                raise SpanetError(
                    f"{path} was calibrated for another model ({key} {record[key]} != {info.get(key)}); "
                    "run `spanet calibrate` with this checkpoint"
                )
        if record.get("feature_kind") not in (None, info.get("kind")):
            raise SpanetError(f"{path} was calibrated on {record['feature_kind']} features, not {info.get('kind')}")
    return record


_CALIBRATION_KEYS = ("threshold", "metric", "weights_fingerprint", "args_fingerprint", "target", "calibration_data")


def _pairs_within(
    distances: np.ndarray, pids: np.ndarray, camids: np.ndarray, *, cross_camera: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) distances of every unordered pair of distinct images, same-camera positives dropped."""
    rows, cols = np.triu_indices(len(pids), k=1)
    d = distances[rows, cols]
    same_id = pids[rows] == pids[cols]
    counted = ~(same_id & (camids[rows] == camids[cols])) if cross_camera else np.ones_like(same_id)
    return d[same_id & counted], d[~same_id]


def _nearest_in_random_galleries(
    distances: np.ndarray, pids: np.ndarray, *, gallery_size: int, seed: int
) -> np.ndarray:
    """Per image: nearest distance within a seeded random gallery of `gallery_size` images of other identities."""
    rng = np.random.default_rng(seed)
    nearest = np.empty(len(pids), dtype=np.float64)
    for i in range(len(pids)):
        others = np.flatnonzero(pids != pids[i])
        if others.size < gallery_size:
            raise SpanetError(
                f"--gallery-size {gallery_size} is larger than the {others.size} images of other identities in the "
                "calibration data; use a smaller size or more calibration images"
            )
        nearest[i] = distances[i, rng.choice(others, size=gallery_size, replace=False)].min()
    return nearest
