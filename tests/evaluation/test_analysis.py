"""Per-query results and the camera-pair matrix: agreement with the ranking metrics, and a colour-cast camera."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spanet.cli import main
from spanet.data.datasets import Sample
from spanet.evaluation.analysis import camera_pair_matrix, per_query_results, worst_queries
from spanet.evaluation.metrics import rank_metrics
from builders import make_checkpoint

# 0-based (files named _c2). Without the cast, camera 0 is the worst row of this tiny set (mAP row means 0.51,
# 0.69, 0.62); casting camera 0, 1 or 2 made that camera the worst row each time.
CAST_CAMERA = 1


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _random_protocol(seed: int = 0):
    rng = np.random.default_rng(seed)
    query = [Sample(f"q{i}", int(rng.integers(0, 8)), int(rng.integers(0, 3))) for i in range(40)]
    gallery = [Sample(f"g{i}", int(rng.integers(0, 8)), int(rng.integers(0, 3))) for i in range(120)]
    distances = rng.random((40, 120)).astype(np.float32)
    ids = lambda samples: (np.array([s.pid for s in samples]), np.array([s.camid for s in samples]))  # noqa: E731
    return distances, query, gallery, ids(query), ids(gallery)


def test_per_query_ap_and_ranks_agree_with_rank_metrics() -> None:
    distances, query, gallery, (q_pids, q_cams), (g_pids, g_cams) = _random_protocol()
    records = per_query_results(distances, query, gallery)
    metrics = rank_metrics(distances, q_pids, g_pids, q_cams, g_cams)
    scored = [r for r in records if r["ap"] is not None]
    assert len(scored) == metrics.num_valid_queries
    assert np.mean([r["ap"] for r in scored]) == pytest.approx(metrics.mAP, abs=1e-12)
    assert np.mean([r["first_match_rank"] == 1 for r in scored]) == pytest.approx(metrics.rank(1))
    assert np.mean([len([s for s in gallery if s.pid == query[i].pid and s.camid != query[i].camid])
                    / records[i]["hardest_match_rank"] for i, r in enumerate(records) if r["ap"] is not None]
                   ) == pytest.approx(metrics.mINP)
    worst = worst_queries(records, 3)
    assert [records[i]["ap"] for i in worst] == sorted(r["ap"] for r in scored)[:3]


def test_camera_pair_cells_are_the_ranking_of_that_block() -> None:
    distances, query, gallery, (q_pids, q_cams), (g_pids, g_cams) = _random_protocol(1)
    matrix = camera_pair_matrix(distances, query, gallery)
    assert matrix["cameras"] == [0, 1, 2] and all(matrix["rank1"][i][i] is None for i in range(3))
    rows, cols = np.flatnonzero(q_cams == 0), np.flatnonzero(g_cams == 2)
    block = rank_metrics(distances[np.ix_(rows, cols)], q_pids[rows], g_pids[cols], q_cams[rows], g_cams[cols])
    assert matrix["mAP"][0][2] == block.mAP and matrix["rank1"][0][2] == block.rank(1)
    assert camera_pair_matrix(distances, query, gallery, cross_camera=False) is None


def test_colour_cast_camera_is_the_worst_row(tiny_market: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "cast"
    shutil.copytree(tiny_market, root)
    for path in root.rglob(f"*_c{CAST_CAMERA + 1}s*.jpg"):
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        cast = pixels * np.array([1.0, 0.35, 0.2]) + np.array([90.0, 0.0, 0.0])  # strong red/orange cast
        Image.fromarray(np.clip(cast, 0, 255).astype(np.uint8)).save(path)
    checkpoint = make_checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--data-root", str(root),
                 "--out", str(out), "--no-progress", "--embedding"]) == 0
    capsys.readouterr()
    matrix = json.loads((out / "metrics.json").read_text())["camera_pairs"]
    assert matrix["worst_query_camera"] == CAST_CAMERA
    means = [np.mean([v for v in row if v is not None]) for row in matrix["mAP"]]
    assert int(np.argmin(means)) == matrix["cameras"].index(CAST_CAMERA)
    assert (out / "analysis" / "camera_pairs.png").is_file()
    assert Image.open(out / "analysis" / "embedding.png").size[0] > 100  # the t-SNE scatter
    from spanet.viz.report import build_report

    page = build_report(tmp_path).read_text()
    assert "Evaluation analysis" in page and "camera_pairs.png" in page and "protocol: cross-camera" not in page
    assert "cross-camera" in page  # the metrics table says which protocol ran
