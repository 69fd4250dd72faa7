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


def test_evaluate_reports_an_unscorable_dataset_before_extracting(tmp_path: Path, capsys, monkeypatch) -> None:
    """Case 4: `spanet evaluate` used to extract every feature and only then fail in the metrics."""
    import spanet.evaluation.evaluate as evaluation
    from builders import make_checkpoint
    from spanet.cli import main

    extracted = []
    monkeypatch.setattr(evaluation, "extract_feature_set", lambda *args, **kwargs: extracted.append(1))
    root = write_market(tmp_path / "data", UNSCORABLE)
    checkpoint = make_checkpoint(tmp_path / "m.pt", num_classes=2)
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "market1501", "--data-root", str(root),
                 "--device", "cpu", "--no-progress", "--out", str(tmp_path / "eval")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "no query has a true match in another camera" in err
    assert extracted == [] and not (tmp_path / "eval" / "metrics.json").exists()


def test_a_library_warning_is_one_line_naming_its_category(tmp_path: Path) -> None:
    """torch's DataLoader advice (more workers than cores) came as `…/dataloader.py:431: UserWarning: …` + source."""
    code = ("import warnings, sys; from spanet.cli import _one_line_warnings\n"
            "with _one_line_warnings():\n"
            "    warnings.warn_explicit('This DataLoader will create 4 worker processes', UserWarning,\n"
            "                           '/site-packages/torch/utils/data/dataloader.py', 431)\n")  # fmt: skip
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.stderr == "warning (UserWarning): This DataLoader will create 4 worker processes\n"
