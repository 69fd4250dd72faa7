"""Choosing the few crops of a track worth enrolling: sharp, large, whole, and spread over the track's life.

Quality of one box: sqrt(area) × log(1 + variance of the Laplacian) of the grey crop resized to 64 px high — large
and sharp wins, motion blur and tiny far-away boxes lose. A box within `edge` pixels of the frame border is probably
cut off (a person walking in or out), so its quality is divided by 10: used only when the track has nothing else.
Per track, candidate crops are kept for every `stride`-th frame (the stride doubles whenever more than 4·K are held,
so memory stays bounded on long tracks); at the end the track's life is cut into K equal spans of time and the best
candidate of each span is kept, so the K crops show the person at different moments, not K near-copies of one frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["crop_quality", "CropPick", "CropSelector"]


def crop_quality(crop: np.ndarray, *, cut: bool) -> float:
    """The quality score of one BGR (or RGB) crop; `cut` when the box touches the frame edge."""
    import cv2

    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (max(1, round(grey.shape[1] * 64 / grey.shape[0])), 64), interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(small, cv2.CV_64F).var())
    score = float(np.sqrt(crop.shape[0] * crop.shape[1])) * float(np.log1p(sharpness))
    return score / 10.0 if cut else score


@dataclass(frozen=True)
class CropPick:
    """One chosen crop: RGB pixels, the frame it came from, its box (x0, y0, x1, y1) and quality."""

    frame: int
    box: tuple[int, int, int, int]
    quality: float
    rgb: np.ndarray


@dataclass
class _Candidates:
    picks: list[CropPick] = field(default_factory=list)
    stride: int = 1
    seen: int = 0  # boxes of the track so far


class CropSelector:
    """Collects candidate crops track by track (`offer`) and returns the best K of each (`finish`)."""

    def __init__(self, *, per_track: int = 4, edge: int = 2, min_size: tuple[int, int] = (16, 32)) -> None:
        self.per_track = per_track
        self.edge = edge
        self.min_width, self.min_height = min_size
        self._tracks: dict[int, _Candidates] = {}

    def offer(self, frame: np.ndarray, tracked: np.ndarray, index: int) -> None:
        """Consider the boxes `tracked` (M, 6: x0, y0, x1, y1, track id, score) of BGR `frame` number `index`."""
        height, width = frame.shape[:2]
        for x0, y0, x1, y1, track_id, _ in np.asarray(tracked, dtype=np.float64).reshape(-1, 6):
            state = self._tracks.setdefault(int(track_id), _Candidates())
            state.seen += 1
            if (state.seen - 1) % state.stride:
                continue
            box = (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))), min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1))))
            if box[2] - box[0] < self.min_width or box[3] - box[1] < self.min_height:
                continue
            cut = x0 < self.edge or y0 < self.edge or x1 > width - self.edge or y1 > height - self.edge
            crop = frame[box[1] : box[3], box[0] : box[2]]
            state.picks.append(CropPick(frame=index, box=box, quality=crop_quality(crop, cut=cut),
                                        rgb=np.ascontiguousarray(crop[:, :, ::-1])))  # fmt: skip
            if len(state.picks) > 4 * self.per_track:
                state.picks, state.stride = state.picks[::2], state.stride * 2

    def finish(self, *, min_boxes: int = 3) -> dict[int, list[CropPick]]:
        """The chosen crops of every track seen in at least `min_boxes` frames (shorter ones are mostly false
        detections), in frame order; the selector is then empty."""
        chosen = {}
        for track_id, state in sorted(self._tracks.items()):
            if state.seen < min_boxes or not state.picks:
                continue
            frames = np.array([p.frame for p in state.picks])
            edges = np.linspace(frames[0], frames[-1] + 1, self.per_track + 1)
            runs = [np.flatnonzero((frames >= lo) & (frames < hi)) for lo, hi in zip(edges[:-1], edges[1:])]
            chosen[track_id] = [max((state.picks[i] for i in run), key=lambda p: p.quality) for run in runs if run.size]
        self._tracks = {}
        return chosen
