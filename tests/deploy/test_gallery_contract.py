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
                 timestamp=None if i % 5 == 0 else f"2024-05-01T13:{i % 60:02d}:00", label=f"p{i % 7}", source=f"s/{i}.jpg",
                 track=None if i % 6 == 5 else 1 + i // 4)
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
        hashes = {__import__("hashlib").sha256(e.data).hexdigest() for e in entries}
        assert gallery.known_hashes() == hashes
        some = sorted(hashes)[:3]
        assert gallery.known_hashes([*some, some[0], "0" * 64]) == set(some) and gallery.known_hashes([]) == set()
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
    from spanet.deploy.milvus_schema import connect

    monkeypatch.setattr(MilvusClient, "__init__", lambda self, **_kw: None)
    monkeypatch.setattr(MilvusClient, "close", lambda self: None)
    monkeypatch.setattr(MilvusClient, "get_server_version", lambda self, **_kw: "v2.3.5-lite")
    with pytest.raises(SpanetError, match="is v2.3.5-lite; the gallery schema needs Milvus >= 2.5"):
        connect(StoreSpec(kind="milvus", uri="http://127.0.0.1:1"))
    monkeypatch.setattr(MilvusClient, "get_server_version", lambda self, **_kw: "v2.5.10")
    assert isinstance(connect(StoreSpec(kind="milvus", uri="http://127.0.0.1:1")), MilvusClient)


@pytest.mark.skipif(not _HAVE_MILVUS, reason=_NO_MILVUS)
def test_milvus_folder_remembers_store_and_refuses_another(tmp_path: Path) -> None:
    from spanet.deploy.filters import Where
    from spanet.deploy.milvus_schema import where_expression

    gallery = _open(tmp_path / "g", f"milvus:{tmp_path / 'a.db'}")
    gallery.close()
    with pytest.raises(SpanetError, match="lives in milvus"):
        _open(tmp_path / "g", f"milvus:{tmp_path / 'b.db'}", create=False)
    with pytest.raises(SpanetError, match="lives in milvus"):
        _open(tmp_path / "g", "sqlite", create=False)
    shutil.rmtree(tmp_path / "a.db")
    with pytest.raises(SpanetError, match="has no collection"):
        _open(tmp_path / "g", None, create=False)
    expression = where_expression(Where(cameras=(1, 2), after=10.5, before=20, label='a"b', track=7, ids=()))
    assert expression == ('id < 0 and camera in [1, 2] and label == "a\\"b" and track == 7 and timestamp >= 10 and '
                          "timestamp < 20")


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


T1330 = 1714570200.0  # 2024-05-01T13:30:00 UTC
WHERES = {
    "cameras": {"cameras": (1, 3)},
    "no cameras": {"cameras": ()},
    "window": {"after": T1330 - 600, "before": T1330 + 300},  # 13:20 <= t < 13:35
    "open window": {"after": T1330},
    "track": {"track": 3},
    "label": {"label": "p2"},
    "ids and camera": {"ids": (2, 3, 4, 9, 11, 40), "cameras": (2,)},
    "all at once": {"cameras": (1, 2), "after": T1330 - 1200, "before": T1330 + 600, "label": "p1"},
}


def _matches(entry, where) -> bool:
    """The meaning of a `Where`, written out by hand (docs: after <= time < before, no time never matches)."""
    from spanet.deploy.filters import to_seconds

    seconds = to_seconds(entry.timestamp)
    timed = where.after is not None or where.before is not None
    return ((where.ids is None or entry.id in where.ids) and (where.cameras is None or entry.camera in where.cameras)
            and (where.label is None or entry.label == where.label) and (where.track is None or entry.track == where.track)
            and (not timed or seconds is not None) and (where.after is None or seconds >= where.after)
            and (where.before is None or seconds < where.before))  # fmt: skip


def _stored(gallery, ids) -> list:
    found = gallery.get(ids)
    return [found[i] for i in ids]


@pytest.mark.parametrize("name", list(WHERES))
def test_where_filters_in_ids_query_and_search(tmp_path: Path, store: str, name: str) -> None:
    """Every `Where` field means the same on every backend: ids(), query(where=) pages and search(where=) are the
    brute-force answer over the rows it matches."""
    from spanet.deploy.filters import Where

    gallery = _open(tmp_path / "g", store)
    try:
        entries, vectors = _entries(40)
        ids = gallery.add(entries, vectors)
        stored = _stored(gallery, ids)
        where = Where(**WHERES[name])
        if where.ids is not None:  # ids are the backend's: point at the same rows on each
            where = Where(**{**WHERES[name], "ids": tuple(ids[i - 1] for i in where.ids)})
        allowed = np.array([_matches(e, where) for e in stored])
        expected_ids = [i for i, ok in zip(ids, allowed) if ok]
        assert name == "no cameras" or expected_ids, "a filter that matches nothing tests little"
        assert gallery.ids(where).tolist() == expected_ids
        page, total = gallery.query(camera=None, label=None, limit=3, offset=1, where=where)
        assert total == len(expected_ids) and [e.id for e in page] == expected_ids[1:4]
        distances = ((vectors - vectors[7]) ** 2).sum(1)
        order = [ids[i] for i in np.argsort(distances, kind="stable") if allowed[i]]
        assert [h.entry.id for h in gallery.search(vectors[7], top_k=5, where=where)] == order[:5]
        both = gallery.search_many(vectors[[7, 8]], [(5, None, None), (40, 2, None)], where=[where, None])
        assert [h.entry.id for h in both[0]] == order[:5] and {h.entry.camera for h in both[1]} == {2}
    finally:
        gallery.close()


