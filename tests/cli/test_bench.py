"""`spanet bench` in its tiny mode: the table, the JSON, and numbers that come from real timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spanet.cli import main

CPU_DEMO = Path(__file__).resolve().parents[2] / "configs" / "cpu_demo.yaml"


def test_tiny_bench_prints_the_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", str(CPU_DEMO), "--tiny", "--device", "cpu", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for line in ("train fp32 eager", "embed fp32", "loader, 0 workers", "loader, 1 workers", "market1501", "msmt17"):
        assert line in printed
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["batch"] == 4 and (result["height"], result["width"]) == (64, 32)
    assert [row["precision"] for row in result["train"]][0] == "fp32" and not any(r["compiled"] for r in result["train"])
    rates = [row["images_per_s"] for part in ("train", "embed", "loader") for row in result[part]]
    assert all(rate > 0 for rate in rates) and len(set(rates)) == len(rates)  # measured, not constants
    market, msmt = result["epoch_estimate"]["market1501"], result["epoch_estimate"]["msmt17"]
    assert msmt["seconds"] == pytest.approx(market["seconds"] * 32621 / 12936)
    assert result["host_peak_rss_mb"] > 50


def test_bench_user_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--config", str(tmp_path / "missing.yaml"), "--tiny"]) == 2
    assert main(["bench", "--config", str(CPU_DEMO), "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "missing.yaml" in err and "--steps" in err
