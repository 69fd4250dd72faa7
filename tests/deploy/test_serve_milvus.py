"""`spanet gallery build --store milvus:…` and `spanet serve` on it give the same results as the default SQLite
store on the same images: same top-10 ids and distances for every query, with and without a camera filter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from builders import make_checkpoint, make_images, start_server, write_images
from spanet.cli import main

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("uvicorn") is None, reason="the service needs spanet[serve]"),
    pytest.mark.skipif(importlib.util.find_spec("pymilvus") is None or importlib.util.find_spec("milvus_lite") is None,
                       reason="pymilvus and milvus-lite are not installed (pip install 'spanet[milvus]')"),
]  # fmt: skip


def _build(folder: Path, images: Path, checkpoint: Path, *extra: str) -> None:
    assert main(["gallery", "build", str(folder), str(images), "--checkpoint", str(checkpoint), "--quiet",
                 "--device", "cpu", "--batch-size", "16", *extra]) == 0  # fmt: skip


def _search(client, path: Path, **form: int) -> list[tuple[int, str, float]]:
    with path.open("rb") as handle:
        response = client.post("/search", files={"file": (path.name, handle, "image/jpeg")}, data={"top_k": 10, **form})
    assert response.status_code == 200, response.text
    return [(m["id"], m["source"], m["distance"]) for m in response.json()["matches"]]


@pytest.mark.slow
def test_serve_milvus_same_results_as_sqlite(tmp_path: Path) -> None:
    import httpx

    checkpoint = make_checkpoint(tmp_path / "model.pt")
    names = [f"{i % 9:04d}_c{1 + i % 4}s1_{i:06d}_00.jpg" for i in range(48)]
    write_images(tmp_path / "imgs", names)
    queries = make_images(tmp_path / "queries", count=8, seed=3) + sorted((tmp_path / "imgs").iterdir())[:4]
    _build(tmp_path / "sql", tmp_path / "imgs", checkpoint)
    _build(tmp_path / "mil", tmp_path / "imgs", checkpoint, "--store", f"milvus:{tmp_path / 'g.db'}")
    results = {}
    for name, extra in (("sql", ()), ("mil", ("--store", f"milvus:{tmp_path / 'g.db'}"))):
        process, url = start_server(tmp_path / name, checkpoint, extra=extra)
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                assert "<html" in client.get("/").text.lower()
                health = client.get("/health").json()
                assert health["gallery_size"] == 48 and health["cameras"] == [1, 2, 3, 4]
                results[name] = [_search(client, q, **form) for q in queries for form in ({}, {"camera": 2},
                                                                                           {"exclude_camera": 1})]
                listing = client.get("/gallery", params={"camera": 3, "limit": 5, "offset": 2}).json()
                results[name].append([(e["id"], e["source"], 0.0) for e in listing["entries"]] + [(listing["total"], "", 0)])
                if name == "mil":  # read-your-writes: an enrolled image is found by the next search
                    with queries[0].open("rb") as handle:
                        enrolled = client.post("/gallery", files={"files": ("new.jpg", handle, "image/jpeg")}).json()
                    assert enrolled["gallery_size"] == 49
                    assert _search(client, queries[0])[0][:2] == (enrolled["ids"][0], "new.jpg")
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert len(results["sql"]) == len(queries) * 3 + 1
    for sql, mil in zip(results["sql"], results["mil"]):
        assert [(i, s) for i, s, _ in sql] == [(i, s) for i, s, _ in mil]
        assert [d for *_, d in sql] == pytest.approx([d for *_, d in mil], rel=1e-5, abs=1e-6)
    assert all(len(r) == 10 for r in results["sql"][:3])


def test_gallery_build_refuses_the_other_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = make_checkpoint(tmp_path / "model.pt")
    write_images(tmp_path / "imgs", ["0001_c1s1_000001_00.jpg"])
    _build(tmp_path / "mil", tmp_path / "imgs", checkpoint, "--store", f"milvus:{tmp_path / 'g.db'}")
    assert main(["gallery", "build", str(tmp_path / "mil"), str(tmp_path / "imgs"), "--checkpoint", str(checkpoint),
                 "--store", "sqlite", "--device", "cpu"]) == 2  # fmt: skip
    assert "lives in milvus" in capsys.readouterr().err
    _build(tmp_path / "mil", tmp_path / "imgs", checkpoint)  # without --store: the folder's own store
    assert "1 already there" in capsys.readouterr().out
