"""synth-video: MOTChallenge layout, global ids shared across cameras, same seed same bytes, boxes inside frames."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from spanet.errors import SpanetError
from spanet.synth.video import VideoOptions, generate_video
from spanet.tracking.mot import read_sequence, read_tracks

OPTIONS = VideoOptions(cameras=3, people=6, seconds=4, fps=5, width=192, height=108, seed=3)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "spanet_video.json"):
        h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_layout_ids_and_determinism(tmp_path: Path) -> None:
    summary = generate_video(tmp_path / "a", OPTIONS)
    generate_video(tmp_path / "b", OPTIONS)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert summary.frames == 3 * 20 and summary.boxes > 0
    ids_per_camera = []
    for cam in ("cam1", "cam2", "cam3"):
        sequence = read_sequence(tmp_path / "a" / cam)
        assert (sequence.length, sequence.width, sequence.height, sequence.frame_rate) == (20, 192, 108, 5.0)
        assert sorted(p.name for p in sequence.image_dir.iterdir())[0] == "000001.jpg"
        gt = read_tracks(tmp_path / "a" / cam / "gt" / "gt.txt", sequence=sequence)  # checks frames and boxes
        assert np.all(gt.boxes[:, 0] + gt.boxes[:, 2] <= 192) and np.all(gt.boxes[:, 1] + gt.boxes[:, 3] <= 108)
        assert np.all(gt.boxes >= 0) and set(gt.ids) <= set(range(1, 7))
        ids_per_camera.append(set(gt.track_ids()))
    seen_twice = [pid for pid in range(1, 7) if sum(pid in ids for ids in ids_per_camera) > 1]
    assert seen_twice, "someone must walk through more than one camera"
    other = generate_video(tmp_path / "c", VideoOptions(**{**OPTIONS.__dict__, "seed": 4}))
    assert other.boxes != summary.boxes or digest(tmp_path / "c") != digest(tmp_path / "a")


def test_people_overlap_in_some_frame(tmp_path: Path) -> None:
    generate_video(tmp_path / "v", VideoOptions(cameras=1, people=8, seconds=6, fps=5, width=160, height=96, seed=0))
    gt = read_tracks(tmp_path / "v" / "cam1" / "gt" / "gt.txt")
    overlaps = 0
    for frame in np.unique(gt.frames):
        b = gt.boxes[gt.frames == frame]
        x0, x1 = b[:, 0], b[:, 0] + b[:, 2]
        inter = np.minimum(x1[:, None], x1[None, :]) - np.maximum(x0[:, None], x0[None, :])
        overlaps += int(((inter > 0).sum() - len(b)) // 2)
    assert overlaps > 0


def test_refuses_a_foreign_folder_and_bad_options(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(SpanetError, match="not written by `spanet synth-video`"):
        generate_video(tmp_path / "mine", OPTIONS)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"
    with pytest.raises(SpanetError, match="--cameras"):
        generate_video(tmp_path / "new", VideoOptions(cameras=0))
