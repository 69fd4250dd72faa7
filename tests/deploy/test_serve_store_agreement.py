"""One gallery built twice, with the default SQLite store and with `--store milvus:./g.db`, answers `POST /search`
the same through the service: the top-10 agree for at least 99 % of queries (exact indexes in both), compared by
each match's source, since ids are each store's own. A few hundred entries: built by `spanet gallery build`, plus
entries with cameras and times enrolled through `POST /gallery`, so camera sets and time windows are searched too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import make_checkpoint
from spanet.cli import main

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("httpx") is None,
                       reason="the service needs spanet[serve] and TestClient needs httpx"),
    pytest.mark.skipif(importlib.util.find_spec("pymilvus") is None or importlib.util.find_spec("milvus_lite") is None,
                       reason="pymilvus and milvus-lite are not installed (pip install 'spanet[milvus]')"),
    pytest.mark.usefixtures("one_thread"),
]  # fmt: skip

BUILT, TIMED, CAMERAS = 240, 60, 6
T0 = "2024-05-01T{hour:02d}:00:00Z"


def _image(path: Path, rng: np.random.Generator) -> Path:
    """A 64×32 crop: a flat "shirt" and "trousers" colour with noise, so features spread out like people's do."""
    pixels = rng.integers(0, 256, size=(64, 32, 3), dtype=np.uint8)
    pixels[:32] = (0.7 * rng.integers(0, 256, size=3) + 0.3 * pixels[:32]).astype(np.uint8)
    pixels[32:] = (0.7 * rng.integers(0, 256, size=3) + 0.3 * pixels[32:]).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)
    return path


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("agreement")
    rng = np.random.default_rng(7)
    built = [_image(root / "imgs" / f"{i % 40:04d}_c{1 + i % CAMERAS}s1_{i:06d}_00.jpg", rng) for i in range(BUILT)]
    timed = [_image(root / "timed" / f"timed_{i:03d}.jpg", rng) for i in range(TIMED)]
    queries = [_image(root / "queries" / f"q{i:03d}.jpg", rng) for i in range(30)] + built[::24]
    return {"root": root, "checkpoint": make_checkpoint(root / "model.pt"), "built": built, "timed": timed,
            "queries": queries}  # fmt: skip


def _forms(index: int) -> list[dict]:
    """The filters each query is sent with: none, a camera, all but a camera, a camera set, a time window, both."""
    camera = 1 + index % CAMERAS
    window = {"after": T0.format(hour=2), "before": T0.format(hour=7)}
    return [{}, {"camera": camera}, {"exclude_camera": camera}, {"cameras": f"{camera},{1 + (index + 2) % CAMERAS}"},
            window, {"camera": camera, **window}]  # fmt: skip


def _serve_and_search(material: dict, folder: Path) -> list[list[tuple[str, float]]]:
    """Enrol the timed images through the service, then every query with every filter: [(source, distance)] each."""
    from fastapi.testclient import TestClient

    from spanet.deploy.backend import open_gallery
    from spanet.deploy.service import create_app
    from spanet.features import FeatureExtractor

    extractor = FeatureExtractor(material["checkpoint"], device="cpu", batch_size=64, amp="auto")  # as `spanet serve`
    gallery = open_gallery(folder, model_info=extractor.info)  # the store the folder was built with
    results = []
    try:
        with TestClient(create_app(gallery=gallery, extractor=extractor)) as client:
            for hour in range(TIMED // 5):  # five entries per request, one camera and one time each
                files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in material["timed"][hour * 5 : hour * 5 + 5]]
                form = {"camera": 1 + hour % CAMERAS, "timestamp": T0.format(hour=hour + 1)}
                assert client.post("/gallery", files=files, data=form).status_code == 200
            assert client.get("/health").json()["gallery_size"] == BUILT + TIMED
            for index, path in enumerate(material["queries"]):
                for form in _forms(index):
                    response = client.post("/search", files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                                           data={"top_k": 10, **form})  # fmt: skip
                    assert response.status_code == 200, response.text
                    results.append([(Path(m["source"]).name, m["distance"]) for m in response.json()["matches"]])
    finally:
        gallery.close()
    return results


@pytest.mark.slow
def test_sqlite_and_milvus_lite_agree_through_the_service(material: dict) -> None:
    root, checkpoint = material["root"], material["checkpoint"]
    results = {}
    for name, store in (("sqlite", ()), ("milvus", ("--store", f"milvus:{root / 'g.db'}"))):
        assert main(["gallery", "build", str(root / name), str(root / "imgs"), "--checkpoint", str(checkpoint),
                     "--quiet", "--device", "cpu", "--batch-size", "64", *store]) == 0  # fmt: skip
        results[name] = _serve_and_search(material, root / name)
    sql, mil = results["sqlite"], results["milvus"]
    assert len(sql) == len(mil) == len(material["queries"]) * len(_forms(0))
    assert sum(len(r) == 10 for r in sql) > 0.8 * len(sql)  # most filters leave ten or more candidates
    assert any(0 < len(r) < 10 for r in sql) and any(not r for r in sql)  # a camera in a time window: 5 or none
    same = [[s for s, _ in a] == [s for s, _ in b] for a, b in zip(sql, mil)]
    assert np.mean(same) >= 0.99, f"top-10 sources agree for {np.mean(same):.1%} of {len(same)} searches"
    for a, b in zip(sql, mil):  # ranks may swap only where distances tie
        assert [d for _, d in a] == pytest.approx([d for _, d in b], rel=1e-4, abs=1e-5)
    built_queries = material["queries"][30:]
    assert all(sql[(30 + i) * len(_forms(0))][0] == (q.name, pytest.approx(0, abs=1e-3)) for i, q in enumerate(built_queries))
