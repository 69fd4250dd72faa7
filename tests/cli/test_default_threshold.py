"""`spanet serve` says which threshold it uses and where it came from: the flag, the calibration stored beside the
checkpoint (used by default), or none, with the reason."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from builders import make_checkpoint

pytest.importorskip("fastapi", reason="the service needs the 'serve' extra")


def _serve(tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> dict:
    from spanet.cli import main

    seen: dict = {}
    fake = types.SimpleNamespace(run=lambda app, **kwargs: seen.setdefault("app", app))
    monkeypatch.setitem(sys.modules, "uvicorn", fake)  # start nothing: what matters is what serve chose
    assert main(["serve", "--gallery", str(tmp_path / "g"), "--checkpoint", str(checkpoint), "--device", "cpu", *extra]) == 0
    return seen


def test_serve_uses_the_calibration_stored_with_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    from fastapi.testclient import TestClient

    from spanet.evaluation.verification import save_calibration
    from spanet.features import FeatureExtractor

    checkpoint = make_checkpoint(tmp_path / "run" / "last.pt")
    _serve(tmp_path, checkpoint, monkeypatch)
    first = capsys.readouterr().out
    assert "threshold: none (" in first and "calibration.json does not exist" in first
    info = FeatureExtractor(checkpoint, device="cpu").info
    save_calibration(tmp_path / "run" / "calibration.json", {
        "threshold": 0.75, "metric": "euclidean", "weights_fingerprint": info["weights_fingerprint"],
        "args_fingerprint": info["args_fingerprint"], "feature_kind": info["kind"], "target": "fpr 1e-3",
        "calibration_data": {}})  # fmt: skip
    seen = _serve(tmp_path, checkpoint, monkeypatch)
    out = capsys.readouterr().out
    assert f"threshold 0.75 from {tmp_path / 'run' / 'calibration.json'}" in out
    assert TestClient(seen["app"], base_url="http://127.0.0.1").get("/health").json()["threshold"] == 0.75
    _serve(tmp_path, checkpoint, monkeypatch, "--threshold", "0.5")
    assert "threshold 0.5 (--threshold)" in capsys.readouterr().out
