"""Forgetting: deleted image bytes and vectors are in no file of the gallery folder afterwards, also after a kill -9
mid-way; every deletion is in the audit log; galleries made before the track/time columns still open."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spanet.errors import SpanetError

DIM = 16
MODEL = {"feature_dim": DIM, "kind": "parts", "weights_fingerprint": "w0", "args_fingerprint": "a0"}
T0 = "2024-05-01T08:00:00+00:00"


def _entry(i: int, *, label: str, camera: int, track: int, minute: int):
    from spanet.deploy.gallery import NewEntry

    data = b"\x89PNG fake image " + bytes(np.random.default_rng(i).integers(0, 256, 300, dtype=np.uint8))
    return NewEntry(data=data, suffix=".png", camera=camera, label=label, track=track,
                    timestamp=f"2024-05-01T08:{minute:02d}:00+00:00", source=f"s{i}")  # fmt: skip


def _features(n: int) -> np.ndarray:
    return np.random.default_rng(100).normal(size=(n, DIM)).astype(np.float32)


@pytest.fixture()
def filled(tmp_path: Path):
    from spanet.deploy.gallery import Gallery

    gallery = Gallery.open(tmp_path / "g", model_info=MODEL, create=True)
    people = [("alice", 1, 1, 0), ("alice", 2, 2, 10), ("bob", 1, 3, 20), ("bob", 3, 4, 30), ("carol", 2, 5, 40)]
    entries = [_entry(i, label=l, camera=c, track=t, minute=m) for i, (l, c, t, m) in enumerate(people * 2)]
    features = _features(len(entries))
    ids = gallery.add(entries, features)
    gallery.close()
    return {"dir": tmp_path / "g", "entries": entries, "features": features, "ids": ids}


def _folder_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def _traces(filled: dict, rows: list[int]) -> list[bool]:
    """For each entry index: is its image or its vector still somewhere in the folder's raw bytes?"""
    raw = _folder_bytes(filled["dir"])
    return [filled["entries"][i].data[20:120] in raw or filled["features"][i].tobytes() in raw for i in rows]


def _open(folder: Path):
    from spanet.deploy.gallery import Gallery

    return Gallery.open(folder, model_info=MODEL)


def test_forget_by_label_leaves_no_trace_and_is_audited(filled: dict) -> None:
    from spanet.deploy.filters import Where
    from spanet.deploy.retention import forget

    everyone = list(range(10))
    assert all(_traces(filled, everyone))  # before: every image and vector is in the folder's files
    gallery = _open(filled["dir"])
    report = forget(gallery, Where(label="alice"))
    assert report.entries == 4 and report.images == 4 and len(gallery) == 6
    assert {h.entry.label for h in gallery.search(filled["features"][0], top_k=10)} == {"bob", "carol"}
    alice = [i for i, e in enumerate(filled["entries"]) if e.label == "alice"]
    assert _traces(filled, alice) == [False] * 4  # while the gallery is still open (a running service)
    gallery.close()
    assert _traces(filled, alice) == [False] * 4
    assert all(_traces(filled, [i for i in everyone if i not in alice]))  # the others are untouched
    log = [json.loads(line) for line in (filled["dir"] / "audit.jsonl").read_text().splitlines()]
    assert log[-1]["action"] == "forget" and log[-1]["entries"] == 4 and log[-1]["where"] == {"label": "alice"}
    assert filled["entries"][alice[0]].data[20:120] not in (filled["dir"] / "audit.jsonl").read_bytes()


def test_forget_by_track_camera_time_and_prune(filled: dict) -> None:
    from spanet.deploy.filters import Where, to_seconds
    from spanet.deploy.retention import forget, prune_before

    gallery = _open(filled["dir"])
    assert forget(gallery, Where(track=3)).entries == 2
    assert forget(gallery, Where(cameras=(2,), before=to_seconds("2024-05-01T08:30:00"))).entries == 2  # alice cam 2
    assert sorted({e.track for e in gallery.store.query(limit=50, offset=0)[0]}) == [1, 4, 5]
    now = to_seconds("2024-05-31T08:35:00")
    report = prune_before(gallery, older_than=30 * 86400, now=now)  # older than 08:35 on May 1st
    assert report.entries == 4 and sorted({e.track for e in gallery.store.query(limit=50, offset=0)[0]}) == [5]
    with pytest.raises(SpanetError, match="refusing to forget every"):
        forget(gallery, Where())
    gallery.close()
    assert _traces(filled, [0, 1, 2, 3, 5, 6, 7, 8]) == [False] * 8 and _traces(filled, [4, 9]) == [True, True]


_KILL_DURING_FORGET = """
import os, signal, sys
sys.path[:0] = {paths!r}
from spanet.deploy.gallery import Gallery, SQLiteStore
from spanet.deploy.filters import Where
from spanet.deploy.retention import forget
SQLiteStore.vacuum = lambda self: os.kill(os.getpid(), signal.SIGKILL)  # killed after the rows went, before vacuum
gallery = Gallery.open({folder!r}, model_info={model!r})
forget(gallery, Where(label="bob"))
"""


