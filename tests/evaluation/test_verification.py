"""Verification and open-set maths against brute force over the pairs, and the calibration file round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from spanet.errors import SpanetError
from spanet.evaluation.verification import (
    FPR_TARGETS,
    calibrate_threshold,
    load_calibration,
    open_set_identification,
    pair_distances,
    save_calibration,
    threshold_at_rate,
    verification_metrics,
)


def _data(seed: int = 0, num_q: int = 60, num_g: int = 300, ids: int = 20, cams: int = 3):
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, ids, num_q), rng.integers(0, ids, num_g)
    q_cams, g_cams = rng.integers(0, cams, num_q), rng.integers(0, cams, num_g)
    # same-id pairs nearer on average, with exact ties from rounding so the tie rule is exercised
    distances = np.round(rng.random((num_q, num_g)) + 0.6 * (q_pids[:, None] != g_pids[None, :]), 2)
    return distances.astype(np.float32), q_pids, g_pids, q_cams, g_cams


def _brute_force_tpr_at_fpr(distances, q_pids, g_pids, q_cams, g_cams, target):
    """Try every distinct distance (and -inf) as threshold; keep the best TPR with FPR <= target."""
    positives, negatives = [], []
    for i in range(distances.shape[0]):
        for j in range(distances.shape[1]):
            if q_pids[i] == g_pids[j]:
                if q_cams[i] != g_cams[j]:
                    positives.append(float(distances[i, j]))
            else:
                negatives.append(float(distances[i, j]))
    best = 0.0
    for t in sorted(set(positives) | set(negatives)):
        fpr = sum(d <= t for d in negatives) / len(negatives)
        if fpr <= target:
            best = max(best, sum(d <= t for d in positives) / len(positives))
    return best


def test_tpr_at_fpr_equals_brute_force_exactly() -> None:
    data = _data()
    positives, negatives = pair_distances(*data)
    metrics = verification_metrics(positives, negatives)
    for row, target in zip(metrics["at_fpr"], FPR_TARGETS):
        assert row["tpr"] == _brute_force_tpr_at_fpr(*data, target)
        assert row["fpr"] <= target
        assert row["resolved"] == (target * len(negatives) >= 1)
    assert metrics["pairs"]["positive"] + metrics["pairs"]["negative"] + _same_camera_pairs(data) == data[0].size
    assert 0.5 < metrics["auc"] <= 1.0
    assert sum(metrics["histogram"]["positive"]) == len(positives)


def _same_camera_pairs(data) -> int:
    _, q_pids, g_pids, q_cams, g_cams = data
    return int(((q_pids[:, None] == g_pids) & (q_cams[:, None] == g_cams)).sum())


def test_threshold_never_accepts_more_than_the_target_even_with_ties() -> None:
    negatives = np.array([1.0, 1.0, 1.0, 2.0, 3.0])
    threshold, resolved = threshold_at_rate(negatives, 0.4)  # 2 allowed, but 3 tie at 1.0
    assert threshold < 1.0 and resolved
    assert threshold_at_rate(negatives, 0.6)[0] == np.nextafter(2.0, -np.inf)
    assert threshold_at_rate(negatives, 1.0)[0] == math.inf
    assert threshold_at_rate(negatives, 0.1)[1] is False  # 0.1 * 5 < 1 negative: not resolved


def test_open_set_identification_brute_force() -> None:
    distances, q_pids, g_pids, q_cams, g_cams = _data(seed=1)
    result = open_set_identification(distances, q_pids, g_pids, q_cams, g_cams, seed=3)
    held = set(np.random.default_rng(3).permutation(np.unique(q_pids))[: result["held_out_identities"]].tolist())
    nearest_non_mated, mated = [], []
    for i in range(len(q_pids)):
        options = [(float(distances[i, j]), j) for j in range(len(g_pids)) if g_pids[j] not in held
                   and not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        d, j = min(options)  # min over (distance, index): ties go to the earlier gallery entry, like argmin
        if q_pids[i] in held:
            nearest_non_mated.append(d)
        elif any(g_pids[k] == q_pids[i] for _, k in options):
            mated.append((d, g_pids[j] == q_pids[i]))
    assert result["non_mated_searches"] == len(nearest_non_mated) and result["mated_searches"] == len(mated)
    for row in result["at_fpir"]:
        t = row["threshold"]
        assert row["fpir"] == np.mean([d <= t for d in nearest_non_mated]) <= row["fpir_target"]
        assert row["dir"] == np.mean([ok and d <= t for d, ok in mated])


def test_calibrate_fpr_and_fpir() -> None:
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(30), 4)
    centres = rng.normal(size=(30, 16))
    features = (centres[pids] + 0.4 * rng.normal(size=(len(pids), 16))).astype(np.float32)
    camids = np.tile(np.arange(4), 30)
    result = calibrate_threshold(features, pids, camids, target_fpr=0.01)
    assert result["achieved"]["fpr"] <= 0.01 and result["negative_pairs"] == 120 * 119 // 2 - 30 * 6
    assert result["positive_pairs"] == 30 * 6
    fpir = calibrate_threshold(features, pids, camids, target_fpir=0.1, gallery_size=50)
    assert fpir["achieved"]["fpir"] <= 0.1 and fpir["non_mated_searches"] == 120
    with pytest.raises(SpanetError, match="gallery-size"):
        calibrate_threshold(features, pids, camids, target_fpir=0.1, gallery_size=500)
    with pytest.raises(SpanetError, match="exactly one"):
        calibrate_threshold(features, pids, camids)


def test_calibration_file_round_trip_and_fingerprint_check(tmp_path: Path) -> None:
    record = {"threshold": 0.5, "metric": "euclidean", "weights_fingerprint": "w1", "args_fingerprint": "a1",
              "target": {"fpr": 1e-3}, "calibration_data": {"images": 10}}
    path = save_calibration(tmp_path / "c.json", record)
    assert load_calibration(path, info={"weights_fingerprint": "w1", "args_fingerprint": "a1"}) == record
    with pytest.raises(SpanetError, match="another model"):
        load_calibration(path, info={"weights_fingerprint": "w2", "args_fingerprint": "a1"})
    with pytest.raises(SpanetError, match="lacks"):
        save_calibration(tmp_path / "d.json", {"threshold": 1.0})
    with pytest.raises(SpanetError, match="spanet calibrate"):
        load_calibration(tmp_path / "missing.json")


def test_the_unknown_rule_is_one_function_used_by_search_and_service() -> None:
    from spanet.evaluation.verification import is_unknown, nearest_is_unknown

    assert not is_unknown(0.5, None) and not is_unknown(0.5, 0.5) and is_unknown(0.51, 0.5)
    assert is_unknown(float("nan"), 0.5)
    assert nearest_is_unknown([], 0.5) and nearest_is_unknown([0.7, 0.9], 0.5) and not nearest_is_unknown([0.2, 0.9], 0.5)
    assert not nearest_is_unknown([], None)
