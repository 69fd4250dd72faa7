"""The cross-domain line of `spanet evaluate`."""

from __future__ import annotations

from pathlib import Path

from spanet.evaluation.diagnostics import domain_note


def test_cross_domain_note(tmp_path: Path) -> None:
    checkpoint = {"dataset": "synthetic", "config": {"data": {"dataset": "synthetic", "root": str(tmp_path / "a")}}}
    assert domain_note(checkpoint, dataset="synthetic", root=tmp_path / "a") is None
    note = domain_note(checkpoint, dataset="folders", root=tmp_path / "b")
    assert note == f"cross-domain: trained on synthetic at {tmp_path / 'a'}, evaluated on folders at {tmp_path / 'b'}"
    assert domain_note(checkpoint, dataset="synthetic", root=tmp_path / "b").startswith("cross-domain")
    assert domain_note({"config": {}}, dataset="folders", root=tmp_path) is None  # unknown training data: no claim