def test_filtered_search_gives_the_same_ids_on_sqlite_and_this_backend(tmp_path: Path, store: str) -> None:
    """The same gallery in SQLite and in `store`: a search with a camera set, a time window and a camera exclusion
    returns the same entries in the same order, with the same distances."""
    from spanet.deploy.filters import Where

    entries, vectors = _entries(50, seed=3)
    where = Where(cameras=(1, 2, 3), after=T1330 - 900, before=T1330 + 1200)
    queries = np.random.default_rng(4).normal(size=(4, DIM)).astype(np.float32)
    wants = [(10, None, None), (10, None, 2), (3, 1, None), (50, None, None)]
    answers = []
    for folder, kind in (("reference", "sqlite"), ("other", store)):
        gallery = _open(tmp_path / folder, kind)
        try:
            ids = gallery.add(entries, vectors)
            found = gallery.search_many(queries, wants, where=[where] * len(wants))
            answers.append(([[ids.index(h.entry.id) for h in hits] for hits in found],
                            np.array([h.distance for hits in found for h in hits])))  # fmt: skip
        finally:
            gallery.close()
    assert answers[0][0] == answers[1][0] and all(answers[0][0]) and len(answers[0][0][3]) < 50
    np.testing.assert_allclose(answers[0][1], answers[1][1], rtol=1e-5)


def test_remove_where_returns_entries_removes_files_and_is_exact(tmp_path: Path, store: str) -> None:
    from spanet.deploy.filters import Where

    gallery = _open(tmp_path / "g", store)
    try:
        entries, vectors = _entries(40)
        ids = gallery.add(entries, vectors)
        stored = _stored(gallery, ids)
        where = Where(cameras=(2,), before=T1330 + 0.5)  # a fraction of a second: 13:30:00 itself goes, 13:30:01 would not
        removed = gallery.remove_where(where)
        expected = [e for e in stored if _matches(e, where)]
        assert sorted(removed, key=lambda e: e.id) == expected and expected
        assert len(gallery) == 40 - len(expected) and gallery.get([e.id for e in expected]) == {}
        assert len(list((tmp_path / "g" / "images").iterdir())) == 40 - len(expected)  # their files went too
        assert gallery.remove_where(Where(after=T1330 + 0.5, before=T1330 + 59)) == []  # 13:30:00 is before the window
        assert gallery.remove_where(Where(track=3)) == [e for e in stored if e.track == 3 and e not in expected]
        with pytest.raises(SpanetError, match="refusing to delete every gallery entry"):
            gallery.remove_where(Where())
        gallery.purge()  # whatever the backend does to make deletions unrecoverable, the gallery still works
        assert len(gallery) == len(gallery.ids()) and gallery.search(vectors[0], top_k=1)[0].entry.id == ids[0]
    finally:
        gallery.close()


def test_segments_tracks_and_idempotent_readd(tmp_path: Path, store: str) -> None:
    """What `spanet ingest` needs: a segment key recorded with its rows (also an empty one), the largest track,
    both kept across a reopen; and a client's retry finds the entries it already enrolled."""
    from spanet.deploy.gallery import existing_ids

    gallery = _open(tmp_path / "g", store)
    entries, vectors = _entries(12)
    assert gallery.segments() == set() and gallery.max_track() == 0
    ids = gallery.add(entries[:8], vectors[:8], segment="cam1:abc:0-600:hog")
    gallery.add([], np.zeros((0, DIM), np.float32), segment="cam1:abc:600-1200:hog")  # nobody in that stretch
    assert gallery.segments() == {"cam1:abc:0-600:hog", "cam1:abc:600-1200:hog"}
    assert gallery.max_track() == max(e.track for e in entries[:8] if e.track is not None)
    assert existing_ids(gallery, [entries[2], entries[9]]) == [ids[2], None]
    gallery.close()
    again = _open(tmp_path / "g", None, create=False)
    try:
        assert again.segments() == {"cam1:abc:0-600:hog", "cam1:abc:600-1200:hog"} and len(again) == 8
        assert again.max_track() == max(e.track for e in entries[:8] if e.track is not None)
        assert [e.track for e in _stored(again, ids)] == [e.track for e in entries[:8]]
        again.add(entries[8:], vectors[8:])
        assert again.max_track() == max(e.track for e in entries if e.track is not None)
    finally:
        again.close()


