"""`spanet evaluate` end to end on the tiny synthetic dataset, and the library function behind it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import make_checkpoint
from spanet.cli import main
from spanet.evaluation.distance import pairwise_distances
from spanet.evaluation.metrics import rank_metrics
from spanet.features import load_features
from spanet.runtime import choose_precision


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("run") / "last.pt", num_classes=8)


def test_evaluate_writes_json_metrics_features_and_ranked_lists(tiny_market, checkpoint, tmp_path, capsys) -> None:
    json_path = tmp_path / "m.json"
    out = tmp_path / "eval"
    code = main([
        "evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--data-root", str(tiny_market),
        "--rerank", "--json", str(json_path), "--out", str(out), "--device", "cpu", "--no-progress",
        "--visualize", "3", "--visualize-queries", "2", "--batch-size", "16",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "rank-1" in printed and "re-ranked" in printed

    result = json.loads(json_path.read_text())
    assert set(result) <= {"plain", "reranked", "notes"}
    result.pop("notes", None)  # what is undefined on this small gallery
    for variant in result.values():
        assert set(variant) == {"rank1", "rank5", "rank10", "mAP", "mINP"}
        assert all(0.0 <= v <= 1.0 for v in variant.values())
        assert variant["rank1"] <= variant["rank5"] <= variant["rank10"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["plain"] == result["plain"] and metrics["reranked"] == result["reranked"]
    assert len(metrics["cmc"]["plain"]) == 50 and len(metrics["cmc"]["reranked"]) == 50
    assert metrics["cmc"]["plain"][0] == pytest.approx(result["plain"]["rank1"])

    # The saved features (the one .npz format) reproduce the reported plain metrics.
    saved = load_features(out / "features.npz")
    query, gallery = saved.select("query"), saved.select("gallery")
    assert len(query.paths) + len(gallery.paths) == len(saved.paths) and len(query.paths) > 0
    recomputed = rank_metrics(
        pairwise_distances(query.features, gallery.features), query.pids, gallery.pids, query.camids, gallery.camids
    )
    assert recomputed.mAP == pytest.approx(result["plain"]["mAP"], abs=1e-6)
    assert metrics["queries"]["valid"] == recomputed.num_valid_queries
    assert saved.info["checkpoint"] == str(checkpoint) and saved.info["weights_fingerprint"]

    assert len(list((out / "ranked").glob("*.png"))) == 2


def test_default_out_dir_is_beside_the_checkpoint_and_no_rerank_key(tiny_market, checkpoint, tmp_path) -> None:
    json_path = tmp_path / "plain.json"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--data-root",
                 str(tiny_market), "--json", str(json_path), "--device", "cpu", "--no-progress", "--flip",
                 "--metric", "cosine"])  # fmt: skip
    assert code == 0
    assert set(json.loads(json_path.read_text())) == {"plain"}
    assert (checkpoint.parent / "eval" / "metrics.json").is_file()
    written = json.loads((checkpoint.parent / "eval" / "metrics.json").read_text())
    auto = choose_precision("auto", torch.device("cpu")).amp  # bf16 on CPUs with native bf16, else "none" (fp32)
    assert written["metric"] == "cosine" and written["amp"] == auto


def test_user_mistakes_are_one_line_errors(tiny_market, tmp_path, capsys) -> None:
    code = main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--dataset", "synthetic",
                 "--data-root", str(tiny_market), "--device", "cpu"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.pt" in err and len(err.strip().splitlines()) == 1


def test_evaluate_model_returns_plain_metrics_for_the_training_loop(tiny_market, checkpoint) -> None:
    from spanet.checkpoint import load_model
    from spanet.data.datasets import load_dataset
    from spanet.evaluation.evaluate import evaluate_model

    model, state = load_model(checkpoint)
    from spanet.features import ExtractionOptions

    result = evaluate_model(model, load_dataset("synthetic", tiny_market), input_size=state["input_size"],
                            options=ExtractionOptions(batch_size=32, progress=False))  # fmt: skip
    assert result.reranked is None and result.distances is None
    assert result.rank1 == result.plain.rank(1) and result.mAP == result.plain.mAP
    assert 0.0 <= result.mINP <= 1.0 and 0.0 < result.mAP <= 1.0
    assert result.to_json() == {"plain": result.plain.summary()}


def test_evaluation_features_can_be_indexed_and_searched(tiny_market, checkpoint, tmp_path, capsys) -> None:
    """evaluate --out D, then index build D/features.npz, then search: the gallery rows are what is searched."""
    out, index = tmp_path / "eval", tmp_path / "index"
    common = ["--device", "cpu"]
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--data-root",
                 str(tiny_market), "--out", str(out), "--no-progress", *common]) == 0  # fmt: skip
    assert main(["index", "build", str(out / "features.npz"), "--out", str(index)]) == 0
    gallery = load_features(out / "features.npz").select("gallery")
    query_image = load_features(out / "features.npz").select("query").paths[0]
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--checkpoint", str(checkpoint), query_image, "--top-k", "3",
                 "--quiet", *common]) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == query_image and len(printed) == 4
    assert all(line.split()[-1] in gallery.paths for line in printed[1:])


def test_evaluating_another_checkpoint_into_the_same_folder_is_refused(tiny_market, checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    args = ["--dataset", "synthetic", "--data-root", str(tiny_market), "--out", str(out), "--device", "cpu",
            "--no-progress"]  # fmt: skip
    assert main(["evaluate", "--checkpoint", str(checkpoint), *args]) == 0
    before = (out / "metrics.json").read_text()
    assert main(["evaluate", "--checkpoint", str(checkpoint), *args]) == 0  # the same checkpoint again: fine
    other = make_checkpoint(tmp_path / "other.pt", seed=1, num_classes=8)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(other), *args]) == 2
    assert "already holds the evaluation of" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == before
    assert main(["evaluate", "--checkpoint", str(other), *args, "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["checkpoint"] == str(other)


def test_amp_evaluation_is_close_to_fp32(tiny_market, checkpoint, tmp_path) -> None:
    """`--amp bf16` (+ channels_last on a CPU): the same protocol, metrics within a few points on this tiny set."""
    results = {}
    for name, extra in (("fp32", ["--amp", "none"]), ("amp", ["--amp", "bf16"])):
        json_path = tmp_path / f"{name}.json"
        code = main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--data-root",
                     str(tiny_market), "--json", str(json_path), "--out", str(tmp_path / name), "--device", "cpu",
                     "--no-progress", *extra])  # fmt: skip
        assert code == 0
        results[name] = json.loads(json_path.read_text())["plain"]
    features = {name: load_features(tmp_path / name / "features.npz").features for name in results}
    assert not np.array_equal(features["fp32"], features["amp"])
    assert np.abs(features["fp32"] - features["amp"]).max() < 0.05
    assert abs(results["fp32"]["mAP"] - results["amp"]["mAP"]) < 0.05
