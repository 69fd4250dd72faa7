"""The deploy commands end to end: extract -> index build -> search (+ JSON, pictures), export, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builders import make_checkpoint, make_images
from spanet.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deploy")
    gallery = root / "gallery"
    make_images(gallery, count=6, seed=0)
    (gallery / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (gallery / "readme.txt").write_text("ignored: not an image extension")
    return {
        "root": root,
        "gallery": gallery,
        "checkpoint": make_checkpoint(root / "model.pt", seed=0),
        "other_checkpoint": make_checkpoint(root / "other.pt", seed=1),
    }


@pytest.fixture(scope="module")
def built_index(workspace: dict[str, Path]) -> Path:
    feats = workspace["root"] / "feats.npz"
    assert main(["extract", "--checkpoint", str(workspace["checkpoint"]), str(workspace["gallery"]), "--out", str(feats), "--quiet"]) == 0
    index = workspace["root"] / "index"
    assert main(["index", "build", str(feats), "--out", str(index)]) == 0
    return index


def test_extract_skips_unreadable_and_records_the_model(workspace: dict[str, Path], built_index: Path, capsys) -> None:
    with np.load(workspace["root"] / "feats.npz", allow_pickle=False) as data:
        paths = list(data["paths"])
        assert len(paths) == 6 and all(p.endswith(".jpg") and "broken" not in p for p in paths)
        assert [Path(p).name for p in data["failed"]] == ["broken.jpg"]
        assert data["features"].shape == (6, 6 * 512)
        info = json.loads(str(data["model_info"]))
        assert info["checkpoint"] == str(workspace["checkpoint"]) and info["kind"] == "parts"
    meta = json.loads((built_index / "meta.json").read_text())
    assert meta["feature_dim"] == 6 * 512 and meta["params"]["kind"] == "flat"
    assert meta["model"]["weights_fingerprint"] == info["weights_fingerprint"]
    assert (built_index / "paths.txt").read_text().splitlines() == paths


def test_extract_reports_skipped_count(workspace: dict[str, Path], tmp_path: Path, capsys) -> None:
    code = main(["extract", "--checkpoint", str(workspace["checkpoint"]), str(workspace["gallery"]),
                 "--out", str(tmp_path / "f.npz"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    assert "skipped 1 unreadable" in captured.err and "broken.jpg" in captured.err
    assert "extracted 6" in captured.out


def test_search_finds_each_gallery_image_first(workspace: dict[str, Path], built_index: Path, tmp_path: Path, capsys) -> None:
    queries = sorted((workspace["gallery"] / "a").glob("*.jpg"))
    out_json = tmp_path / "results.json"
    code = main([
        "search", "--index", str(built_index), "--checkpoint", str(workspace["checkpoint"]),
        *map(str, queries), "--top-k", "3", "--json", str(out_json), "--visualize", str(tmp_path / "pics"), "--quiet",
    ])
    printed = capsys.readouterr().out
    assert code == 0
    results = json.loads(out_json.read_text())
    assert [r["query"] for r in results] == [str(q) for q in queries]
    for result in results:
        assert len(result["matches"]) == 3
        assert result["matches"][0]["path"] == result["query"]  # a gallery image is its own nearest neighbour
        assert result["matches"][0]["distance"] == pytest.approx(0.0, abs=1e-3)
        distances = [m["distance"] for m in result["matches"]]
        assert distances == sorted(distances)
        assert result["query"] in printed
    assert len(list((tmp_path / "pics").glob("*.png"))) == len(queries)


def test_search_honours_amp(workspace: dict[str, Path], built_index: Path, tmp_path: Path) -> None:
    """`search --amp` decides the query features' precision (it was accepted and ignored): bf16 and float32 queries
    give different distances to the same gallery, float32 twice gives the same."""
    query = sorted((workspace["gallery"] / "a").glob("*.jpg"))[0]
    distances = {}
    for name, amp in (("fp32", "none"), ("again", "none"), ("bf16", "bf16")):
        out = tmp_path / f"{name}.json"
        assert main(["search", "--index", str(built_index), "--checkpoint", str(workspace["checkpoint"]), str(query),
                     "--top-k", "3", "--amp", amp, "--json", str(out), "--quiet"]) == 0  # fmt: skip
        distances[name] = [m["distance"] for m in json.loads(out.read_text())[0]["matches"]]
    assert distances["fp32"] == distances["again"] and distances["bf16"] != distances["fp32"]
    assert distances["bf16"] == pytest.approx(distances["fp32"], abs=0.05)


def test_search_index_auto_threshold_follows_the_serve_rule(workspace: dict[str, Path], built_index: Path,
                                                             tmp_path: Path, capsys) -> None:  # fmt: skip
    """`search --index --threshold auto` without a calibration file says so and marks nothing unknown (as `serve` and
    `search --gallery`); with one beside the checkpoint it uses and names it."""
    import shutil

    from builders import write_calibration

    query = sorted((workspace["gallery"] / "a").glob("*.jpg"))[0]
    checkpoint = Path(shutil.copy(workspace["checkpoint"], tmp_path / "last.pt"))
    args = ["search", "--index", str(built_index), "--checkpoint", str(checkpoint), str(query), "--threshold", "auto",
            "--quiet", "--json", str(tmp_path / "hits.json"), "--overwrite"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    assert f"threshold: none ({tmp_path / 'calibration.json'} does not exist" in capsys.readouterr().out
    assert all(m["known"] for m in json.loads((tmp_path / "hits.json").read_text())[0]["matches"])
    write_calibration(tmp_path / "calibration.json", checkpoint, 0.0)
    assert main(args) == 0
    assert f"threshold 0 from {tmp_path / 'calibration.json'}" in capsys.readouterr().out
    assert not any(m["known"] for m in json.loads((tmp_path / "hits.json").read_text())[0]["matches"][1:])


def test_search_with_another_checkpoint_is_refused(workspace: dict[str, Path], built_index: Path, capsys) -> None:
    query = next((workspace["gallery"] / "a").glob("*.jpg"))
    code = main(["search", "--index", str(built_index), "--checkpoint", str(workspace["other_checkpoint"]), str(query), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "different model weights" in err and len(err.strip().splitlines()) == 1


def test_index_build_ivfpq_and_search(workspace: dict[str, Path], built_index: Path, tmp_path: Path, capsys) -> None:
    """With nlist=1 and 1-bit codes the ivfpq index works on six images; re-ranking keeps exact order."""
    index = tmp_path / "ivf"
    code = main(["index", "build", str(workspace["root"] / "feats.npz"), "--out", str(index), "--kind", "ivfpq",
                 "--nlist", "1", "--nbits", "1", "--pca", "0", "--refine", "flat", "--m", "4"])
    assert code == 0
    meta = json.loads((index / "meta.json").read_text())
    assert meta["factory"] == "IVF1,PQ4x1,RFlat"
    query = sorted((workspace["gallery"] / "b").rglob("*.jpg"))[0]
    out_json = tmp_path / "r.json"
    assert main(["search", "--index", str(index), "--checkpoint", str(workspace["checkpoint"]), str(query),
                 "--top-k", "2", "--json", str(out_json), "--quiet"]) == 0
    assert json.loads(out_json.read_text())[0]["matches"][0]["path"] == str(query)


def test_user_mistakes_exit_2(workspace: dict[str, Path], built_index: Path, tmp_path: Path, capsys) -> None:
    ckpt = str(workspace["checkpoint"])
    assert main(["extract", "--checkpoint", ckpt, str(tmp_path / "missing"), "--out", str(tmp_path / "f.npz")]) == 2
    assert main(["extract", "--checkpoint", ckpt, str(workspace["gallery"]), "--out", str(tmp_path / "f.txt")]) == 2
    assert main(["index", "build", str(tmp_path / "none.npz"), "--out", str(tmp_path / "i")]) == 2
    assert main(["search", "--index", str(tmp_path), "--checkpoint", ckpt, str(workspace["gallery"])]) == 2
    assert main(["index", "build", str(workspace["root"] / "feats.npz"), "--out", str(tmp_path / "i"),
                 "--kind", "ivfpq", "--m", "7"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 5


def test_export_command(workspace: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(workspace["checkpoint"]), "--out", str(out), "--kind", "global"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "max |onnxruntime - pytorch|" in printed and "batch 3" in printed
    assert "(B, 256)" in printed


def test_skip_corrupt_in_train_evaluate_and_cam(tmp_path: Path, capsys) -> None:
    """A corrupt image is left out and listed with --skip-corrupt; without it the error is one line naming it."""
    import shutil

    from builders import write_market

    root = write_market(tmp_path / "data")
    broken = root / "bounding_box_test" / "0021_c3s1_000099_00.jpg"
    broken.write_bytes(b"\xff\xd8\xff truncated")
    checkpoint = make_checkpoint(tmp_path / "m.pt", num_classes=3)
    common = ["--dataset", "market1501", "--data-root", str(root), "--device", "cpu"]
    assert main(["evaluate", "--checkpoint", str(checkpoint), *common, "--no-progress", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read image") and str(broken) in err and len(err.splitlines()) == 1
    assert main(["evaluate", "--checkpoint", str(checkpoint), *common, "--no-progress", "--skip-corrupt",
                 "--out", str(tmp_path / "e")]) == 0  # fmt: skip
    assert f"left out 1 corrupt image(s): {broken}" in capsys.readouterr().err
    images = tmp_path / "cam_in"
    shutil.copytree(root / "bounding_box_train", images)
    shutil.copy(broken, images / broken.name)
    assert main(["cam", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(tmp_path / "cam"),
                 "--skip-corrupt", "--stages", "stage1"]) == 0  # fmt: skip
    assert "left out 1 corrupt image(s)" in capsys.readouterr().err
    code = main(["train", *common, "--output", str(tmp_path / "run"), "--skip-corrupt", "--epochs", "1",
                 *("--set", "model.backbone=resnet18", "--set", "model.pretrained=null", "--set", "data.height=64",
                   "--set", "data.width=32", "--set", "data.batch_size=2", "--set", "data.num_workers=0",
                   "--set", "train.eval_every=0", "--set", "train.progress=false")])  # fmt: skip
    assert code == 0 and "left out 1 corrupt image(s)" in capsys.readouterr().err
