"""`spanet.ReID.get_features`: the FeatureExtractor path on the same crops, BGR handled, bad boxes give zero rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import spanet
from builders import make_checkpoint
from spanet.deploy.reid import clip_boxes
from spanet.errors import SpanetError
from spanet.features import FeatureExtractor


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def reid(checkpoint: Path) -> spanet.ReID:
    return spanet.ReID(checkpoint, device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A BGR frame with distinct coloured blocks, so crops differ and channel order matters."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    img[10:70, 20:50] = (255, 0, 0)  # blue in BGR
    img[40:110, 90:130] = (0, 0, 255)  # red in BGR
    return img


def test_get_features_equals_extractor_on_saved_crops(
    checkpoint: Path, reid: spanet.ReID, frame: np.ndarray, tmp_path: Path
) -> None:
    boxes = np.array([[20, 10, 50, 70], [90.4, 40.2, 129.6, 109.9], [-15, -5, 30, 200], [5, 5, 25, 45]])
    got = reid.get_features(boxes, frame)
    paths = []
    for number, (x0, y0, x1, y1) in enumerate(clip_boxes(boxes, height=120, width=160)):
        path = tmp_path / f"crop{number}.png"
        Image.fromarray(frame[y0:y1, x0:x1, ::-1].copy()).save(path)  # PNG is lossless: the same RGB pixels
        paths.append(path)
    expected = FeatureExtractor(checkpoint, device="cpu")(paths)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert got.dtype == np.float32 and got.shape == (4, reid.feature_dim)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert reid.last_skipped == 0


def test_channel_order_is_bgr(reid: spanet.ReID, frame: np.ndarray) -> None:
    """Passing the frame as RGB by mistake changes the features: proof the BGR->RGB swap happens."""
    boxes = np.array([[20, 10, 50, 70]])
    bgr = reid.get_features(boxes, frame)
    rgb_mistake = reid.get_features(boxes, np.ascontiguousarray(frame[:, :, ::-1]))
    assert np.abs(bgr - rgb_mistake).max() > 1e-3
    crop_rgb = np.ascontiguousarray(frame[10:70, 20:50, ::-1])
    np.testing.assert_allclose(bgr, reid.embed_crops([crop_rgb]), atol=1e-6)


def test_degenerate_boxes_give_zero_rows_and_are_counted(checkpoint: Path, frame: np.ndarray) -> None:
    reid = spanet.ReID(checkpoint, device="cpu")
    boxes = np.array([
        [20, 10, 50, 70],      # fine
        [200, 10, 260, 70],    # right of the frame
        [30, 30, 30, 60],      # zero width
        [50, 60, 40, 20],      # inverted
        [np.nan, 0, 10, 10],   # a NaN coordinate: no pixel (not a guessed box at x = 0)
        [-40, -40, -1, -1],    # above-left of the frame
        [0, 0, np.inf, 30],    # an infinite coordinate: no pixel either
    ])
    feats = reid.get_features(boxes, frame)
    assert feats.shape == (7, reid.feature_dim)
    assert np.all(feats[1:] == 0)
    np.testing.assert_allclose(np.linalg.norm(feats[0]), 1.0, atol=1e-5)
    assert reid.last_skipped == 6 and reid.skipped_boxes == 6
    empty = reid.get_features(np.zeros((0, 4)), frame)
    assert empty.shape == (0, reid.feature_dim) and reid.last_skipped == 0 and reid.skipped_boxes == 6


def test_bad_frame_or_boxes_are_errors(reid: spanet.ReID, frame: np.ndarray) -> None:
    with pytest.raises(SpanetError, match="BGR frame"):
        reid.get_features(np.array([[0, 0, 5, 5]]), frame.astype(np.float32))
    with pytest.raises(SpanetError, match="shape"):
        reid.get_features(np.array([1, 2, 3]), frame)
