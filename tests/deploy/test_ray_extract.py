"""`spanet extract --engine ray`: the features of `spanet extract` (to 1e-6) from a pool of model actors, Parquet
shards resumed by shard, loadable by `spanet gallery import`; one clear line when Ray is missing."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from builders import make_checkpoint, write_images
from spanet.cli import main


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray on 2 CPUs, usage statistics off, no dashboard, a small object store."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'spanet[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'spanet[ray]')")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
             log_to_driver=False, configure_logging=False)  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()


def _shards(folder: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    rows = {}
    for path in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(path)
        vectors = np.asarray(table["vector"].combine_chunks().flatten().to_numpy(), np.float32).reshape(len(table), -1)
        rows.update(zip(table["image"].to_pylist(), vectors))
    return rows


@pytest.mark.slow
def test_ray_features_equal_torch_and_resume(tmp_path: Path, local_ray: None, capsys: pytest.CaptureFixture) -> None:
    from spanet.deploy.ray_extract import RayOptions, extract_with_ray
    from spanet.features import FeatureExtractor

    checkpoint = make_checkpoint(tmp_path / "model.pt")
    paths = write_images(tmp_path / "imgs", [f"{i:04d}_c{1 + i % 3}s1_{i:06d}_00.jpg" for i in range(13)])
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 not an image")
    paths.append(tmp_path / "imgs" / "broken.jpg")
    # float32 on both sides (amp=False): reduced precision is allowed to differ by more than 1e-6
    reference = FeatureExtractor(checkpoint, device="cpu", batch_size=8, amp=False).extract_files(paths)
    options = RayOptions(workers=2, batch_size=3, shard_size=4, device="cpu", amp=False)
    report = extract_with_ray(checkpoint, paths, out=tmp_path / "shards", options=options)
    assert (report.rows, report.written, report.kept) == (13, 4, 0)
    assert [Path(p).name for p, _ in report.failures] == ["broken.jpg"]
    rows = _shards(tmp_path / "shards")
    assert sorted(rows) == sorted(reference.paths)
    got = np.stack([rows[p] for p in reference.paths])
    assert got.shape == reference.features.shape
    np.testing.assert_allclose(got, reference.features, rtol=0, atol=1e-6)

    first, third = tmp_path / "shards" / "part-00000.parquet", tmp_path / "shards" / "part-00002.parquet"
    stamp = first.stat().st_mtime_ns
    third.unlink()  # a run stopped before this shard was complete
    ray_args = ["extract", str(tmp_path / "imgs"), "--checkpoint", str(checkpoint), "--device", "cpu", "--out",
                str(tmp_path / "shards"), "--engine", "ray", "--workers", "2", "--shard-size", "4", "--batch-size", "3"]  # fmt: skip
    assert main(ray_args) == 0
    out = capsys.readouterr()
    assert "extracted 4 images into 1 new shard(s)" in out.out and "(3 shard(s) already complete)" in out.out
    assert "broken.jpg" in out.err
    assert first.stat().st_mtime_ns == stamp and third.is_file() and len(_shards(tmp_path / "shards")) == 13

    assert main(["gallery", "import", str(tmp_path / "g"), str(tmp_path / "shards")]) == 0
    assert "imported 13 entries" in capsys.readouterr().out
    from spanet.deploy.backend import open_gallery

    gallery = open_gallery(tmp_path / "g", model_info=FeatureExtractor(checkpoint, device="cpu").info)
    entries = gallery.get([int(i) for i in gallery.ids()])
    assert sorted((Path(e.source).name, e.camera, e.label) for e in entries.values())[:2] == [
        ("0000_c1s1_000000_00.jpg", 1, "0000"), ("0001_c2s1_000001_00.jpg", 2, "0001")]
    gallery.close()


def test_ray_inputs_from_lists(tmp_path: Path) -> None:
    """--engine ray reads folders and globs like `spanet extract`, and lists: .txt (relative to the list) and .parquet."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from spanet.cli.scale import ray_inputs
    from spanet.errors import SpanetError

    images = write_images(tmp_path / "imgs", ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "list.txt").write_text("# crops of camera 1\nimgs/a.jpg\n\nimgs/b.jpg\n", encoding="utf-8")
    pq.write_table(pa.table({"path": [str(images[2])]}), tmp_path / "more.parquet")
    got = ray_inputs([str(tmp_path / "list.txt"), str(tmp_path / "more.parquet"), str(tmp_path / "imgs")])
    assert [p.resolve() for p in got] == [images[0], images[1], images[2], *images]
    pq.write_table(pa.table({"file": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(SpanetError, match="no 'image' or 'path' column"):
        ray_inputs([str(tmp_path / "bad.parquet")])


def test_ray_missing_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    write_images(tmp_path / "imgs", ["a.jpg"])
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as without the extra
    assert main(["extract", str(tmp_path / "imgs"), "--checkpoint", str(tmp_path / "none.pt"), "--out",
                 str(tmp_path / "shards"), "--engine", "ray"]) == 2  # fmt: skip
    assert "pip install 'spanet[ray]'" in capsys.readouterr().err
