"""boxmot's BoT-SORT behind `spanet ingest`'s tracker contract, with the gallery's own model as its appearance model.

`spanet ingest --tracker botsort` tracks each camera with `boxmot.BotSort` (Kalman motion, IoU, camera motion
compensation off for fixed cameras) whose `reid_model` is `spanet.ReID` of the ingest checkpoint, instead of the
small IoU tracker (`spanet.tracking.iou_tracker`). boxmot is optional: `pip install boxmot`. Each output row keeps the
box of the detection BoT-SORT matched (its `det_ind` column), not the Kalman estimate, so the crops enrolled are the
detector's boxes whichever tracker ran. BoT-SORT takes confidences in [0, 1] (boxmot refuses others); detector scores
outside it — HOG's SVM margins, any MOT file's scores — are clipped into it, so HOG boxes with a margin of 1 or more
count as sure and BoT-SORT's own thresholds (0.1 to keep a box, 0.6 to start a track) apply to the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spanet.errors import SpanetError

__all__ = ["BotSortTracker"]


class BotSortTracker:
    """`update(detections, frame, image)` -> (M, 6) rows x0, y0, x1, y1, track id, score (as `IoUTracker`)."""

    def __init__(self, reid: Any, *, fps: float) -> None:
        self._tracker = self.require().BotSort(reid_model=reid, use_cmc=False, frame_rate=max(1, int(round(fps))))

    @staticmethod
    def require() -> Any:
        """The boxmot module, or one clear error when it is not installed."""
        try:
            import boxmot
        except ImportError:
            raise SpanetError("--tracker botsort needs boxmot: pip install boxmot (or use --tracker iou)") from None
        return boxmot

    def update(self, detections: np.ndarray, frame: int, image: np.ndarray | None = None) -> np.ndarray:
        """Track one frame's detections (N, 5: x0, y0, x1, y1, score) on its BGR `image`; `frame` is unused (BoT-SORT
        counts the calls). The output score is the clipped one."""
        if image is None:
            raise SpanetError("BotSortTracker.update needs the frame's image: BoT-SORT embeds the boxes on it")
        dets = np.asarray(detections, dtype=np.float32).reshape(-1, 5)
        rows = np.column_stack([dets[:, :4], dets[:, 4].clip(0.0, 1.0), np.zeros(len(dets), dtype=np.float32)])
        out = np.asarray(self._tracker.update(rows, image), dtype=np.float64)
        if out.size == 0:
            return np.zeros((0, 6))
        out = np.atleast_2d(out)
        matched = out[:, 7].astype(np.int64)  # det_ind: the detection each output row was matched to
        known = (matched >= 0) & (matched < len(dets))
        boxes = np.where(known[:, None], dets[np.where(known, matched, 0), :4] if len(dets) else out[:, :4], out[:, :4])
        return np.column_stack([boxes, out[:, 4], out[:, 5]])
