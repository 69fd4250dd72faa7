"""Person detectors behind one small interface: `detect(frame, index)` -> (N, 5) rows x0, y0, x1, y1, score.

- `HOGDetector`: OpenCV's built-in HOG + linear SVM people detector. No weights to download, so it works offline on
  a fresh machine; it finds upright people about 128 px tall or more (`min_height` upscales frames for smaller ones)
  and is slow and coarse next to a CNN detector.
- `ONNXDetector`: any YOLO-style ONNX model the user has, run with onnxruntime. The frame is letterboxed (padded
  with grey 114 to keep its aspect) to the model's input size, RGB, scaled to 0-1. Output layouts, told apart by
  shape: (1, 4 + classes, N) — Ultralytics YOLOv5u/v8/v11, rows cx, cy, w, h, class scores — and (1, N, 5 +
  classes) — classic YOLOv5, with an objectness column before the class scores. Boxes of `person_class` above
  `confidence` are kept after non-maximum suppression, in frame pixels.
- `MOTDetections`: precomputed detections from a MOTChallenge file (`frame, id, x, y, w, h, score, …`, 1-based
  frames), e.g. a stronger detector run elsewhere, or a sequence's `gt/gt.txt`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from spanet.errors import SpanetError

__all__ = ["Detector", "HOGDetector", "ONNXDetector", "MOTDetections", "letterbox"]


class Detector(Protocol):
    """Finds people in one BGR frame; `index` is the frame's 0-based number in its footage. `name` tells detectors
    (and their settings) apart: ingested footage is recorded per detector name."""

    name: str

    def detect(self, frame: np.ndarray, index: int) -> np.ndarray: ...


class HOGDetector:
    """OpenCV's default people detector (Dalal-Triggs HOG + linear SVM)."""

    def __init__(self, *, min_height: int = 128, min_score: float = 0.3, scale: float = 1.05) -> None:
        import cv2

        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.upscale = max(1.0, 128.0 / max(1, min_height))  # its window is 64×128: smaller people need a bigger frame
        self.min_score = min_score
        self.scale = scale
        self.name = f"hog{min_height}-{min_score:g}"

    def detect(self, frame: np.ndarray, index: int) -> np.ndarray:
        import cv2

        image = frame
        if self.upscale > 1.0:
            image = cv2.resize(frame, None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_LINEAR)
        rects, weights = self._hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=self.scale)
        if len(rects) == 0:
            return np.zeros((0, 5), dtype=np.float32)
        rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4) / self.upscale  # x, y, w, h
        scores = np.asarray(weights, dtype=np.float32).reshape(-1)
        rows = np.column_stack([rects[:, :2], rects[:, :2] + rects[:, 2:], scores])
        return rows[scores >= self.min_score]


class MOTDetections:
    """Detections read from a MOTChallenge file (its ids are ignored)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from spanet.tracking.mot import read_tracks

        table = read_tracks(path)
        self.path = Path(path)
        self.name = f"mot-{_digest(self.path)}"
        self._by_frame: dict[int, np.ndarray] = {}
        xyxy = np.column_stack([table.boxes[:, :2], table.boxes[:, :2] + table.boxes[:, 2:], table.scores])
        for frame in np.unique(table.frames):
            self._by_frame[int(frame) - 1] = xyxy[table.frames == frame].astype(np.float32)

    def detect(self, frame: np.ndarray, index: int) -> np.ndarray:
        return self._by_frame.get(index, np.zeros((0, 5), dtype=np.float32))


def letterbox(frame: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, tuple[float, float]]:
    """`frame` scaled to fit (height, width) `size` and centred on grey; the scale and the (x, y) padding."""
    import cv2

    height, width = size
    scale = min(height / frame.shape[0], width / frame.shape[1])
    new_w, new_h = max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale))
    canvas = np.full((height, width, 3), 114, dtype=np.uint8)
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas, scale, (float(left), float(top))


class ONNXDetector:
    """A YOLO-style ONNX detector through onnxruntime (see the module docstring for the output layouts)."""

    def __init__(self, path: str | os.PathLike[str], *, confidence: float = 0.25, iou: float = 0.45,
                 person_class: int = 0, input_size: tuple[int, int] = (640, 640)) -> None:  # fmt: skip
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise SpanetError(f"detector model {self.path} does not exist")
        try:
            self._session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise SpanetError(f"detector model {self.path} cannot be loaded by onnxruntime ({str(exc).splitlines()[0][:160]})") from None
        model_input = self._session.get_inputs()[0]
        shape = list(model_input.shape)
        if len(shape) != 4:
            raise SpanetError(f"detector model {self.path} takes input of shape {shape}; expected (1, 3, H, W) images")
        self.input_name = model_input.name
        fixed = [d if isinstance(d, int) and d > 0 else None for d in shape[2:]]
        self.input_size = (fixed[0] or input_size[0], fixed[1] or input_size[1])
        self.confidence, self.iou, self.person_class = confidence, iou, person_class
        self.name = f"onnx-{_digest(self.path)}-{confidence:g}"
        self.detect(np.zeros((*self.input_size, 3), dtype=np.uint8), 0)  # a wrong output shape is refused now

    def detect(self, frame: np.ndarray, index: int) -> np.ndarray:
        canvas, scale, (left, top) = letterbox(frame, self.input_size)
        blob = np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
        output = np.asarray(self._session.run(None, {self.input_name: blob})[0])
        boxes, scores = self.decode(output)
        keep = self._nms(boxes, scores)
        boxes, scores = boxes[keep], scores[keep]
        boxes = (boxes - np.array([left, top, left, top], dtype=np.float32)) / scale
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, frame.shape[1])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, frame.shape[0])
        return np.column_stack([boxes, scores]).astype(np.float32)

    def decode(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (x0, y0, x1, y1 in model-input pixels) and scores above `confidence` of a raw output."""
        if output.ndim != 3 or output.shape[0] != 1:
            raise SpanetError(f"detector model {self.path} outputs shape {list(output.shape)}; expected a YOLO-style "
                              "(1, 4 + classes, N) or (1, N, 5 + classes) array")  # fmt: skip
        rows = output[0]
        channels_first = rows.shape[0] < rows.shape[1]
        rows = rows.T if channels_first else rows  # (N, C)
        first_class = 4 if channels_first else 5
        if rows.shape[1] <= first_class + self.person_class:
            raise SpanetError(f"detector model {self.path} outputs shape {list(output.shape)}: {rows.shape[1]} values "
                              f"per box leave no class {self.person_class} (person) after the "
                              f"{first_class} box{' + objectness' if first_class == 5 else ''} values")  # fmt: skip
        scores = rows[:, first_class + self.person_class].astype(np.float32)
        if not channels_first:
            scores = scores * rows[:, 4]
        keep = scores >= self.confidence
        cx, cy, w, h = (rows[keep, i].astype(np.float32) for i in range(4))
        return np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), scores[keep]

    def _nms(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        import cv2

        if len(boxes) == 0:
            return np.zeros(0, dtype=np.int64)
        xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).tolist()
        kept = cv2.dnn.NMSBoxes(xywh, scores.tolist(), self.confidence, self.iou)
        return np.asarray(kept, dtype=np.int64).reshape(-1)


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
