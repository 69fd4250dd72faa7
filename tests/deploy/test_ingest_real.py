"""`spanet ingest` on real footage: OpenCV's sample `vtest.avi` (pedestrians walking, 768×576, 10 fps), fetched
from Debian's opencv-doc package by `scripts/fetch_real_video.sh` (CI runs it). No ground truth exists for it, so
what is checked is what holds on any footage: the video decodes frame for frame, HOG finds people and the tracker
follows them over time (tracks span many frames), times are start + frame / fps, a re-run enrols nothing, and a
time-window search through the service returns only crops from that window."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import make_checkpoint

cv2 = pytest.importorskip("cv2", reason="footage is decoded with OpenCV (opencv-python, in the test extra)")
REAL = Path(os.environ.get("SPANET_REAL_VIDEO", Path(__file__).resolve().parents[2] / ".cache/real-video/vtest.avi"))
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not REAL.is_file(), reason=f"no real footage at {REAL}: `bash scripts/fetch_real_video.sh` "
                       "fetches OpenCV's vtest.avi (Debian opencv-doc)"),
]
START = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.timezone.utc)
FRAMES = 120  # 12 s of the real video, re-encoded as mp4 (a second container and codec on real content)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    capture = cv2.VideoCapture(str(REAL))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(root / "hall.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    for _ in range(FRAMES):
        ok, frame = capture.read()
        assert ok, f"{REAL} ended before {FRAMES} frames"
        writer.write(frame)
    writer.release()
    capture.release()
    return root / "hall.mp4"


def test_real_footage_to_tracks_times_and_a_time_window_search(clip: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    from fastapi.testclient import TestClient

    from spanet.cli import main
    from spanet.deploy.gallery import Gallery
    from spanet.deploy.service import create_app
    from spanet.features import FeatureExtractor

    checkpoint = make_checkpoint(tmp_path / "model.pt")
    args = ["ingest", "--gallery", str(tmp_path / "people"), "--checkpoint", str(checkpoint), "--device", "cpu",
            "--camera", "1", str(clip), "--start-time", START.isoformat(), "--segment-seconds", "6", "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"ingested {FRAMES} frames of 1 camera(s)" in out, out
    assert main(args) == 0
    assert "0 crops enrolled" in capsys.readouterr().out  # a re-run enrols nothing
    extractor = FeatureExtractor(checkpoint, device="cpu")
    gallery = Gallery.open(tmp_path / "people", model_info=extractor.info)
    try:
        entries, total = gallery.store.query(limit=10_000, offset=0)
        frames: dict[int, list[int]] = {}
        for entry in entries:
            frame = int(entry.source.rsplit("=", 1)[1])  # 1-based
            assert entry.source.startswith("hall.mp4#frame=") and 1 <= frame <= FRAMES
            assert dt.datetime.fromisoformat(entry.timestamp) == START + dt.timedelta(seconds=(frame - 1) / 10)
            frames.setdefault(entry.track, []).append(frame)
            with Image.open(gallery.image_path(entry)) as image:
                assert image.height > image.width  # a standing person's box
        # several people walk through the first 12 s; the tracker follows them: tracks last well beyond 3 frames
        assert len(frames) >= 3, frames
        spans = sorted(max(f) - min(f) for f in frames.values())
        print(f"real footage: {len(frames)} tracks, {len(entries)} crops, frame spans {spans}")
        assert spans[-1] >= 20 and np.median(spans) >= 5, spans
        client = TestClient(create_app(gallery=gallery, extractor=extractor))
        query = gallery.image_path(entries[0]).read_bytes()
        after, before = (START + dt.timedelta(seconds=6)).isoformat(), (START + dt.timedelta(seconds=12)).isoformat()
        response = client.post("/search", files={"file": ("q.jpg", query, "image/jpeg")},
                               data={"after": after, "before": before, "top_k": "50"})  # fmt: skip
        assert response.status_code == 200, response.text
        matches = response.json()["matches"]
        in_window = [e for e in entries if after <= e.timestamp < before]
        assert len(matches) == min(50, len(in_window)) > 0
        assert all(after <= m["timestamp"] < before for m in matches)
    finally:
        gallery.close()
