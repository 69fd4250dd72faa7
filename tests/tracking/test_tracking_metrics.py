"""Cross-camera IDF1 / purity: perfect ids score 1, a person split or two people merged across cameras score less."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spanet.tracking.metrics import cross_camera_scores, iou_distance
from spanet.tracking.mot import Tracks

pytest.importorskip("motmetrics", reason="motmetrics is in the test extra: pip install motmetrics")


def camera(ids: list[int], frames: int = 4) -> Tracks:
    """Person k of `ids` stands at x = 50·k in every frame."""
    rows = [(f, pid, 50.0 * k) for f in range(1, frames + 1) for k, pid in enumerate(ids)]
    return Tracks(path=Path("x"), frames=np.array([r[0] for r in rows]), ids=np.array([r[1] for r in rows]),
                  boxes=np.array([[r[2], 10, 30, 80] for r in rows]), scores=np.ones(len(rows)))  # fmt: skip


def test_perfect_ids_score_one() -> None:
    truth = [camera([1, 2]), camera([2, 3])]
    scores = cross_camera_scores(truth, [camera([7, 8]), camera([8, 9])])  # any labels, consistent across cameras
    assert scores["idf1"] == pytest.approx(1.0) and scores["purity"] == pytest.approx(1.0)
    assert (scores["global_ids"], scores["true_people"]) == (3, 3)


def test_a_person_split_across_cameras_loses_idf1_but_stays_pure() -> None:
    truth = [camera([1, 2]), camera([2, 3])]
    scores = cross_camera_scores(truth, [camera([7, 8]), camera([5, 9])])  # person 2 gets a new id in camera 2
    assert scores["idf1"] == pytest.approx(0.75) and scores["purity"] == pytest.approx(1.0)


def test_two_people_merged_lose_purity() -> None:
    truth = [camera([1, 2]), camera([3])]
    scores = cross_camera_scores(truth, [camera([7, 8]), camera([7])])  # person 3 wrongly given person 1's id
    assert scores["purity"] == pytest.approx(2 / 3) and scores["idf1"] < 1


def test_iou_distance() -> None:
    d = iou_distance(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 10, 10], [50, 50, 5, 5]]))
    assert d[0, 0] == 0 and np.isnan(d[0, 1]) and np.isnan(d[0, 2])  # IoU 1/3 is below 0.5: no match
