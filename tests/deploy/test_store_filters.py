"""The `GalleryStore` filter, segment and deletion methods, on every store implementation (add one to STORES)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from spanet.deploy.filters import Where, to_seconds
from spanet.deploy.gallery import NewEntry, SQLiteStore
from spanet.errors import SpanetError

DIM = 4
STORES: dict[str, Callable[[Path], object]] = {"sqlite": lambda folder: SQLiteStore(folder / "e.sqlite", feature_dim=DIM)}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path):
    made = STORES[request.param](tmp_path)
    rows = [(NewEntry(data=b"", suffix=".jpg", camera=cam, label=label, track=track, timestamp=stamp),
             f"{i:064x}.jpg", "w", np.full(DIM, i, np.float32))
            for i, (cam, label, track, stamp) in enumerate([
                (1, "a", 1, "2024-05-01T08:00:00"), (2, "a", 2, "2024-05-01T09:00:00"), (2, "b", 2, "2024-05-01T09:30:00"),
                (3, None, None, None), (1, "b", 3, "2024-05-01T10:00:00+02:00")])]  # fmt: skip
    assert made.insert(rows[:3], segment="cam1:abc:0-600:hog") == [1, 2, 3]
    assert made.insert(rows[3:]) == [4, 5]
    yield made
    made.close()


def test_filters_select_the_same_rows_everywhere(store) -> None:
    nine = to_seconds("2024-05-01T09:00:00")
    assert list(store.ids()) == [1, 2, 3, 4, 5]
    assert list(store.ids(Where(cameras=(1, 3)))) == [1, 4, 5]
    assert list(store.ids(Where(after=nine))) == [2, 3]  # inclusive after; 10:00+02:00 is 08:00 UTC; no time: never
    assert list(store.ids(Where(before=nine))) == [1, 5]  # exclusive before
    assert list(store.ids(Where(track=2, label="b"))) == [3]
    assert list(store.ids(Where(cameras=()))) == []
    rows, total = store.query(limit=1, offset=1, where=Where(cameras=(2,)))
    assert total == 2 and [r.id for r in rows] == [3] and rows[0].track == 2
    assert store.query(camera=1, limit=10, offset=0)[1] == 2
    assert store.query(camera=1, limit=10, offset=0, where=Where(cameras=()))[1] == 0  # an empty set stays empty
    assert store.segments() == {"cam1:abc:0-600:hog"} and store.max_track() == 3


def test_delete_where_returns_what_it_deleted(store) -> None:
    with pytest.raises(SpanetError, match="refusing to delete every"):
        store.delete_where(Where())
    gone = store.delete_where(Where(label="a"))
    assert sorted(e.id for e in gone) == [1, 2] and list(store.ids()) == [3, 4, 5]
    assert store.delete_where(Where(ids=(99,))) == []
    store.vacuum()
    assert store.features([3])[0, 0] == 2 and store.segments() == {"cam1:abc:0-600:hog"}
