"""After `spanet ingest`: the threshold that comes with the model (printed, stored with the gallery, used by `serve`)
and `spanet search --gallery` with the service's filters (cameras, time window, one row per track)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from builders import ingest_args, ingest_synthetic_footage, make_checkpoint, serve_app, write_calibration

pytest.importorskip("cv2", reason="footage is decoded with OpenCV (opencv-python, in the test extra)")
pytest.importorskip("fastapi", reason="the service needs the 'serve' extra")
pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """3 cameras of synthetic footage ingested with their ground-truth boxes as detections (no threshold anywhere)."""
    return ingest_synthetic_footage(tmp_path_factory.mktemp("ingest_search"))


def test_ingest_prints_and_stores_the_threshold_and_serve_uses_it(
    ingested: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:  # fmt: skip
    from fastapi.testclient import TestClient

    from spanet.cli import main

    run = tmp_path / "run"
    run.mkdir()
    checkpoint = Path(shutil.copy(ingested["checkpoint"], run / "last.pt"))
    gallery = tmp_path / "people"
    args = ingest_args(ingested["foot"], gallery, checkpoint, cameras=(1,))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"threshold: none ({run / 'calibration.json'} does not exist" in out and "none is marked unknown" in out
    assert "threshold" not in json.loads((gallery / "gallery.json").read_text())
    write_calibration(run / "calibration.json", checkpoint, 0.75)
    assert main(args) == 0  # the segments are in already: only the threshold is new
    out = capsys.readouterr().out
    assert f"threshold 0.75 from {run / 'calibration.json'}" in out and "stored in" in out and "0 crops enrolled" in out
    stored = json.loads((gallery / "gallery.json").read_text())["threshold"]
    assert stored["value"] == 0.75 and str(run / "calibration.json") in stored["source"]
    moved = Path(shutil.copy(checkpoint, tmp_path / "last.pt"))  # the checkpoint without its calibration file
    seen = serve_app(gallery, moved, monkeypatch)
    out = capsys.readouterr().out
    assert f"threshold 0.75 from {gallery / 'gallery.json'} (stored by spanet ingest" in out
    assert TestClient(seen["app"], base_url="http://127.0.0.1").get("/health").json()["threshold"] == 0.75
    serve_app(gallery, moved, monkeypatch, "--threshold", "0.5")
    assert "threshold 0.5 (--threshold)" in capsys.readouterr().out
    query = sorted((gallery / "images").iterdir())[0]
    assert main(["search", "--gallery", str(gallery), "--checkpoint", str(moved), "--device", "cpu", "--quiet",
                 "--threshold", "auto", str(query)]) == 0  # fmt: skip
    assert f"threshold 0.75 from {gallery / 'gallery.json'}" in capsys.readouterr().out
    write_calibration(tmp_path / "other.json", make_checkpoint(tmp_path / "other.pt", seed=1), 0.3)
    assert main([*args, "--calibration", str(tmp_path / "other.json")]) == 2  # another model's calibration
    err = capsys.readouterr().err
    assert "calibrated for another model" in err and len(err.strip().splitlines()) == 1


def _service_hits(ingested: dict, query: bytes, form: dict) -> list[dict]:
    from fastapi.testclient import TestClient

    from spanet.deploy.gallery import Gallery
    from spanet.deploy.service import create_app
    from spanet.features import FeatureExtractor

    extractor = FeatureExtractor(ingested["checkpoint"], device="cpu")
    gallery = Gallery.open(ingested["gallery"], model_info=extractor.info)
    try:
        client = TestClient(create_app(gallery=gallery, extractor=extractor))
        response = client.post("/search", files={"file": ("q.jpg", query, "image/jpeg")}, data=form)
        assert response.status_code == 200, response.text
        return response.json()["matches"]
    finally:
        gallery.close()


def test_search_gallery_filters_and_groups_as_the_service(ingested: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    from spanet.cli import main
    from spanet.deploy.filters import to_seconds

    base = ["search", "--gallery", str(ingested["gallery"]), "--checkpoint", str(ingested["checkpoint"]), "--device",
            "cpu", "--quiet", "--amp", "none"]  # float32, as the service's extractor below
    everything = tmp_path / "all.json"
    probe = sorted((ingested["gallery"] / "images").iterdir())[0]
    assert main([*base, str(probe), "--top-k", "1000", "--json", str(everything)]) == 0
    hits = json.loads(everything.read_text())[0]["matches"]
    assert len(hits) == len(list((ingested["gallery"] / "images").iterdir())) > 20  # the whole gallery
    query = next(h for h in hits if h["camera"] == 1)  # a camera-1 crop searched in cameras 2 and 3
    times = sorted(to_seconds(h["timestamp"]) for h in hits)
    after, before = "2024-05-01T08:00:01+00:00", "2024-05-01T08:00:06.5+00:00"
    out = tmp_path / "hits.json"
    capsys.readouterr()
    assert main([*base, query["image"], "--camera", "2", "--camera", "3", "--after", after, "--before", before,
                 "--group-by-track", "--top-k", "5", "--json", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())[0]
    matches = record["matches"]
    assert matches and record["grouped"] and record["filters"]["cameras"] == [2, 3]
    for m in matches:
        assert m["camera"] in (2, 3) and to_seconds(after) <= to_seconds(m["timestamp"]) < to_seconds(before)
        assert f"camera {m['camera']}  {m['timestamp']}  track {m['track']}  #{m['id']}" in printed
    assert len({m["track"] for m in matches}) == len(matches)  # one row per track
    inside = [h for h in sorted(hits, key=lambda h: h["distance"]) if h["camera"] in (2, 3)
              and to_seconds(after) <= to_seconds(h["timestamp"]) < to_seconds(before)]  # fmt: skip
    firsts = [h for i, h in enumerate(inside) if h["track"] not in {x["track"] for x in inside[:i]}]
    assert [m["id"] for m in matches] == [h["id"] for h in firsts[:5]]  # each track's nearest crop, nearest first
    assert times[0] < to_seconds(after) and times[-1] >= to_seconds(before)  # the window did leave hits out
    service = _service_hits(ingested, Path(query["image"]).read_bytes(), {
        "cameras": "2,3", "after": after, "before": before, "group": "true", "top_k": "5"})  # fmt: skip
    assert [(m["id"], m["track"]) for m in service] == [(m["id"], m["track"]) for m in matches]
    assert [m["distance"] for m in service] == pytest.approx([m["distance"] for m in matches], rel=1e-5)


@pytest.mark.parametrize(("change", "message"), [
    (["--after", "2024-05-01T09:00:00", "--before", "2024-05-01T08:00:00"], "after (2024-05-01T09:00:00+00:00) is later"),
    (["--camera", "lobby"], "--camera 'lobby': the camera id must be a whole number"),
    (["--before", "tomorrow"], "--before 'tomorrow' is not an ISO 8601 time"),
    (["--threshold", "-1"], "--threshold must be a finite distance >= 0"),
])  # fmt: skip
def test_bad_gallery_search_is_one_line(ingested: dict, capsys: pytest.CaptureFixture, change: list[str],
                                        message: str) -> None:  # fmt: skip
    from spanet.cli import main

    probe = sorted((ingested["gallery"] / "images").iterdir())[0]
    assert main(["search", "--gallery", str(ingested["gallery"]), "--checkpoint", str(ingested["checkpoint"]),
                 "--device", "cpu", "--quiet", str(probe), *change]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_gallery_filters_with_an_index_are_refused(ingested: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from spanet.cli import main

    assert main(["search", "--index", str(tmp_path), "--checkpoint", str(ingested["checkpoint"]), "--group-by-track",
                 "--camera", "2", "q.jpg"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--camera, --group-by-track filter(s) a gallery folder's" in err and len(err.strip().splitlines()) == 1
