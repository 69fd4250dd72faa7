"""One contract, every gallery backend: SQLite + faiss, Milvus Lite as a file, and Milvus Lite's gRPC server on
127.0.0.1 (the path a Milvus standalone server or cluster takes). Milvus cases skip, with the reason, where
pymilvus / milvus-lite are not installed (`pip install 'spanet[milvus]'`)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from builders import free_port
from spanet.errors import SpanetError

DIM = 16
INFO = {"feature_dim": DIM, "kind": "parts", "args_fingerprint": "a" * 16, "weights_fingerprint": "b" * 16}
_HAVE_MILVUS = importlib.util.find_spec("pymilvus") is not None and importlib.util.find_spec("milvus_lite") is not None
_NO_MILVUS = "pymilvus and milvus-lite are not installed (pip install 'spanet[milvus]')"


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`milvus-lite server` in a subprocess on a free 127.0.0.1 port; its `milvus://` store spec."""
    if not _HAVE_MILVUS:
        pytest.skip(_NO_MILVUS)
    port = free_port()
    data = tmp_path_factory.mktemp("milvus_server")
    process = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for_port(port, process, timeout=60)
        yield f"milvus://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for_port(port: int, process: subprocess.Popen, *, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"milvus-lite server exited: {process.stderr.read().decode(errors='replace')[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"milvus-lite server did not listen on 127.0.0.1:{port} within {timeout} s")


@pytest.fixture(params=["sqlite", "milvus-file", "milvus-server", "milvus-external"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The `--store` text of each backend; milvus-external: a real Milvus named by $SPANET_TEST_MILVUS
    (e.g. milvus://127.0.0.1:19530), skipped when unset."""
    if request.param == "sqlite":
        return "sqlite"
    if request.param == "milvus-external":
        if not os.environ.get("SPANET_TEST_MILVUS"):
            pytest.skip("no external Milvus: set SPANET_TEST_MILVUS=milvus://HOST:PORT to run the contract against one")
        if importlib.util.find_spec("pymilvus") is None:
            pytest.skip(_NO_MILVUS)
        return os.environ["SPANET_TEST_MILVUS"]
    if not _HAVE_MILVUS:
        pytest.skip(_NO_MILVUS)
    if request.param == "milvus-file":
        return f"milvus:{tmp_path / 'milvus.db'}"
    return request.getfixturevalue("milvus_server")


def _open(folder: Path, store: str | None, *, create: bool = True, info: dict = INFO):
    from spanet.deploy.backend import open_gallery

    return open_gallery(folder, model_info=info, create=create, store=store)


def _entries(count: int, *, seed: int = 0, cameras: tuple = (1, 2, 3, None)):
    from spanet.deploy.gallery import NewEntry

    rng = np.random.default_rng(seed)
    entries = [
        NewEntry(data=rng.bytes(64), suffix=".jpg", camera=cameras[i % len(cameras)],
                 timestamp=None if i % 5 == 0 else f"2024-05-01T13:{i % 60:02d}:00", label=f"p{i % 7}", source=f"s/{i}.jpg")
        for i in range(count)
    ]  # fmt: skip
    return entries, rng.normal(size=(count, DIM)).astype(np.float32)


def test_add_get_search_match_brute_force(tmp_path: Path, store: str) -> None:
    gallery = _open(tmp_path / "g", store)
    try:
        entries, vectors = _entries(60)
        ids = gallery.add(entries[:25], vectors[:25]) + gallery.add(entries[25:], vectors[25:])
        assert ids == list(range(ids[0], ids[0] + 60)) and ids[0] >= 1 and len(gallery) == 60
        got = gallery.get([ids[3], ids[0], 10**9])
        assert set(got) == {ids[3], ids[0]}
        assert (got[ids[3]].camera, got[ids[3]].label, got[ids[3]].source) == (entries[3].camera, "p3", "s/3.jpg")
        assert got[ids[3]].timestamp == entries[3].timestamp and got[ids[0]].timestamp is None
        assert gallery.image_path(got[ids[3]]).read_bytes() == entries[3].data
        assert np.array_equal(gallery.features([ids[7], ids[2]]), vectors[[7, 2]])
        assert np.array_equal(gallery.ids(), np.array(ids))
        queries = np.random.default_rng(1).normal(size=(5, DIM)).astype(np.float32)
        cams = np.array([-1 if c is None else c for c in (e.camera for e in entries)])
        wants = [(10, None, None), (5, 2, None), (8, None, 1), (70, None, None), (3, 3, 3)]
        found = gallery.search_many(queries, wants)
        for query, (top_k, camera, exclude), hits in zip(queries, wants, found):
            distances = ((vectors - query) ** 2).sum(1)
            allowed = np.ones(60, bool) if camera is None else cams == camera
            allowed &= True if exclude is None else cams != exclude
            expected = [ids[i] for i in np.argsort(np.where(allowed, distances, np.inf), kind="stable")[:top_k] if allowed[i]]
            assert [h.entry.id for h in hits] == expected
            np.testing.assert_allclose([h.distance for h in hits], np.sort(distances[allowed])[:top_k], rtol=1e-5)
        assert gallery.cameras() == [1, 2, 3]
        assert gallery.known_hashes() == {__import__("hashlib").sha256(e.data).hexdigest() for e in entries}
    finally:
        gallery.close()


def test_query_pages_in_id_order(tmp_path: Path, store: str) -> None:
    gallery = _open(tmp_path / "g", store)
    try:
        entries, vectors = _entries(40)
        ids = gallery.add(entries, vectors)
        page, total = gallery.query(camera=2, label=None, limit=4, offset=3)
        on_two = [i for i, e in zip(ids, entries) if e.camera == 2]
        assert total == len(on_two) and [e.id for e in page] == on_two[3:7]
        page, total = gallery.query(camera=None, label="p3", limit=100, offset=0)
        assert [e.id for e in page] == [i for i, e in zip(ids, entries) if e.label == "p3"] and total == len(page)
        assert gallery.query(camera=None, label=None, limit=5, offset=38)[0][-1].id == ids[-1]
    finally:
        gallery.close()


def test_remove_and_shared_image(tmp_path: Path, store: str) -> None:
    from spanet.deploy.gallery import NewEntry

    gallery = _open(tmp_path / "g", store)
    try:
        same = NewEntry(data=b"same bytes", suffix=".png", camera=4)
        first, second = gallery.add([same, same], np.ones((2, DIM), np.float32))
        path = gallery.image_path(gallery.get([first])[first])
        assert gallery.remove(first).id == first and path.exists()  # the other entry still uses the file
        assert gallery.remove(first) is None and len(gallery) == 1
        assert gallery.remove(second).camera == 4 and not path.exists() and len(gallery) == 0
        assert gallery.search(np.ones(DIM, np.float32), top_k=5) == [] and gallery.cameras() == []
    finally:
        gallery.close()


def test_reopen_keeps_everything_and_ids_grow(tmp_path: Path, store: str) -> None:
    gallery = _open(tmp_path / "g", store)
    entries, vectors = _entries(12)
    ids = gallery.add(entries, vectors)
    gallery.remove(ids[-1])
    gallery.close()
    orphan = tmp_path / "g" / "images" / ("0" * 64 + ".jpg")  # what a crash between file and row leaves
    orphan.write_bytes(b"x")
    again = _open(tmp_path / "g", None, create=False)  # the folder remembers its store
    try:
        assert len(again) == 11 and not orphan.exists()
        assert [h.entry.id for h in again.search(vectors[2], top_k=1)] == [ids[2]]
        assert again.add(entries[:1], vectors[:1]) == [ids[-1] + 1]  # a removed id is never handed out again
    finally:
        again.close()


def test_other_model_and_busy_folder_refused(tmp_path: Path, store: str) -> None:
    gallery = _open(tmp_path / "g", store)
    try:
        with pytest.raises(SpanetError, match="open in another process"):
            _open(tmp_path / "g", store, create=False)
    finally:
        gallery.close()
    with pytest.raises(SpanetError, match="different model weights"):
        _open(tmp_path / "g", None, create=False, info={**INFO, "weights_fingerprint": "c" * 16})
    with pytest.raises(SpanetError, match="holds 16-d"):
        _open(tmp_path / "g", None, create=False, info={**INFO, "feature_dim": 8})


def test_concurrent_adds_and_searches(tmp_path: Path, store: str) -> None:
    gallery = _open(tmp_path / "g", store)
    got: list[int] = []
    errors: list[BaseException] = []

    def enrol(seed: int) -> None:
        try:
            for round_ in range(5):
                entries, vectors = _entries(4, seed=seed * 100 + round_)
                got.extend(gallery.add(entries, vectors))
                gallery.search_many(vectors, [(3, None, None)] * 4)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=enrol, args=(s,)) for s in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert not errors and len(got) == len(set(got)) == 60 == len(gallery)
        assert np.array_equal(gallery.ids(), np.sort(np.array(got)))
    finally:
        gallery.close()


def test_wrong_store_for_folder(tmp_path: Path) -> None:
    from spanet.deploy.backend import parse_store

    _open(tmp_path / "g", "sqlite").close()
    with pytest.raises(SpanetError, match="is a SQLite gallery"):
        _open(tmp_path / "g", "milvus:./x.db", create=False)
    for bad in ("milvus:g.sqlite", "milvus://", "postgres://x", "milvus://h:1/a/b"):
        with pytest.raises(SpanetError, match="--store"):
            parse_store(bad)
    assert parse_store("milvus://10.0.0.5:19530").uri == "http://10.0.0.5:19530"


@pytest.mark.skipif(importlib.util.find_spec("pymilvus") is None, reason=_NO_MILVUS)
def test_old_milvus_server_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pymilvus import MilvusClient

    from spanet.deploy.backend import StoreSpec
    from spanet.deploy.milvus_gallery import _connect

    monkeypatch.setattr(MilvusClient, "__init__", lambda self, **_kw: None)
    monkeypatch.setattr(MilvusClient, "close", lambda self: None)
    monkeypatch.setattr(MilvusClient, "get_server_version", lambda self, **_kw: "v2.3.5-lite")
    with pytest.raises(SpanetError, match="is v2.3.5-lite; the gallery schema needs Milvus >= 2.5"):
        _connect(StoreSpec(kind="milvus", uri="http://127.0.0.1:1"))
    monkeypatch.setattr(MilvusClient, "get_server_version", lambda self, **_kw: "v2.5.10")
    assert isinstance(_connect(StoreSpec(kind="milvus", uri="http://127.0.0.1:1")), MilvusClient)


@pytest.mark.skipif(not _HAVE_MILVUS, reason=_NO_MILVUS)
def test_milvus_folder_remembers_store_and_refuses_another(tmp_path: Path) -> None:
    from spanet.deploy.milvus_gallery import filter_expression

    gallery = _open(tmp_path / "g", f"milvus:{tmp_path / 'a.db'}")
    gallery.close()
    with pytest.raises(SpanetError, match="lives in milvus"):
        _open(tmp_path / "g", f"milvus:{tmp_path / 'b.db'}", create=False)
    with pytest.raises(SpanetError, match="lives in milvus"):
        _open(tmp_path / "g", "sqlite", create=False)
    shutil.rmtree(tmp_path / "a.db")
    with pytest.raises(SpanetError, match="has no collection"):
        _open(tmp_path / "g", None, create=False)
    assert filter_expression(cameras=[1, 2], after=10.5, before=20, label='a"b') == (
        'camera in [1, 2] and label == "a\\"b" and timestamp >= 10 and timestamp < 20'
    )


@pytest.mark.skipif(not _HAVE_MILVUS, reason=_NO_MILVUS)
def test_milvus_camera_set_time_window_and_remove_where(tmp_path: Path) -> None:
    """The filters beyond the shared contract: camera sets and time windows (epoch seconds) in search, delete by
    filter with the image files no entry uses any more."""
    gallery = _open(tmp_path / "g", f"milvus:{tmp_path / 'm.db'}")
    try:
        entries, vectors = _entries(40)
        ids = gallery.add(entries, vectors)
        after, before = 1714571400, 1714571400 + 300  # 13:50:00 to 13:55:00 UTC
        in_window = [e.timestamp is not None and "13:50:00" <= e.timestamp[11:] < "13:55:00" for e in entries]
        allowed = np.array([w and e.camera in (1, 3) for w, e in zip(in_window, entries)])
        distances = ((vectors - vectors[0]) ** 2).sum(1)
        hits = gallery.search(vectors[0], top_k=40, cameras=[1, 3], after=after, before=before)
        assert [h.entry.id for h in hits] == [ids[i] for i in np.argsort(distances) if allowed[i]]
        removed = gallery.remove_where(cameras=[2], before=1714571400)  # camera 2 before 13:50
        expected = [i for i, e in zip(ids, entries) if e.camera == 2 and e.timestamp and e.timestamp[11:] < "13:50:00"]
        assert removed == expected and len(gallery) == 40 - len(expected) and removed
        assert len(list((tmp_path / "g" / "images").iterdir())) == 40 - len(expected)  # their files went too
        with pytest.raises(SpanetError, match="at least one filter"):
            gallery.remove_where()
    finally:
        gallery.close()


def test_two_clients_on_one_milvus_server(tmp_path: Path, store: str) -> None:
    """Two galleries (two folders, two clients, two collections) enrolling and searching on one server at once."""
    if not store.startswith("milvus://"):
        pytest.skip("concerns a Milvus server only")
    galleries = [_open(tmp_path / name, store) for name in ("a", "b")]
    errors: list[BaseException] = []

    def work(gallery, seed: int) -> None:
        try:
            for round_ in range(4):
                entries, vectors = _entries(5, seed=seed * 10 + round_)
                gallery.add(entries, vectors)
                assert gallery.search(vectors[2], top_k=1)[0].distance == pytest.approx(0.0, abs=1e-5)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(g, s)) for s, g in enumerate(galleries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert not errors and [len(g) for g in galleries] == [20, 20]
        assert galleries[0].collection != galleries[1].collection
    finally:
        for gallery in galleries:
            gallery.close()


def test_milvus_missing_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spanet.deploy.milvus_gallery", None)  # import fails as without pymilvus
    with pytest.raises(SpanetError, match=r"spanet\[milvus\]"):
        _open(tmp_path / "g", f"milvus:{tmp_path / 'm.db'}")
    assert os.path.isdir(tmp_path / "g") is False
