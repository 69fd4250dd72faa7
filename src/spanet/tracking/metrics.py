"""How well global ids follow people across cameras: cross-camera IDF1 (motmetrics) and identity purity.

All cameras are joined into one sequence (camera c's frame f becomes frame c·L + f, L the longest sequence), so a
person's boxes count as correctly identified only if one global id follows them from camera to camera — the usual
multi-camera IDF1. Boxes match by IoU ≥ 0.5. Identity purity: the share of matched boxes whose global id's most
frequent true person is their own (1.0 when no global id mixes two people, whatever the number of ids).
motmetrics is a benchmark/test dependency (the `test` extra), imported only here and only when called.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np

from spanet.errors import SpanetError
from spanet.tracking.mot import Tracks

__all__ = ["iou_distance", "cross_camera_scores"]


def iou_distance(a: np.ndarray, b: np.ndarray, *, max_distance: float = 0.5) -> np.ndarray:
    """1 − IoU between x, y, w, h boxes (n, m), NaN (no match) above `max_distance`. motmetrics' own `iou_matrix`
    calls `np.asfarray`, which numpy 2 removed."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=2)
    union = a[:, None, 2:].prod(axis=2) + b[None, :, 2:].prod(axis=2) - inter
    dist = 1 - inter / np.maximum(union, 1e-12)
    return np.where(dist > max_distance, np.nan, dist)


def cross_camera_scores(truth: Seq[Tracks], predicted: Seq[Tracks]) -> dict[str, float]:
    """IDF1, IDP, IDR, ID switches, identity purity and id counts of `predicted` (global ids) against `truth` (true
    person ids), one `Tracks` per camera in the same order."""
    try:
        import motmetrics as mm
    except ImportError:
        raise SpanetError("cross-camera scores need motmetrics: pip install motmetrics (in the `test` extra)") from None
    if len(truth) != len(predicted):
        raise SpanetError(f"{len(truth)} ground-truth files but {len(predicted)} prediction files")
    length = max([int(t.frames.max()) for t in (*truth, *predicted) if len(t)] or [0])
    acc = mm.MOTAccumulator(auto_id=False)
    for camera, (gt, hyp) in enumerate(zip(truth, predicted)):
        for frame in np.unique(np.concatenate([gt.frames, hyp.frames])):
            g, h = gt.frames == frame, hyp.frames == frame
            acc.update(gt.ids[g].tolist(), hyp.ids[h].tolist(), iou_distance(gt.boxes[g], hyp.boxes[h]),
                       frameid=int(camera * length + frame))  # fmt: skip
    summary = mm.metrics.create().compute(acc, metrics=["idf1", "idp", "idr", "num_switches"], name="all")
    events = acc.mot_events
    matches = events[events["Type"] == "MATCH"]
    true_ids, hyp_ids = matches["OId"].to_numpy().astype(np.int64), matches["HId"].to_numpy().astype(np.int64)
    pure = sum(int(np.unique(true_ids[hyp_ids == h], return_counts=True)[1].max()) for h in np.unique(hyp_ids))
    return {
        "idf1": float(summary["idf1"].iloc[0]), "idp": float(summary["idp"].iloc[0]),
        "idr": float(summary["idr"].iloc[0]), "id_switches": int(summary["num_switches"].iloc[0]),
        "purity": pure / len(true_ids) if len(true_ids) else 1.0,
        "global_ids": int(len(np.unique(np.concatenate([p.ids for p in predicted])))),
        "true_people": int(len(np.unique(np.concatenate([t.ids for t in truth])))),
    }  # fmt: skip
