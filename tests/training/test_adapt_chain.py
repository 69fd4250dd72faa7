"""An operator's chain on a tiny setting: domain-b footage -> ingest -> adapt on its tracks -> gallery reembed ->
the service searches with the adapted model (docs/adapt.md measures how much better it finds people)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builders import ingest_args, make_checkpoint

pytest.importorskip("cv2", reason="footage is decoded with OpenCV (opencv-python, in the test extra)")
pytest.importorskip("fastapi", reason="the service needs the 'serve' extra")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_footage_ingest_adapt_reembed_serve(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fastapi.testclient import TestClient

    from spanet.checkpoint import load_checkpoint
    from spanet.cli import main
    from spanet.deploy.gallery import Gallery
    from spanet.deploy.service import create_app
    from spanet.errors import SpanetError
    from spanet.features import FeatureExtractor

    foot, gallery = tmp_path / "foot", tmp_path / "people"
    assert main(["synth-video", str(foot), "--domain", "b", "--cameras", "3", "--people", "8", "--seconds", "6",
                 "--fps", "5", "--size", "256x144", "--seed", "3"]) == 0  # fmt: skip
    source = make_checkpoint(tmp_path / "source.pt")
    assert main(ingest_args(foot, gallery, source, "--crops-per-track", "3")) == 0
    adapted = tmp_path / "adapted"
    assert main(["adapt", "--checkpoint", str(source), "--output", str(adapted), str(gallery), "--rounds", "1",
                 "--epochs", "1", "--k1", "4", "--k2", "1", "--min-samples", "2", "--eps", "0.9", "--batch-size", "8",
                 "--device", "cpu", "--no-progress", "--set", "data.num_workers=0", "--set",
                 "train.max_steps_per_epoch=2", "--set", "train.amp=none"]) == 0  # fmt: skip
    record = load_checkpoint(adapted / "last.pt")["adaptation"]
    assert record["sources"][0]["kind"] == "gallery" and record["settings"]["camera_bn"] is True
    capsys.readouterr()
    assert main(["gallery", "reembed", str(gallery), "--checkpoint", str(adapted / "last.pt"), "--device", "cpu",
                 "--quiet", "--amp", "none"]) == 0  # fmt: skip
    new = FeatureExtractor(adapted / "last.pt", device="cpu")
    stored = json.loads((gallery / "gallery.json").read_text())["model"]
    assert stored["weights_fingerprint"] == new.info["weights_fingerprint"]
    with pytest.raises(SpanetError, match="different model"):  # the gallery follows its new model only
        Gallery.open(gallery, model_info=FeatureExtractor(source, device="cpu").info)
    opened = Gallery.open(gallery, model_info=new.info)
    try:
        client = TestClient(create_app(gallery=opened, extractor=new), base_url="http://127.0.0.1")
        query = sorted((gallery / "images").iterdir())[0]
        response = client.post("/search", files={"file": ("q.jpg", query.read_bytes(), "image/jpeg")},
                               data={"cameras": "2,3", "group": "true", "top_k": "3"})  # fmt: skip
        assert response.status_code == 200, response.text
        matches = response.json()["matches"]
        assert matches and all(m["camera"] in (2, 3) for m in matches)
    finally:
        opened.close()