@pytest.mark.skipif(not _HAVE_MILVUS, reason=_NO_MILVUS)
def test_milvus_segment_cut_short_is_undone_on_open(tmp_path: Path) -> None:
    """A process killed between reserving a segment's ids and confirming its insert: the next open deletes the rows
    that did arrive and forgets the segment, so a re-run of the ingest enrols it whole."""
    import json

    from spanet.deploy.milvus_schema import to_row

    gallery = _open(tmp_path / "g", f"milvus:{tmp_path / 'm.db'}")
    entries, vectors = _entries(6)
    gallery.add(entries[:2], vectors[:2], segment="done")
    record = json.loads((tmp_path / "g" / "store.json").read_text())
    first = record["next_id"]
    gallery._reserve(entries[2:], stop=first + 4, segment="cut")  # what add() does before its insert ...
    gallery.client.insert(gallery.collection, [  # ... and half of the insert
        to_row(first + i, entries[2 + i], "x.jpg", gallery.fingerprint, vectors[2 + i])
        for i in range(2)
    ])  # fmt: skip
    gallery.close()
    again = _open(tmp_path / "g", None, create=False)
    try:
        assert again.segments() == {"done"} and len(again) == 2
        assert again.add(entries[2:], vectors[2:], segment="cut") == list(range(first + 4, first + 8))
        assert again.segments() == {"done", "cut"} and len(again) == 6
    finally:
        again.close()


def test_forget_through_the_contract(tmp_path: Path, store: str) -> None:
    """`spanet.deploy.retention.forget` on every backend: entries and image files gone, one audit line."""
    import json

    from spanet.deploy.filters import Where
    from spanet.deploy.retention import AUDIT_FILE, forget, prune_before

    gallery = _open(tmp_path / "g", store)
    try:
        entries, vectors = _entries(30)
        ids = gallery.add(entries, vectors)
        report = forget(gallery, Where(label="p3", cameras=(1, 2, 3)))
        expected = [i for i, e in zip(ids, entries) if e.label == "p3" and e.camera is not None]
        assert (report.entries, report.images) == (len(expected), len(expected)) and expected
        assert gallery.get(expected) == {} and len(gallery) == 30 - len(expected)
        pruned = prune_before(gallery, older_than=3600, now=T1330 + 3600)  # before 13:30
        gone = [i for i, e in zip(ids, entries) if e.timestamp and e.timestamp < "2024-05-01T13:30" and i not in expected]
        assert pruned.entries == len(gone) and gallery.get(gone) == {}
        lines = [json.loads(line) for line in (tmp_path / "g" / AUDIT_FILE).read_text().splitlines()]
        assert [line["action"] for line in lines] == ["forget", "prune"] and lines[0]["entries"] == len(expected)
    finally:
        gallery.close()


def test_cli_forget_on_a_gallery_of_this_backend(tmp_path: Path, store: str, capsys: pytest.CaptureFixture) -> None:
    """`spanet gallery forget` needs no --store: it opens the gallery on the store its folder records."""
    from spanet.cli import main

    gallery = _open(tmp_path / "g", store)
    entries, vectors = _entries(20)
    ids = gallery.add(entries, vectors)
    gallery.close()
    assert main(["gallery", "forget", str(tmp_path / "g"), "--camera", "2", "--label", "p2"]) == 0
    expected = [i for i, e in zip(ids, entries) if e.camera == 2 and e.label == "p2"]
    assert f"removed {len(expected)} entries" in capsys.readouterr().out and expected
    again = _open(tmp_path / "g", None, create=False)
    try:
        assert len(again) == 20 - len(expected) and again.get(expected) == {}
    finally:
        again.close()


@pytest.mark.skipif(not _HAVE_MILVUS, reason=_NO_MILVUS)
def test_milvus_lite_seals_enrolled_rows_before_a_search(tmp_path: Path) -> None:
    """Milvus Lite searches unsealed rows in Python (7x slower with 60 of them): a search after an enrolment of a
    few rows flushes them first, and still finds them."""
    gallery = _open(tmp_path / "g", f"milvus:{tmp_path / 'm.db'}")
    try:
        entries, vectors = _entries(8)
        ids = gallery.add(entries, vectors)
        assert gallery._unflushed == 8  # below the flush size: `add` alone leaves them in Milvus Lite's memtable
        assert gallery.search(vectors[3], top_k=1)[0].entry.id == ids[3]
        assert gallery._unflushed == 0
    finally:
        gallery.close()
