"""Own crops end to end: check-data → train (tiny) → evaluate → extract → index → search, four layouts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from spanet.cli import main
from builders import write_own_data

TINY = ["data.height=64", "data.width=32", "data.batch_size=8", "data.num_workers=0", "model.backbone=resnet18",
        "model.pretrained=null", "model.reduced_dim=32", "optim.epochs=1", "optim.milestones=[1]",
        "train.device=cpu", "train.eval_every=1", "data.val_ids=2", "train.max_steps_per_epoch=2", "train.progress=false"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.mark.parametrize("cameras", [True, False], ids=["cameras", "no-cameras"])
@pytest.mark.parametrize("layout", ["folders", "list"])
def test_own_data_pipeline(tiny_market: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str,
                           cameras: bool) -> None:
    root = write_own_data(tiny_market, tmp_path / "data", layout=layout, cameras=cameras)
    data = ["--dataset", layout, "--data-root", str(root)]
    protocol = "cross-camera" if cameras else "no camera ids"

    assert main(["check-data", *data]) == 0
    out = capsys.readouterr().out
    assert f"protocol: {protocol}" in out and "split: seeded identity split (seed 0, test fraction 0.5)" in out

    run = tmp_path / "run"
    sets = [arg for item in TINY for arg in ("--set", item)]
    assert main(["train", *data, "--output", str(run), *sets]) == 0
    assert (run / "split.csv").is_file() and (run / "best.pt").is_file()  # validation on 2 held-out identities ran
    capsys.readouterr()

    eval_dir = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), *data, "--out", str(eval_dir), "--verification",
                 "--visualize", "3", "--visualize-queries", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"protocol: {protocol}" in out and "TPR@FPR=0.01" in out and "DIR@FPIR=0.05" in out
    assert "cross-domain" not in out
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["protocol"] == ("cross-camera" if cameras else "no-camera")
    assert metrics["queries"]["skipped"] == 0  # the query/gallery rule leaves every query a true match
    assert [row["fpr_target"] for row in metrics["verification"]["at_fpr"]] == [1e-4, 1e-3, 1e-2]
    assert (metrics["camera_pairs"] is not None) == cameras
    with open(eval_dir / "per_query.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["queries"]["valid"]
    assert abs(sum(float(r["ap"]) for r in rows) / len(rows) - metrics["plain"]["mAP"]) < 1e-6
    assert len(list((eval_dir / "worst").glob("*.png"))) == 2
    assert (eval_dir / "split.csv").read_text() == (run / "split.csv").read_text()

    query_dir = Path(rows[0]["path"]).parent  # one identity's folder of crops
    feats = tmp_path / "q.npz"
    assert main(["extract", "--checkpoint", str(run / "last.pt"), str(query_dir), "--out", str(feats), "--quiet"]) == 0
    index = tmp_path / "index"
    assert main(["index", "build", str(eval_dir / "features.npz"), "--out", str(index)]) == 0
    capsys.readouterr()
    results = tmp_path / "search.json"
    assert main(["search", "--checkpoint", str(run / "last.pt"), "--index", str(index), rows[0]["path"],
                 "--threshold", "0", "--json", str(results), "--quiet"]) == 0
    found = json.loads(results.read_text())[0]
    assert found["identity"] == "unknown" and not any(m["known"] for m in found["matches"])
    assert "unknown" in capsys.readouterr().out
