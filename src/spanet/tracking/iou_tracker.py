"""A small IoU tracker: each frame's detections are matched to the live tracks by box overlap.

Matching is one optimal assignment per frame (Hungarian, `scipy.optimize.linear_sum_assignment`) on 1 − IoU with
the box the track is predicted at: its last box moved by its velocity (per frame, smoothed over frames) times the
frames since. A track seen once has no velocity yet: it is compared with buffered boxes instead (both boxes widened
by `buffer` × their width and height on each side, the buffered IoU of C-BIoU, Yang et al., WACV 2023), so a far,
narrow person who moves most of their width per frame still gets a track (plain IoU of two 10-px-wide boxes 9 px
apart is 0.05: every frame started a new track, and `spanet ingest` dropped them all as too short). Pairs below
`min_iou` stay unmatched. An unmatched detection starts a track; a track unseen for more than `max_missed` frames
ends. No appearance: enough for fixed cameras at normal frame rates, where a person moves a
fraction of their width per frame; the velocity keeps two people walking past each other apart. People walking
the same way at the same speed through each other can still swap ids; `spanet ingest`
keeps few crops per track, so a swap costs a mixed track, not a wrong gallery. boxmot's BoT-SORT with `spanet.ReID`
is the stronger choice where installed (docs/video.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IoUTracker", "iou_matrix"]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of x0, y0, x1, y1 boxes."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _buffered(boxes: np.ndarray, scale: float) -> np.ndarray:
    """x0, y0, x1, y1 boxes (N, 4) widened by `scale` × their width and height on each side."""
    size = np.column_stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]]).clip(0)  # (N, 2)
    return boxes + scale * np.column_stack([-size, size])


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    last_seen: int
    hits: int = 1
    velocity: np.ndarray | None = None  # box change per frame (x0, y0, x1, y1)

    def predicted(self, frame: int) -> np.ndarray:
        return self.box if self.velocity is None else self.box + self.velocity * (frame - self.last_seen)

    def move(self, box: np.ndarray, frame: int) -> None:
        step = (box - self.box) / max(1, frame - self.last_seen)
        self.velocity = step if self.velocity is None else 0.5 * self.velocity + 0.5 * step
        self.box, self.last_seen, self.hits = box, frame, self.hits + 1


class IoUTracker:
    """`update(detections, frame)` -> (M, 6) rows x0, y0, x1, y1, track id, score of the detections it placed."""

    def __init__(self, *, min_iou: float = 0.3, max_missed: int = 5, buffer: float = 0.5) -> None:
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.buffer = buffer  # for tracks without a velocity yet (seen once)
        self._live: list[_Track] = []
        self._next_id = 1

    def update(self, detections: np.ndarray, frame: int, image: np.ndarray | None = None) -> np.ndarray:
        """Assign track ids to one frame's detections (N, 5): x0, y0, x1, y1, score; `frame` counts up. `image` (the
        frame itself) is not used: boxes alone decide."""
        dets = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
        self._live = [t for t in self._live if frame - t.last_seen <= self.max_missed]
        ids = np.zeros(len(dets), dtype=np.int64)
        matched = set()
        if self._live and len(dets):
            from scipy.optimize import linear_sum_assignment

            overlap = iou_matrix(np.stack([t.predicted(frame) for t in self._live]), dets[:, :4])  # (T, N)
            young = np.array([t.velocity is None for t in self._live])
            if young.any():
                buffered = iou_matrix(_buffered(np.stack([t.box for t in self._live]), self.buffer),
                                      _buffered(dets[:, :4], self.buffer))  # fmt: skip
                overlap = np.where(young[:, None], buffered, overlap)
            rows, cols = linear_sum_assignment(1.0 - overlap)
            for r, c in zip(rows, cols):
                if overlap[r, c] >= self.min_iou:
                    self._live[r].move(dets[c, :4], frame)
                    ids[c] = self._live[r].track_id
                    matched.add(int(c))
        for c in range(len(dets)):
            if c not in matched:
                self._live.append(_Track(track_id=self._next_id, box=dets[c, :4], last_seen=frame))
                ids[c] = self._next_id
                self._next_id += 1
        return np.column_stack([dets[:, :4], ids, dets[:, 4]]) if len(dets) else np.zeros((0, 6))
