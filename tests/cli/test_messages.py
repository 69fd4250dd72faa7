"""What a user sees on stderr when a command warns and then stops: one line per message, no Python source lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from builders import write_market

# each query's id is in the gallery only under the query's own camera: the protocol would skip every query
UNSCORABLE = {
    "train": ["0007_c1s1_000001_00.jpg", "0007_c2s1_000002_00.jpg", "0003_c1s1_000003_00.jpg"],
    "query": ["0021_c1s1_000010_00.jpg"],
    "gallery": ["0021_c1s1_000012_00.jpg", "0000_c2s1_000015_00.jpg"],
}


def test_a_dataset_warning_then_an_error_is_two_lines(tmp_path: Path) -> None:
    """The dataset warning used to come as `…/loop.py:200: DatasetCountWarning: …` plus the source line."""
    root = write_market(tmp_path / "data", UNSCORABLE)
    completed = subprocess.run(
        [sys.executable, "-m", "spanet", "train", "--dataset", "market1501", "--data-root", str(root),
         "--output", str(tmp_path / "run"), "--device", "cpu", "--set", "model.backbone=resnet18"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = completed.stderr.splitlines()
    assert completed.returncode == 2, completed.stderr
    assert len(lines) == 2, completed.stderr
    assert lines[0].startswith("warning: market1501 in ") and "no query has a true match" in lines[0]
    assert lines[1].startswith("error: ") and "no query has a true match" in lines[1]
    assert "Warning:" not in completed.stderr and ".py:" not in completed.stderr