def test_kill_9_mid_forget_is_finished_on_next_open(filled: dict) -> None:
    script = _KILL_DURING_FORGET.format(paths=sys.path, folder=str(filled["dir"]), model=MODEL)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert (filled["dir"] / ".forget-pending").is_file()
    gallery = _open(filled["dir"])  # finishes the deletion
    assert len(gallery) == 6 and {e.label for e in gallery.store.query(limit=50, offset=0)[0]} == {"alice", "carol"}
    bob = [i for i, e in enumerate(filled["entries"]) if e.label == "bob"]
    assert _traces(filled, bob) == [False] * 4  # already while open
    gallery.close()
    assert _traces(filled, bob) == [False] * 4 and not (filled["dir"] / ".forget-pending").exists()
    last = json.loads((filled["dir"] / "audit.jsonl").read_text().splitlines()[-1])
    assert last["origin"] == "resumed after an interruption" and last["where"] == {"label": "bob"}


def test_a_gallery_made_before_tracks_and_times_opens_and_filters(tmp_path: Path) -> None:
    """The version-1 schema (no track, no time, no segments table) gains them on open; time from the timestamp."""
    from spanet.deploy.filters import Where, to_seconds

    folder = tmp_path / "old"
    (folder / "images").mkdir(parents=True)
    (folder / "gallery.json").write_text(json.dumps({"format": "spanet-gallery", "version": 1, "feature_dim": DIM,
                                                     "index": "flat", "model": MODEL}))  # fmt: skip
    db = sqlite3.connect(folder / "entries.sqlite")
    db.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY AUTOINCREMENT, image TEXT NOT NULL, sha256 TEXT NOT NULL, "
               "camera INTEGER, timestamp TEXT, label TEXT, source TEXT, fingerprint TEXT NOT NULL, feature BLOB NOT NULL)")
    for i, stamp in enumerate(["2024-05-01T08:00:00", "2024-05-01T10:00:00+02:00", None]):
        name = f"{i:064x}.png"
        (folder / "images" / name).write_bytes(b"x")
        db.execute("INSERT INTO entries (image, sha256, camera, timestamp, fingerprint, feature) VALUES (?,?,?,?,?,?)",
                   (name, name[:-4], 1, stamp, "w0", _features(3)[i].tobytes()))
    db.commit()
    db.close()
    gallery = _open(folder)
    assert len(gallery) == 3 and gallery.store.query(limit=5, offset=0)[0][0].track is None
    window = Where(after=to_seconds("2024-05-01T07:30:00"), before=to_seconds("2024-05-01T08:30:00"))
    assert list(gallery.store.ids(window)) == [1, 2]  # 10:00+02:00 is 08:00 UTC; no time: never in a window
    hits = gallery.search_many(_features(3)[2:3], [(3, None, None)], where=[window])[0]
    assert [h.entry.id for h in hits] == [2, 1]
    assert gallery.store.segments() == set() and gallery.store.max_track() == 0
    gallery.close()
    with pytest.raises(SpanetError, match="after .* is later than before"):
        Where(after=window.before, before=window.after)


def test_cli_forget_and_prune(filled: dict, capsys: pytest.CaptureFixture) -> None:
    from spanet.cli import main

    assert main(["gallery", "forget", str(filled["dir"])]) == 2
    assert "needs a condition" in capsys.readouterr().err
    assert main(["gallery", "forget", str(filled["dir"]), "--after", "2024-05-01T09:00", "--before", "2024-05-01T08:00"]) == 2
    assert "is later than before" in capsys.readouterr().err
    assert main(["gallery", "forget", str(filled["dir"]), "--id", str(filled["ids"][0]), "--id", str(filled["ids"][1])]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert main(["gallery", "prune", str(filled["dir"]), "--older-than", "thirty days"]) == 2
    assert "is not an age" in capsys.readouterr().err
    assert main(["gallery", "prune", str(filled["dir"]), "--older-than", "1d"]) == 0  # all of 2024 is older
    assert "removed 8 entries" in capsys.readouterr().out
    assert _traces(filled, list(range(10))) == [False] * 10 and os.path.getsize(filled["dir"] / "index.faiss") < 200


def test_forget_and_prune_through_the_api_need_the_token(filled: dict) -> None:
    pytest.importorskip("fastapi", reason="the service needs the 'serve' extra")
    from fastapi.testclient import TestClient

    from spanet.deploy.service import create_app

    gallery = _open(filled["dir"])
    client = TestClient(create_app(gallery=gallery, extractor=object(), token="s3cret"))
    refused = client.post("/gallery/forget", data={"label": "alice"})
    assert refused.status_code == 401 and len(gallery) == 10
    auth = {"Authorization": "Bearer s3cret"}
    assert client.post("/gallery/forget", data={}, headers=auth).status_code == 400  # no condition: refused
    done = client.post("/gallery/forget", data={"label": "alice", "cameras": "1"}, headers=auth).json()
    assert done["deleted"] == 2 and done["where"] == {"cameras": [1], "label": "alice"} and done["gallery_size"] == 8
    assert client.post("/gallery/prune", data={"older_than": "soon"}, headers=auth).status_code == 400
    assert client.post("/gallery/prune", data={"older_than": "1d"}, headers=auth).json()["deleted"] == 8
    assert client.get("/gallery", headers=auth).json()["total"] == 0
    assert _traces(filled, list(range(10))) == [False] * 10
    gallery.close()
    log = [json.loads(line) for line in (filled["dir"] / "audit.jsonl").read_text().splitlines()]
    assert [(r["action"], r["origin"], r["entries"]) for r in log] == [("forget", "api", 2), ("prune", "api", 8)]
