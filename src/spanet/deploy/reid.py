"""The appearance model a multi-object tracker calls: boxes on a BGR frame in, L2-normalised features out.

`ReID.get_features(xyxy, img)` is the contract boxmot's trackers call on their re-ID model (`img` is what OpenCV
decodes: H×W×3 uint8 in BGR order), so `tracker.model = spanet.ReID(...)` or
`tracker.update(dets, frame, embs=reid.get_features(dets[:, :4], frame))` both work. It only crops: each box is
clipped to the frame, cut out, turned to RGB and handed to `spanet.features.extract_features`, the one embedding
loop, which resizes and normalises it with the checkpoint's evaluation transform. A box with no pixels left after
clipping gives a zero row (distance 1 to everything, never a match) and is counted in `skipped_boxes`.

Each row is normalised as a whole (unit length), unlike `FeatureExtractor` whose "parts" feature has unit-length
stripes: trackers compare features by cosine, which then equals 1 − squared Euclidean / 2.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from spanet.errors import SpanetError
from spanet.features import EmbeddingKind, FeatureExtractor

__all__ = ["ReID", "crop_boxes", "clip_boxes"]


def clip_boxes(xyxy: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """Integer pixel boxes (N, 4) x0, y0, x1, y1 inside a height×width frame: start floored, end ceiled, clipped.

    A box that leaves no pixel (outside the frame, zero or negative size, NaN) comes back with x1 <= x0 or y1 <= y0.
    """
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4).copy()
    boxes[~np.isfinite(boxes).all(axis=1)] = 0.0  # a box with a NaN or inf coordinate: no pixel, not a guess
    starts = np.floor(boxes[:, :2])
    ends = np.ceil(boxes[:, 2:])
    limits = np.array([width, height], dtype=np.float64)
    starts = np.clip(starts, 0, limits)
    ends = np.clip(ends, 0, limits)
    return np.concatenate([starts, ends], axis=1).astype(np.int64)


def crop_boxes(xyxy: np.ndarray, img: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """RGB crops of the boxes of BGR frame `img` that keep at least one pixel, and their row numbers."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        shape = getattr(img, "shape", None)
        raise SpanetError(f"get_features needs an H×W×3 uint8 BGR frame (what cv2.imread gives), got shape {shape}")
    height, width = img.shape[:2]
    boxes = clip_boxes(xyxy, height=height, width=width)
    crops, rows = [], []
    for row, (x0, y0, x1, y1) in enumerate(boxes):
        if x1 > x0 and y1 > y0:
            crops.append(np.ascontiguousarray(img[y0:y1, x0:x1, ::-1]))  # BGR -> RGB
            rows.append(row)
    return crops, rows


class ReID:
    """A trained SPANet as a tracker's appearance model.

    >>> reid = ReID("runs/market/last.pt", device="cpu")
    >>> embs = reid.get_features(dets[:, :4], frame)   # (N, D) float32, unit rows; zero rows for empty boxes

    All boxes of one call go through the model in batches of `batch_size` (one forward pass per batch).
    `amp` as in `FeatureExtractor` ("auto": float16 on CUDA, bfloat16 on CPUs with native bf16, else float32);
    `channels_last` (None: as `choose_precision` decides) stores the weights in NHWC order.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        *,
        device: str | torch.device = "auto",
        batch_size: int = 32,
        kind: EmbeddingKind = "parts",
        amp: bool | str = False,
        channels_last: bool | None = None,
    ) -> None:
        self.extractor = FeatureExtractor(checkpoint, device=device, batch_size=batch_size, kind=kind, amp=amp,
                                          channels_last=channels_last)  # fmt: skip
        self.skipped_boxes = 0  # boxes that had no pixel inside their frame, over all calls
        self.last_skipped = 0  # the same for the latest call

    @property
    def device(self) -> torch.device:
        return self.extractor.device

    @property
    def feature_dim(self) -> int:
        return self.extractor.feature_dim

    @property
    def input_size(self) -> tuple[int, int]:
        return self.extractor.input_size

    def get_features(self, xyxy: np.ndarray | Sequence[Sequence[float]], img: np.ndarray) -> np.ndarray:
        """(N, D) float32 unit-length features of the N boxes (x0, y0, x1, y1 pixels) on BGR frame `img`."""
        boxes = np.asarray(xyxy, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] < 4:
            raise SpanetError(f"get_features needs boxes of shape (N, 4) x0, y0, x1, y1; got shape {boxes.shape}")
        crops, rows = crop_boxes(boxes[:, :4], img)
        self.last_skipped = len(boxes) - len(rows)
        self.skipped_boxes += self.last_skipped
        features = np.zeros((len(boxes), self.feature_dim), dtype=np.float32)
        if crops:
            features[rows] = self.embed_crops(crops)
        return features

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Unit-length features of RGB crops (H, W, 3) uint8, through the one embedding loop."""
        result = self.extractor.extract(crops, desc="reid")
        norms = np.linalg.norm(result.features, axis=1, keepdims=True)
        return result.features / np.maximum(norms, 1e-12)

    def __call__(self, xyxy: np.ndarray, img: np.ndarray) -> np.ndarray:
        return self.get_features(xyxy, img)
