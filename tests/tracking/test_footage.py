"""From footage to tracked crops: video files and frame folders, detectors (HOG, ONNX, MOT file), the IoU tracker
and crop choice; every bad input is one clear line."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from spanet.errors import SpanetError

cv2 = pytest.importorskip("cv2", reason="footage is decoded with OpenCV (opencv-python, in the test extra)")


def _write_video(path: Path, *, frames: int = 7, fourcc: str = "MJPG", fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (64, 48))
    for i in range(frames):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, : 8 * (i + 1)] = 200  # a bar that grows: frame i is recognisable after decoding
        writer.write(frame)
    writer.release()
    return path


def _bar(frame: np.ndarray) -> int:
    return int(round((frame[24, :, 0] > 100).sum() / 8))


@pytest.mark.parametrize(("name", "fourcc"), [("a.mp4", "mp4v"), ("a.avi", "MJPG"), ("a.mkv", "MJPG")])
def test_video_files_decode_in_order_from_any_start(tmp_path: Path, name: str, fourcc: str) -> None:
    from spanet.tracking.video import open_footage

    source = open_footage(_write_video(tmp_path / name, fourcc=fourcc))
    assert (source.length, source.fps, source.width, source.height) == (7, 10.0, 64, 48)
    got = [(i, _bar(f)) for i, f in source.frames(2, 5)]
    assert got == [(2, 3), (3, 4), (4, 5)]
    assert open_footage(tmp_path / name, fps=25).fps == 25


def test_frame_folders_plain_and_mot(tmp_path: Path) -> None:
    from spanet.tracking.video import open_footage

    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(3):
        cv2.imwrite(str(plain / f"{i:04d}.png"), np.full((20, 30, 3), 40 * i, np.uint8))
    with pytest.raises(SpanetError, match="does not say its frame rate.*--fps"):
        open_footage(plain)
    source = open_footage(plain, fps=5)
    assert source.length == 3 and [int(f[0, 0, 0]) for _, f in source.frames()] == [0, 40, 80]
    mot = tmp_path / "seq"
    (mot / "img1").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(mot / "img1" / f"{i + 1:06d}.jpg"), np.zeros((20, 30, 3), np.uint8))
    (mot / "seqinfo.ini").write_text("[Sequence]\nname=seq\nimDir=img1\nframeRate=12\nseqLength=4\nimWidth=30\nimHeight=20\nimExt=.jpg\n")
    assert (open_footage(mot).fps, open_footage(mot).length) == (12.0, 4)


def test_bad_footage_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spanet.tracking.video import open_footage

    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(SpanetError, match="text.mp4 cannot be opened"):
        open_footage(tmp_path / "text.mp4")
    empty = cv2.VideoWriter(str(tmp_path / "zero.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    empty.release()  # a video with zero frames
    with pytest.raises(SpanetError, match=r"zero.mp4 cannot be opened.*empty \(no frames\)"):
        open_footage(tmp_path / "zero.mp4")
    with pytest.raises(SpanetError, match="does not exist"):
        open_footage(tmp_path / "missing.mp4")
    (tmp_path / "none").mkdir()
    with pytest.raises(SpanetError, match="holds no frames"):
        open_footage(tmp_path / "none", fps=5)
    with pytest.raises(SpanetError, match="--fps must be between"):
        open_footage(tmp_path / "none", fps=0)
    video = _write_video(tmp_path / "a.avi")
    real = cv2.VideoCapture

    class NoRate:  # a container whose header says 0 frames/s
        def __init__(self, path: str) -> None:
            self.inner = real(path)

        def get(self, prop: int) -> float:
            return 0.0 if prop == cv2.CAP_PROP_FPS else self.inner.get(prop)

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

    monkeypatch.setattr(cv2, "VideoCapture", NoRate)
    with pytest.raises(SpanetError, match="frame rate of 0 .*--fps"):
        open_footage(video)
    assert open_footage(video, fps=10).fps == 10


def test_truncated_video_stops_where_decoding_stops(tmp_path: Path) -> None:
    from spanet.tracking.video import open_footage

    data = _write_video(tmp_path / "full.mkv", frames=20).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])  # Matroska: the header says 20 frames
    source = open_footage(tmp_path / "cut.mkv")
    decoded = [i for i, _ in source.frames()]
    assert source.length == 20 and 0 < len(decoded) < 20 and source.decoded == len(decoded)
    (tmp_path / "cut.avi").write_bytes(_write_video(tmp_path / "full.avi", frames=20).read_bytes()[:3000])
    with pytest.raises(SpanetError, match="cut.avi cannot be opened: unreadable, truncated"):  # AVI: index at the end
        open_footage(tmp_path / "cut.avi")


def test_iou_tracker_keeps_ids_through_motion_and_short_gaps() -> None:
    from spanet.tracking.iou_tracker import IoUTracker

    tracker = IoUTracker(min_iou=0.3, max_missed=2)
    ids = []
    for t in range(10):
        a = [10 + 3 * t, 10, 40 + 3 * t, 90, 0.9]  # walks right
        b = [200 - 3 * t, 20, 230 - 3 * t, 100, 0.8]  # walks left
        dets = [a, b] if t != 4 else [a]  # b missed once
        out = tracker.update(np.array(dets), t)
        ids.append({int(r[4]) for r in out})
    assert ids[0] == {1, 2} and all(s <= {1, 2} for s in ids)
    out = tracker.update(np.array([[500, 10, 530, 90, 0.9]]), 10)
    assert int(out[0, 4]) == 3  # far from every track: a new one
    assert tracker.update(np.zeros((0, 5)), 11).shape == (0, 6)
    for t in range(12, 20):  # after max_missed frames unseen the old tracks end
        tracker.update(np.zeros((0, 5)), t)
    assert int(tracker.update(np.array([[37, 10, 67, 90, 0.9]]), 20)[0, 4]) == 4


def test_crop_selector_prefers_whole_sharp_crops_spread_over_the_track() -> None:
    from spanet.tracking.crops import CropSelector

    rng = np.random.default_rng(0)
    selector = CropSelector(per_track=3)
    for t in range(40):
        frame = np.full((120, 200, 3), 90, np.uint8)
        frame[10:100, 60:100] = rng.integers(0, 255, (90, 40, 3), dtype=np.uint8)  # sharp texture
        blur = 8 if t % 2 else 0  # odd frames: blurred person
        if blur:
            frame[10:100, 60:100] = cv2.blur(frame[10:100, 60:100], (blur, blur))
        tracked = np.array([[60, 10, 100, 100, 1, 1.0], [0, 10, 30, 100, 2, 1.0]])  # track 2 cut by the left edge
        selector.offer(frame, tracked if t < 39 else tracked[:1], t)
    selector.offer(np.zeros((120, 200, 3), np.uint8), np.array([[60, 10, 100, 100, 9, 1.0]]), 40)  # one box only
    chosen = selector.finish(min_boxes=3)
    assert sorted(chosen) == [1, 2]  # track 9 is too short
    frames = [p.frame for p in chosen[1]]
    assert len(frames) == 3 and all(f % 2 == 0 for f in frames)  # sharp ones
    assert frames == sorted(frames) and frames[0] < 13 <= frames[1] < 26 <= frames[2]  # one per third of its life
    assert chosen[1][0].rgb.shape == (90, 40, 3)
    assert max(p.quality for p in chosen[2]) < min(p.quality for p in chosen[1])  # cut boxes rank low


def test_hog_detector_runs_offline() -> None:
    from spanet.tracking.detect import HOGDetector

    rows = HOGDetector().detect(np.full((160, 120, 3), 128, np.uint8), 0)
    assert rows.shape == (0, 5)  # nothing in a blank frame
    noise = np.random.default_rng(0).integers(0, 255, (256, 192, 3), dtype=np.uint8)
    rows = HOGDetector(min_height=64).detect(noise, 0)
    assert rows.ndim == 2 and rows.shape[1] == 5 and rows.dtype == np.float32


def test_mot_detections_by_frame(tmp_path: Path) -> None:
    from spanet.tracking.detect import MOTDetections

    (tmp_path / "d.txt").write_text("1,-1,10,20,30,40,0.9\n3,-1,0,0,5,5,0.5\n3,-1,1,1,5,5,0.4\n")
    dets = MOTDetections(tmp_path / "d.txt")
    np.testing.assert_allclose(dets.detect(None, 0), [[10, 20, 40, 60, 0.9]], rtol=1e-6)
    assert dets.detect(None, 1).shape == (0, 5) and dets.detect(None, 2).shape == (2, 5)


def _onnx_detector(path: Path, output: np.ndarray) -> Path:
    """A tiny ONNX model (built here with torch.onnx) that outputs `output` for any 64×64 image."""
    import torch

    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("out", torch.from_numpy(output.astype(np.float32)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out + 0.0 * x.mean()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: fast and enough for a constant
        torch.onnx.export(Fixed(), (torch.zeros(1, 3, 64, 64),), str(path), input_names=["images"],
                          output_names=["output0"], dynamo=False)  # fmt: skip
    return path


# anchors as columns: cx, cy, w, h (model-input pixels), person score, other-class score
_ANCHORS = np.array([
    [32, 32, 10, 20, 0.90, 0.0],  # a person
    [33, 32, 10, 20, 0.80, 0.0],  # the same person again: removed by NMS
    [10, 40, 6, 12, 0.10, 0.0],  # below the confidence
    [50, 40, 6, 12, 0.00, 0.95],  # another class
    *[[8, 8, 4, 4, 0.0, 0.0]] * 12,  # empty anchors: a real YOLO output has thousands, more than its channels
], dtype=np.float32)


def test_onnx_detector_decodes_yolo_outputs_to_frame_pixels(tmp_path: Path) -> None:
    from spanet.tracking.detect import ONNXDetector

    frame = np.zeros((160, 320, 3), np.uint8)  # letterboxed into 64×64: scale 0.2, 16 px of padding above
    v8 = ONNXDetector(_onnx_detector(tmp_path / "v8.onnx", _ANCHORS.T[None]), confidence=0.25)
    rows = v8.detect(frame, 0)
    np.testing.assert_allclose(rows, [[135, 30, 185, 130, 0.9]], atol=1e-3)
    v5 = np.concatenate([_ANCHORS[:, :4], np.full((len(_ANCHORS), 1), 0.5), _ANCHORS[:, 4:]], axis=1)  # objectness 0.5
    rows = ONNXDetector(_onnx_detector(tmp_path / "v5.onnx", v5[None]), confidence=0.25).detect(frame, 0)
    np.testing.assert_allclose(rows, [[135, 30, 185, 130, 0.45]], atol=1e-3)


def test_onnx_detector_with_a_wrong_output_shape_is_one_line(tmp_path: Path) -> None:
    from spanet.tracking.detect import ONNXDetector

    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(SpanetError, match=r"flat.onnx outputs shape \[1, 3\]; expected a YOLO-style"):
        ONNXDetector(_onnx_detector(tmp_path / "flat.onnx", np.zeros((1, 3), np.float32)))  # refused when loaded
    with pytest.raises(SpanetError, match="leave no class 0"):
        ONNXDetector(_onnx_detector(tmp_path / "boxes.onnx", np.zeros((1, 4, 50), np.float32)))
    assert ONNXDetector(_onnx_detector(tmp_path / "ok.onnx", _ANCHORS.T[None])).detect(frame, 0).shape == (1, 5)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(SpanetError, match="junk.onnx cannot be loaded"):
        ONNXDetector(tmp_path / "junk.onnx")


def test_iou_tracker_keeps_people_walking_past_each_other_apart() -> None:
    """Two people of one size at one depth cross: the last box alone would hand each one the other's id."""
    from spanet.tracking.iou_tracker import IoUTracker

    tracker = IoUTracker()
    seen: dict[int, set[int]] = {1: set(), 2: set()}
    for t in range(30):
        right, left = 9 * t, 250 - 6 * t  # person 1 walks right, person 2 left; they overlap around t = 17
        out = tracker.update(np.array([[right, 20, right + 24, 70, 1.0], [left, 21, left + 22, 71, 1.0]]), t)
        seen[1].add(int(out[0, 4]))
        seen[2].add(int(out[1, 4]))
    assert seen == {1: {1}, 2: {2}}


def test_far_narrow_walkers_are_tracked() -> None:
    """A far person, 10 px wide, moving 9 px per frame: consecutive boxes barely overlap (IoU 0.05), so only the
    buffered IoU of a track's second frame lets it start (before it, every frame began a new one-box track)."""
    from spanet.tracking.iou_tracker import IoUTracker

    tracker = IoUTracker()
    ids = {int(tracker.update(np.array([[9 * t, 46, 9 * t + 10, 94, 1.0]]), t)[0, 4]) for t in range(12)}
    assert ids == {1}
    near = IoUTracker()  # two people side by side, each new: each keeps their own track
    seen = [{int(r[4]) for r in near.update(np.array([[9 * t, 40, 9 * t + 10, 90, 1.0],
                                                      [9 * t + 60, 40, 9 * t + 70, 90, 1.0]]), t)} for t in range(6)]
    assert all(ids == {1, 2} for ids in seen)

