"""Run a multi-object tracker over a MOTChallenge sequence: the loop between a folder of frames and a tracker.

Any tracker with boxmot's per-frame contract works: `tracker.update(dets, frame)` with `dets` an (N, 6) array of
x0, y0, x1, y1, confidence, class and `frame` the H×W×3 uint8 BGR image, returning rows that start with
x0, y0, x1, y1, track id. Appearance comes from the tracker itself, e.g. `BotSort(reid_model=spanet.ReID(...))`,
which calls `ReID.get_features(boxes, frame)` on every frame. No tracker library is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from spanet.tracking.mot import Sequence, Tracks, read_frame

__all__ = ["run_tracker"]


def run_tracker(tracker: Any, sequence: Sequence, detections: Tracks, *, path: str | Path = "tracker.txt") -> Tracks:
    """Feed every frame of `sequence` with its `detections` (x, y, w, h rows; their ids are ignored) to `tracker`
    and return what it outputs as `Tracks` (x, y, w, h, the tracker's ids, its confidences), labelled `path`."""
    # each list starts with an empty block, so a tracker that outputs nothing gives empty Tracks
    frames, ids, boxes, scores = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros((0, 4))], [np.zeros(0)]
    for frame in range(1, sequence.length + 1):
        rows = detections.frames == frame
        xywh = detections.boxes[rows]
        dets = np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:], detections.scores[rows], np.zeros(len(xywh))])
        bgr = np.ascontiguousarray(read_frame(sequence, frame))
        out = np.atleast_2d(np.asarray(tracker.update(dets.astype(np.float32), bgr), dtype=np.float64))
        if out.size == 0:
            continue
        frames.append(np.full(len(out), frame, dtype=np.int64))
        ids.append(out[:, 4].astype(np.int64))
        boxes.append(np.column_stack([out[:, :2], out[:, 2:4] - out[:, :2]]))
        scores.append(out[:, 5] if out.shape[1] > 5 else np.ones(len(out)))
    return Tracks(path=Path(path), frames=np.concatenate(frames), ids=np.concatenate(ids),
                  boxes=np.concatenate(boxes), scores=np.concatenate(scores))  # fmt: skip
