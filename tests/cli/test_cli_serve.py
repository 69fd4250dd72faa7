"""`spanet gallery build` and the checks `spanet serve` makes before it binds a socket."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from builders import make_checkpoint, write_images
from spanet.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("cli_serve") / "model.pt")


def test_gallery_build_cameras_and_resume(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    from spanet.deploy.gallery import Gallery
    from spanet.features import FeatureExtractor

    images = write_images(tmp_path / "imgs", ["0001_c2s1_000001_00.jpg", "walker.png", "0003_c4s1_000002_00.jpg"])
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    cameras = tmp_path / "cameras.csv"
    cameras.write_text("file,camera\nwalker.png,9\n", encoding="utf-8")
    args = ["gallery", "build", str(tmp_path / "g"), str(tmp_path / "imgs"), "--checkpoint", str(checkpoint),
            "--cameras", str(cameras), "--quiet", "--device", "cpu", "--batch-size", "2"]  # fmt: skip
    assert main(args) == 0
    assert "enrolled 3 images" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "enrolled 0 images" in out and "3 already there" in out and "1 unreadable" in out
    gallery = Gallery.open(tmp_path / "g", model_info=FeatureExtractor(checkpoint, device="cpu").info)
    entries, total = gallery.store.query(camera=None, label=None, limit=10, offset=0)
    assert total == 3
    assert {Path(e.source).name: (e.camera, e.label) for e in entries} == {
        images[0].name: (2, "0001"), "walker.png": (9, None), images[2].name: (4, "0003")
    }
    gallery.close()


def test_serve_refuses_before_binding(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("SPANET_TOKEN", raising=False)
    base = ["serve", "--gallery", str(tmp_path / "g"), "--checkpoint", str(checkpoint), "--device", "cpu"]
    assert main([*base, "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err
    calibration = tmp_path / "cal.json"
    record = {"threshold": 1.0, "metric": "euclidean", "weights_fingerprint": "x", "args_fingerprint": "y",
              "target": {"fpr": 0.001}, "calibration_data": {}}  # fmt: skip
    calibration.write_text(json.dumps(record))
    pytest.importorskip("fastapi")
    assert main([*base, "--calibration", str(calibration)]) == 2
    assert "another model" in capsys.readouterr().err
    from spanet.features import FeatureExtractor

    info = FeatureExtractor(checkpoint, device="cpu").info
    calibration.write_text(json.dumps({**record, "weights_fingerprint": info["weights_fingerprint"],
                                       "args_fingerprint": info["args_fingerprint"], "feature_kind": "global"}))
    assert main([*base, "--calibration", str(calibration)]) == 2  # calibrated on another feature kind
    assert "global features, not parts" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the 'serve' extra were not installed
    assert main(base) == 2
    assert "pip install 'spanet[serve]'" in capsys.readouterr().err
