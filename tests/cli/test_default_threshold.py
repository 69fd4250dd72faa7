"""`spanet serve` says which threshold it uses and where it came from: the flag, the calibration stored beside the
checkpoint (used by default), or none, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import make_checkpoint, serve_app, write_calibration

pytest.importorskip("fastapi", reason="the service needs the 'serve' extra")


def test_serve_uses_the_calibration_stored_with_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    from fastapi.testclient import TestClient

    checkpoint = make_checkpoint(tmp_path / "run" / "last.pt")
    serve_app(tmp_path / "g", checkpoint, monkeypatch)
    first = capsys.readouterr().out
    assert "threshold: none (" in first and "calibration.json does not exist" in first
    write_calibration(tmp_path / "run" / "calibration.json", checkpoint, 0.75)
    seen = serve_app(tmp_path / "g", checkpoint, monkeypatch)
    out = capsys.readouterr().out
    assert f"threshold 0.75 from {tmp_path / 'run' / 'calibration.json'}" in out
    assert TestClient(seen["app"], base_url="http://127.0.0.1").get("/health").json()["threshold"] == 0.75
    serve_app(tmp_path / "g", checkpoint, monkeypatch, "--threshold", "0.5")
    assert "threshold 0.5 (--threshold)" in capsys.readouterr().out
