"""boxmot's BoT-SORT with spanet.ReID as its appearance model, on synthetic footage with ground-truth detections.

boxmot is a test/benchmark peer (the `test` extra), never a runtime dependency: these tests skip where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import spanet
from builders import make_checkpoint
from spanet.synth.video import VideoOptions, generate_video
from spanet.tracking.metrics import cross_camera_scores
from spanet.tracking.mot import read_sequence, read_tracks
from spanet.tracking.run import run_tracker

boxmot = pytest.importorskip("boxmot", reason="boxmot is not installed (pip install boxmot, in the `test` extra)")


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("boxmot") / "footage"
    generate_video(out, VideoOptions(cameras=1, people=5, seconds=6, fps=10, width=320, height=180, seed=2))
    return out / "cam1"


class CountingReID(spanet.ReID):
    """spanet.ReID that records what the tracker passes in."""

    calls: list[tuple[np.ndarray, np.ndarray]]

    def get_features(self, xyxy: np.ndarray, img: np.ndarray) -> np.ndarray:
        self.calls.append((np.array(xyxy), np.array(img)))
        return super().get_features(xyxy, img)


def test_botsort_runs_with_spanet_reid_as_its_model(footage: Path, tmp_path: Path) -> None:
    sequence = read_sequence(footage)
    truth = read_tracks(footage / "gt" / "gt.txt", sequence=sequence)
    reid = CountingReID(make_checkpoint(tmp_path / "model.pt"), device="cpu")
    reid.calls = []
    tracker = boxmot.BotSort(reid_model=reid, use_cmc=False, frame_rate=10)
    tracked = run_tracker(tracker, sequence, truth)

    frames_with_people = len(np.unique(truth.frames))
    assert len(reid.calls) == frames_with_people  # one batched call per frame that has detections
    per_frame = np.bincount(truth.frames)[np.unique(truth.frames)]
    assert [len(boxes) for boxes, _ in reid.calls] == per_frame.tolist()
    first = int(truth.frames.min())
    boxes, img = reid.calls[0]
    with Image.open(sequence.frame_path(first)) as image:  # the frame as OpenCV would decode it: BGR
        np.testing.assert_array_equal(img, np.asarray(image.convert("RGB"))[:, :, ::-1])
    xywh = truth.boxes[truth.frames == first]
    np.testing.assert_allclose(np.sort(boxes[:, :4], axis=0), np.sort(np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]), axis=0), atol=1e-3)
    # Ground-truth boxes as detections: BoT-SORT confirms tracks after a frame or two and then follows the people.
    scores = cross_camera_scores([truth], [tracked])
    assert scores["idf1"] > 0.7, scores
    assert len(tracked.track_ids()) >= len(truth.track_ids())


class PrecomputedEmbeddings:
    """BoT-SORT fed embeddings computed outside the tracker (boxmot 25's `Detections(embeddings=...)`, what older
    releases took as `update(dets, img, embs=...)`), behind the numpy `update(dets, frame)` contract of run_tracker."""

    def __init__(self, tracker: object, reid: spanet.ReID) -> None:
        self.tracker, self.reid, self.frame = tracker, reid, 0

    def update(self, dets: np.ndarray, frame: np.ndarray) -> np.ndarray:
        import torch
        from boxmot.structures import Boxes, Detections

        self.frame += 1
        detections = Detections(
            geometry=Boxes(torch.from_numpy(dets[:, :4].astype(np.float32))),
            scores=torch.from_numpy(dets[:, 4].astype(np.float32)),
            class_ids=torch.from_numpy(dets[:, 5].astype(np.int64)),
            sample_id=f"frame{self.frame}",
            embeddings=torch.from_numpy(self.reid.get_features(dets[:, :4], frame)),
        )  # fmt: skip
        out = self.tracker.update(detections, frame)
        return np.column_stack([out.geometry.values.numpy(), out.track_ids.numpy(), out.scores.numpy()])


def test_precomputed_embeddings_give_the_same_tracks_as_reid_model(footage: Path, tmp_path: Path) -> None:
    sequence = read_sequence(footage)
    truth = read_tracks(footage / "gt" / "gt.txt", sequence=sequence)
    reid = spanet.ReID(make_checkpoint(tmp_path / "model.pt"), device="cpu")
    inside = run_tracker(boxmot.BotSort(reid_model=reid, use_cmc=False, frame_rate=10), sequence, truth)
    outside = run_tracker(PrecomputedEmbeddings(boxmot.BotSort(use_cmc=False, frame_rate=10), reid), sequence, truth)
    assert len(inside) > 0.8 * len(truth)
    np.testing.assert_array_equal(outside.frames, inside.frames)
    np.testing.assert_array_equal(outside.ids, inside.ids)
    np.testing.assert_allclose(outside.boxes, inside.boxes, rtol=0, atol=1e-3)


def test_ingest_botsort_takes_scores_outside_0_1(footage: Path, tmp_path: Path) -> None:
    """HOG's scores are SVM margins (0.3 to ~3) and MOT files may hold any scores; boxmot refuses confidences outside
    [0, 1], so `BotSortTracker` clips them: margins of 1 or more track as sure boxes do."""
    import dataclasses

    from spanet.tracking.botsort import BotSortTracker

    class OnRunTracker:  # run_tracker's boxmot contract, update(dets, image), onto ingest's update(dets, frame, image)
        def __init__(self) -> None:
            self.tracker = BotSortTracker(reid, fps=10)

        def update(self, dets: np.ndarray, image: np.ndarray) -> np.ndarray:
            return self.tracker.update(dets[:, :5], 0, image)

    sequence = read_sequence(footage)
    truth = read_tracks(footage / "gt" / "gt.txt", sequence=sequence)
    reid = spanet.ReID(make_checkpoint(tmp_path / "model.pt"), device="cpu")
    sure = run_tracker(OnRunTracker(), sequence, dataclasses.replace(truth, scores=np.ones(len(truth))))
    margins = run_tracker(OnRunTracker(), sequence, dataclasses.replace(truth, scores=np.full(len(truth), 2.5)))
    assert len(sure) > 0.8 * len(truth)
    np.testing.assert_array_equal(margins.frames, sure.frames)
    np.testing.assert_array_equal(margins.boxes, sure.boxes)
    np.testing.assert_array_equal(margins.ids, sure.ids)
    assert margins.scores.max() <= 1.0
