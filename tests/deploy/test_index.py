"""Gallery index: flat search is exact, ivfpq finds the neighbours, parameters follow the gallery, files round-trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from spanet.errors import SpanetError
from spanet.deploy.index import GalleryIndex, IndexParams, check_compatible, choose_params


def _clustered(num: int, dim: int, *, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return (centres[rng.integers(0, clusters, num)] + 0.25 * rng.normal(size=(num, dim))).astype(np.float32)


def _exact_neighbours(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    distances = ((queries[:, None, :].astype(np.float64) - gallery[None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


def test_flat_search_is_exact() -> None:
    gallery = _clustered(300, 16, clusters=10, seed=0)
    queries = _clustered(7, 16, clusters=10, seed=1)
    index = GalleryIndex.build(gallery, [f"g{i}.jpg" for i in range(300)], params=choose_params(300, 16))
    matches = index.search(queries, top_k=5)
    want_distances, want_rows = _exact_neighbours(queries, gallery, 5)
    for query_matches, rows, distances in zip(matches, want_rows, want_distances):
        assert [m.row for m in query_matches] == list(rows)
        assert [m.path for m in query_matches] == [f"g{r}.jpg" for r in rows]
        np.testing.assert_allclose([m.distance for m in query_matches], distances, rtol=1e-4)


def test_top_k_larger_than_gallery_returns_everything() -> None:
    gallery = _clustered(4, 8, clusters=2, seed=0)
    index = GalleryIndex.build(gallery, list("abcd"), params=IndexParams())
    matches = index.search(gallery[:1], top_k=10)[0]
    assert sorted(m.path for m in matches) == list("abcd")
    assert matches[0].path == "a" and matches[0].distance == pytest.approx(0.0, abs=1e-5)


def test_choose_params_follows_gallery_size() -> None:
    params = choose_params(1_000_000, 256, kind="ivfpq")
    assert params.nlist == 4000  # 4·√N
    assert 256 % params.m == 0 and 256 // params.m >= 4
    assert params.pca_dim is None and params.nbits == 8
    assert params.train_size >= 39 * params.nlist
    assert 1 <= params.nprobe <= params.nlist
    wide = choose_params(1_000_000, 12288, kind="ivfpq")
    assert wide.pca_dim == 256 and 256 % wide.m == 0
    small = choose_params(1000, 64, kind="ivfpq")
    assert small.nlist <= 1000 // 39 and small.nlist <= round(4 * math.sqrt(1000))
    assert 2**small.nbits * 39 <= small.train_size  # enough training points per PQ centroid
    overridden = choose_params(1_000_000, 256, kind="ivfpq", nlist=1024, m=32, nbits=6, nprobe=16, pca_dim=128)
    assert (overridden.nlist, overridden.m, overridden.nbits, overridden.nprobe, overridden.pca_dim) == (1024, 32, 6, 16, 128)
    assert choose_params(10, 4).kind == "flat"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "hnsw"}, "unknown"),
        ({"kind": "ivfpq", "m": 7}, "divide"),
        ({"kind": "ivfpq", "nlist": 10**9}, "nlist"),
        ({"kind": "ivfpq", "pca_dim": 999}, "pca"),
        ({"kind": "ivfpq", "refine": "pq"}, "refine"),
    ],
)
def test_choose_params_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(SpanetError, match=message):
        choose_params(5000, 64, **kwargs)


def test_ivfpq_finds_neighbours_and_round_trips(tmp_path: Path) -> None:
    gallery = _clustered(2000, 32, clusters=20, seed=0)
    queries = gallery[:50] + 0.01 * np.random.default_rng(3).normal(size=(50, 32)).astype(np.float32)
    params = choose_params(2000, 32, kind="ivfpq", nbits=6)
    index = GalleryIndex.build(gallery, [f"{i}" for i in range(2000)], params=params, info={"kind": "parts"})
    assert index.meta["factory"].startswith("IVF") and "PQ" in index.meta["factory"]
    _, rows = index.search_arrays(queries, top_k=10)
    _, exact = _exact_neighbours(queries, gallery, 10)
    recall = np.mean([len(set(r) & set(e)) / 10 for r, e in zip(rows, exact)])
    assert recall >= 0.8
    assert np.mean(rows[:, 0] == np.arange(50)) >= 0.95  # a near-duplicate query finds its own image first
    index.save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.paths == index.paths and loaded.meta == json.loads(json.dumps(index.meta))
    _, loaded_rows = loaded.search_arrays(queries, top_k=10)
    np.testing.assert_array_equal(loaded_rows, rows)


def test_wide_features_use_pca(tmp_path: Path) -> None:
    gallery = _clustered(400, 1536, clusters=8, seed=0)
    params = choose_params(400, 1536, kind="ivfpq", nbits=4)
    assert params.pca_dim == 256  # wide features get a PCA by default
    params = choose_params(400, 1536, kind="ivfpq", pca_dim=32, nbits=3)
    index = GalleryIndex.build(gallery, [str(i) for i in range(400)], params=params)
    assert index.meta["factory"].startswith("PCA32,")
    import faiss

    pca = faiss.downcast_VectorTransform(faiss.downcast_index(index.index).chain.at(0))
    assert pca.PCAMat.size() == 1536 * 32  # only the kept eigenvectors are stored
    _, rows = index.search_arrays(gallery[:20], top_k=1)
    assert np.mean(rows[:, 0] == np.arange(20)) >= 0.9


def test_dimension_mismatch_and_bad_inputs() -> None:
    index = GalleryIndex.build(_clustered(20, 8, clusters=2, seed=0), [str(i) for i in range(20)], params=IndexParams())
    with pytest.raises(SpanetError, match="dimension 4"):
        index.search(np.zeros((1, 4), dtype=np.float32), top_k=3)
    with pytest.raises(SpanetError, match="top_k"):
        index.search(np.zeros((1, 8), dtype=np.float32), top_k=0)
    with pytest.raises(SpanetError, match="NaN"):
        index.search(np.full((1, 8), np.nan, dtype=np.float32), top_k=1)
    with pytest.raises(SpanetError, match="match one to one"):
        GalleryIndex.build(np.zeros((3, 8), dtype=np.float32), ["a"], params=IndexParams())


def test_load_rejects_missing_or_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(SpanetError, match="lacks"):
        GalleryIndex.load(tmp_path)
    index = GalleryIndex.build(_clustered(5, 4, clusters=1, seed=0), list("abcde"), params=IndexParams())
    folder = index.save(tmp_path / "idx")
    (folder / "paths.txt").write_text("a\nb\n")
    with pytest.raises(SpanetError, match="rebuild"):
        GalleryIndex.load(folder)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(SpanetError, match="not valid JSON"):
        GalleryIndex.load(folder)


def test_check_compatible() -> None:
    built = {"checkpoint": "a.pt", "kind": "parts", "args_fingerprint": "A", "weights_fingerprint": "W", "feature_dim": 8}
    meta = {"feature_dim": 8, "model": built}
    check_compatible(meta, dict(built), index_path="idx")  # the same model passes
    check_compatible({"feature_dim": 8, "model": {}}, dict(built), index_path="idx")  # features from elsewhere
    for key, value, message in (
        ("feature_dim", 16, "8-d features"),
        ("kind", "global", "feature kind"),
        ("args_fingerprint", "B", "architecture"),
        ("weights_fingerprint", "V", "weights"),
    ):
        with pytest.raises(SpanetError, match=message):
            check_compatible(meta, {**built, key: value}, index_path="idx")


def test_a_changed_or_damaged_index_file_is_named(tmp_path: Path) -> None:
    index = GalleryIndex.build(_clustered(20, 8, clusters=2, seed=0), [f"{i}.jpg" for i in range(20)], params=IndexParams())
    folder = index.save(tmp_path / "idx")
    assert len(GalleryIndex.load(folder)) == 20
    paths = folder / "paths.txt"
    paths.write_text(paths.read_text().replace("3.jpg", "X.jpg"))  # same number of lines: only a checksum sees it
    with pytest.raises(SpanetError, match=r"paths\.txt is damaged or was changed"):
        GalleryIndex.load(folder)
