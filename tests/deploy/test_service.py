"""The search service through FastAPI's TestClient: results equal `spanet search` and brute force, survive a restart,
and every kind of bad input gets a JSON 4xx."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service needs the 'serve' extra: pip install 'spanet[serve]'")
pytest.importorskip("httpx", reason="TestClient needs httpx")

from builders import make_checkpoint, write_images  # noqa: E402
from PIL import Image  # noqa: E402

NAMES = [f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg" for i, (pid, cam) in enumerate([(1, 1), (1, 2), (2, 1), (2, 3), (3, 2)] * 2)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    from spanet.deploy.enrol import enrol_files
    from spanet.deploy.gallery import Gallery
    from spanet.features import FeatureExtractor

    root = tmp_path_factory.mktemp("service")
    checkpoint = make_checkpoint(root / "model.pt")
    images = write_images(root / "imgs", NAMES)
    extractor = FeatureExtractor(checkpoint, device="cpu", amp="auto")  # as `spanet serve` and `spanet search` run
    gallery = Gallery.open(root / "gallery", model_info=extractor.info, create=True)
    enrol_files(gallery, extractor, images)
    gallery.close()
    return {"root": root, "checkpoint": checkpoint, "images": images, "extractor": extractor}


def _client(setup, **kwargs):
    from fastapi.testclient import TestClient

    from spanet.deploy.gallery import Gallery
    from spanet.deploy.service import create_app

    gallery = Gallery.open(setup["root"] / "gallery", model_info=setup["extractor"].info)
    return TestClient(create_app(gallery=gallery, extractor=setup["extractor"], **kwargs)), gallery


def _png(size=(32, 64), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _search(client, path: Path, **form):
    return client.post("/search", files={"file": (path.name, path.read_bytes(), "image/jpeg")}, data=form)


def test_search_equals_cli_and_brute_force(setup, tmp_path: Path) -> None:
    from spanet.cli import main

    client, gallery = _client(setup)
    query = setup["images"][0]
    response = _search(client, query, top_k="5")
    assert response.status_code == 200, response.text
    matches = response.json()["matches"]
    # brute force over the stored vectors
    vector = setup["extractor"]([query])[0]
    ids = gallery.store.ids()
    stored = gallery.store.features(ids)
    distances = ((stored - vector) ** 2).sum(axis=1)
    order = np.argsort(distances, kind="stable")[:5]
    assert [m["id"] for m in matches] == [int(ids[i]) for i in order]
    np.testing.assert_allclose([m["distance"] for m in matches], distances[order], rtol=1e-4, atol=1e-4)
    # `spanet extract` + `spanet index build` + `spanet search` on the same files
    feats, index, out = tmp_path / "f.npz", tmp_path / "index", tmp_path / "r.json"
    assert main(["extract", "--checkpoint", str(setup["checkpoint"]), "--out", str(feats), "--quiet", str(setup["root"] / "imgs")]) == 0
    assert main(["index", "build", str(feats), "--out", str(index)]) == 0
    assert main(["search", "--checkpoint", str(setup["checkpoint"]), "--index", str(index), "--top-k", "5",
                 "--json", str(out), "--quiet", str(query)]) == 0  # fmt: skip
    cli = json.loads(out.read_text())[0]["matches"]
    assert [Path(m["path"]).name for m in cli] == [Path(m["source"]).name for m in matches]
    np.testing.assert_allclose([m["distance"] for m in cli], [m["distance"] for m in matches], rtol=1e-5, atol=1e-5)
    gallery.close()


def test_enrol_list_delete_restart(setup) -> None:
    client, gallery = _client(setup, threshold=1e-6)
    before = client.get("/health").json()["gallery_size"]
    new = setup["images"][3].read_bytes()
    response = client.post("/gallery", files=[("files", ("x.png", _png(), "image/png")), ("files", ("y.jpg", new, "image/jpeg"))],
                           data={"camera": "7", "label": "alice", "timestamp": "2024-05-01T13:45:00"})  # fmt: skip
    assert response.status_code == 200, response.text
    ids = response.json()["ids"]
    assert len(ids) == 2 and response.json()["gallery_size"] == before + 2
    listed = client.get("/gallery", params={"camera": 7}).json()
    assert listed["total"] == 2 and {e["label"] for e in listed["entries"]} == {"alice"}
    assert listed["entries"][0]["timestamp"] == "2024-05-01T13:45:00"
    assert client.get(f"/image/{ids[1]}").content == new
    found = _search(client, setup["images"][3], top_k="3", camera="7").json()
    assert found["matches"][0]["id"] == ids[1] and not found["matches"][0]["unknown"]
    assert all(m["unknown"] for m in found["matches"][1:])  # beyond the 1e-6 threshold
    excluded = _search(client, setup["images"][3], top_k="20", exclude_camera="7").json()["matches"]
    assert excluded and all(m["camera"] != 7 for m in excluded)
    explained = client.post(f"/explain/{ids[1]}", files={"file": ("q.jpg", new, "image/jpeg")}).json()
    assert explained["query"]["cam"].startswith("data:image/png;base64,") and explained["distance"] < 1e-3
    gallery.close()
    # restart: a new app on the reopened folder gives the same answers
    client2, gallery2 = _client(setup)
    again = _search(client2, setup["images"][3], top_k="3", camera="7").json()
    assert [m["id"] for m in again["matches"]] == [m["id"] for m in found["matches"]]
    assert client2.delete(f"/gallery/{ids[0]}").status_code == 200
    assert client2.delete(f"/gallery/{ids[0]}").status_code == 404
    assert client2.delete(f"/gallery/{ids[1]}").status_code == 200
    assert client2.get("/health").json()["gallery_size"] == before
    assert client2.get(f"/image/{ids[1]}").status_code == 404
    gallery2.close()


@pytest.mark.parametrize(
    "name, payload, content_type, status",
    [
        ("notes.txt", b"this is not an image", "image/jpeg", 415),
        ("page.html", b"<html></html>", "text/html", 415),
        ("empty.jpg", b"", "image/jpeg", 400),
    ],
)
def test_bad_uploads(setup, name: str, payload: bytes, content_type: str, status: int) -> None:
    client, gallery = _client(setup)
    size = len(gallery)
    for response in (
        client.post("/search", files={"file": (name, payload, content_type)}),
        client.post("/gallery", files=[("files", ("ok.png", _png(), "image/png")), ("files", (name, payload, content_type))]),
    ):
        assert response.status_code == status and "error" in response.json()
    assert len(gallery) == size  # the good file of the mixed request was not enrolled either
    gallery.close()


def test_truncated_bomb_and_size_limits(setup) -> None:
    from spanet.deploy.service import Limits

    client, gallery = _client(setup, limits=Limits(max_request_bytes=200_000, max_pixels=1_000_000))
    jpeg = setup["images"][0].read_bytes()
    truncated = client.post("/search", files={"file": ("t.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")})
    assert truncated.status_code == 400 and "truncated" in truncated.json()["error"]
    buffer = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buffer, format="PNG")  # 4 Mpx in a few KB: a (small) decompression bomb
    bomb = client.post("/search", files={"file": ("bomb.png", buffer.getvalue(), "image/png")})
    assert bomb.status_code == 413 and "pixels" in bomb.json()["error"]
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    big = io.BytesIO()
    Image.fromarray(noise).save(big, format="PNG")  # ~270 KB, over the 200 KB body limit
    too_big = client.post("/gallery", files={"files": ("big.png", big.getvalue(), "image/png")})
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
    assert client.get("/health").status_code == 200
    gallery.close()


def test_parameters_ids_and_paths(setup) -> None:
    client, gallery = _client(setup)
    query = setup["images"][0]
    for top_k in ("0", "101", "-3", "ten"):
        response = _search(client, query, top_k=top_k)
        assert response.status_code == 422 and "top_k" in response.json()["error"]
    assert client.post("/search", json={"top_k": 3}).status_code == 422  # not multipart
    assert client.post("/search", content=b"\x00" * 10, headers={"content-type": "application/octet-stream"}).status_code == 422
    assert _search(client, query, timestamp="x").status_code == 200  # unknown form fields are ignored
    bad_time = client.post("/gallery", files={"files": ("a.png", _png(), "image/png")}, data={"timestamp": "yesterday"})
    assert bad_time.status_code == 422
    for method, path in [
        ("GET", "/image/999999"), ("DELETE", "/gallery/999999"), ("POST", "/explain/999999"),
        ("GET", "/image/..%2F..%2Fgallery.json"), ("GET", "/image/../../etc/passwd"), ("GET", "/image/1%00.jpg"),
        ("DELETE", "/gallery/..%2Fentries.sqlite"), ("GET", "/gallery?camera=..%2F"), ("GET", "/image/%2Fetc%2Fpasswd"),
        ("GET", "/static/../gallery.json"), ("GET", "/gallery?limit=100000"),
    ]:
        kwargs = {"files": {"file": ("q.jpg", query.read_bytes(), "image/jpeg")}} if method == "POST" else {}
        response = client.request(method, path, **kwargs)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert "error" in response.json()
    gallery.close()


def test_token_required_when_set(setup) -> None:
    client, gallery = _client(setup, token="s3cret")
    assert client.get("/").status_code == 200  # the page holds no data
    assert client.get("/health").status_code == 401
    assert client.get("/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/image/1", params={"token": "s3cret"}).status_code == 200
    assert client.post("/search", files={"file": ("q.png", _png(), "image/png")}).status_code == 401
    gallery.close()


def test_pages_cannot_reach_a_tokenless_service_through_dns_rebinding(setup) -> None:
    """Without a token the CLI serves loopback Host names only: a page on evil.example resolved to 127.0.0.1 gets 400."""
    client, gallery = _client(setup, allowed_hosts=["127.0.0.1", "localhost", "::1", "[::1]"])
    assert client.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/health", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/gallery", headers={"host": "evil.example:8000"}).status_code == 400
    assert client.delete("/gallery/1", headers={"host": "evil.example"}).status_code == 400
    gallery.close()


def test_ids_and_offsets_beyond_sqlite_integers_are_a_json_4xx(setup) -> None:
    client, gallery = _client(setup)
    huge = 10**20
    for response in (client.get(f"/image/{huge}"), client.delete(f"/gallery/{huge}"),
                     client.get("/gallery", params={"offset": huge}), client.get("/gallery", params={"camera": huge}),
                     client.post(f"/explain/{huge}", files={"file": ("q.png", _png(), "image/png")})):  # fmt: skip
        assert response.status_code == 422 and response.headers["content-type"].startswith("application/json")
    gallery.close()


def test_many_large_images_in_one_request_are_refused_before_decoding_them_all(setup) -> None:
    """A 4000×4000 one-colour PNG is ~2 KB: 256 of them would decode to ~12 GB. The request budget stops that."""
    from spanet.deploy.service import Limits

    client, gallery = _client(setup, limits=Limits(max_pixels=1_000_000, max_request_pixels=2_500_000))
    big = _png(size=(1000, 1000))
    before = len(gallery)
    response = client.post("/gallery", files=[("files", (f"b{i}.png", big, "image/png")) for i in range(3)])
    assert response.status_code == 413 and "per request" in response.json()["error"]
    assert len(gallery) == before  # all or none
    ok = client.post("/gallery", files=[("files", (f"b{i}.png", big, "image/png")) for i in range(2)])
    assert ok.status_code == 200 and len(ok.json()["ids"]) <= 2
    for entry_id in ok.json()["ids"]:
        client.delete(f"/gallery/{entry_id}")
    gallery.close()


def test_a_retried_enrolment_enrols_nothing_twice(setup) -> None:
    """Poor: a client retry of POST /gallery enrolled the same bytes again (`gallery build` de-duplicates)."""
    client, gallery = _client(setup)
    files = [("files", ("r.png", _png(colour=(10, 200, 90)), "image/png"))]
    form = {"camera": "4", "label": "retry", "timestamp": "2024-06-01T08:00:00"}
    first = client.post("/gallery", files=files, data=form).json()
    second = client.post("/gallery", files=files, data=form).json()
    assert second["ids"] == first["ids"] and second["already_enrolled"] == first["ids"]
    assert second["gallery_size"] == first["gallery_size"] and first["already_enrolled"] == []
    other_camera = client.post("/gallery", files=files, data={**form, "camera": "5"}).json()
    assert other_camera["ids"] != first["ids"] and other_camera["gallery_size"] == first["gallery_size"] + 1
    gallery.close()
