"""The rows of a SQLite gallery (`entries.sqlite` in a gallery folder): `GalleryStore`, the small interface
`spanet.deploy.gallery.Gallery` needs from its database, and `SQLiteStore`, its one implementation (SQLite in WAL
mode; filters are `spanet.deploy.filters.Where`, written as SQL by `where_sql`)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from spanet.deploy.entry import Entry, NewEntry
from spanet.deploy.filters import Where, narrow, to_seconds, where_sql
from spanet.errors import SpanetError

__all__ = ["GalleryStore", "SQLiteStore", "entry_images"]

_ENTRY_COLUMNS = "id, image, camera, timestamp, label, source, fingerprint, track"


class GalleryStore(Protocol):
    """The rows of a gallery. Each method is one transaction; ids are assigned by the store.

    Filters (`Where`): `cameras` a set of cameras, `after`/`before` UTC seconds (after <= time < before; rows
    without a time never match a time filter), `track`, `label`, `ids`. `insert` with `segment` records that
    stretch of footage as enrolled in the same transaction (`segments()` lists them)."""

    def insert(self, rows: Sequence[tuple[NewEntry, str, str, np.ndarray]], *, segment: str | None = None) -> list[int]: ...
    def delete(self, entry_id: int) -> Entry | None: ...
    def delete_where(self, where: Where) -> list[Entry]: ...
    def get(self, entry_ids: Sequence[int]) -> dict[int, Entry]: ...
    def query(self, *, camera: int | None = None, label: str | None = None, limit: int, offset: int,
              where: Where | None = None) -> tuple[list[Entry], int]: ...  # fmt: skip
    def ids(self, where: Where | None = None) -> np.ndarray: ...
    def segments(self) -> set[str]: ...
    def max_track(self) -> int: ...
    def vacuum(self) -> None: ...
    def features(self, entry_ids: Sequence[int]) -> np.ndarray: ...
    def cameras(self) -> dict[int, int | None]: ...
    def fingerprints(self) -> set[str]: ...
    def adopt_features(self, path: Path, *, table: str, fingerprint: str) -> int: ...
    def images(self) -> set[str]: ...
    def hashes(self, among: Sequence[str] | None = None) -> set[str]: ...
    def close(self) -> None: ...


class SQLiteStore:
    """`GalleryStore` on one SQLite file in WAL mode; one connection shared by threads behind a lock."""

    def __init__(self, path: Path, *, feature_dim: int) -> None:
        self.feature_dim = feature_dim
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed enrolment survives a power cut, not only a kill
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY AUTOINCREMENT, image TEXT NOT NULL, "
            "sha256 TEXT NOT NULL, camera INTEGER, timestamp TEXT, label TEXT, source TEXT, "
            "fingerprint TEXT NOT NULL, track INTEGER, time REAL, feature BLOB NOT NULL)"
        )  # filter columns before the large vector: reading them never walks the vector's overflow pages
        self._db.execute("CREATE INDEX IF NOT EXISTS entries_camera ON entries (camera)")
        self._db.execute("CREATE INDEX IF NOT EXISTS entries_label ON entries (label)")
        self._db.execute("PRAGMA secure_delete=ON")  # deleted rows' bytes are overwritten, not left in free pages
        _migrate(self._db)

    def insert(self, rows: Sequence[tuple[NewEntry, str, str, np.ndarray]], *, segment: str | None = None) -> list[int]:
        """Insert (entry, image file name, fingerprint, feature) rows in one transaction; their new ids. `segment`
        (a key of ingested footage) is recorded in the same transaction."""
        with self._lock:
            with _transaction(self._db):
                ids = []
                for new, image, fingerprint, feature in rows:
                    cursor = self._db.execute(
                        "INSERT INTO entries (image, sha256, camera, timestamp, label, source, fingerprint, feature, "
                        "track, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (image, Path(image).stem, new.camera, new.timestamp, new.label, new.source, fingerprint,
                         np.ascontiguousarray(feature, dtype=np.float32).tobytes(), new.track,
                         to_seconds(new.timestamp)),
                    )  # fmt: skip
                    ids.append(int(cursor.lastrowid))
                if segment is not None:
                    self._db.execute("INSERT OR REPLACE INTO segments (key, entries) VALUES (?, ?)", (segment, len(ids)))
            return ids

    def delete(self, entry_id: int) -> Entry | None:
        with self._lock:
            found = self._rows(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id = ?", (entry_id,))
            self._db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        return found[0] if found else None

    def delete_where(self, where: Where) -> list[Entry]:
        """Delete every row matching `where` (which must restrict something) in one transaction; the deleted rows."""
        if where.empty:
            raise SpanetError("refusing to delete every gallery entry: give a condition (id, label, track, camera, time)")
        clause, params = where_sql(where)
        with self._lock:
            with _transaction(self._db):
                found = self._rows(f"SELECT {_ENTRY_COLUMNS} FROM entries{clause}", params)
                self._db.execute(f"DELETE FROM entries{clause}", params)
        return found

    def segments(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT key FROM segments")}

    def max_track(self) -> int:
        """The largest track id in use (0 when none): new tracks are numbered after it."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(track), 0) FROM entries").fetchone()[0])

    def vacuum(self) -> None:
        """Rewrite the database file without free pages and empty the write-ahead log, so that deleted rows are in
        no file of the gallery."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def get(self, entry_ids: Sequence[int]) -> dict[int, Entry]:
        if not entry_ids:
            return {}
        marks = ",".join("?" * len(entry_ids))
        with self._lock:
            rows = self._rows(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id IN ({marks})", tuple(int(i) for i in entry_ids))
        return {row.id: row for row in rows}

    def query(self, *, camera: int | None = None, label: str | None = None, limit: int, offset: int,
              where: Where | None = None) -> tuple[list[Entry], int]:  # fmt: skip
        clause, params = where_sql(narrow(where, camera=camera, label=label))
        with self._lock:
            total = int(self._db.execute(f"SELECT COUNT(*) FROM entries{clause}", params).fetchone()[0])
            rows = self._rows(f"SELECT {_ENTRY_COLUMNS} FROM entries{clause} ORDER BY id LIMIT ? OFFSET ?",
                              (*params, limit, offset))  # fmt: skip
        return rows, total

    def ids(self, where: Where | None = None) -> np.ndarray:
        clause, params = where_sql(where)
        with self._lock:
            rows = self._db.execute(f"SELECT id FROM entries{clause} ORDER BY id", params)
            return np.array([r[0] for r in rows], dtype=np.int64)

    def features(self, entry_ids: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(entry_ids), self.feature_dim), dtype=np.float32)
        with self._lock:
            for i, entry_id in enumerate(entry_ids):
                (blob,) = self._db.execute("SELECT feature FROM entries WHERE id = ?", (int(entry_id),)).fetchone()
                out[i] = np.frombuffer(blob, dtype=np.float32)
        return out

    def adopt_features(self, path: Path, *, table: str, fingerprint: str) -> int:
        """In one transaction, replace every row's vector by the one with its id in `table` (id, feature) of the
        SQLite file `path` and set its fingerprint; the number of rows. Nothing changes when a row has none there."""
        with self._lock:
            self._db.execute("ATTACH DATABASE ? AS incoming", (str(path),))
            try:
                with _transaction(self._db):
                    lacking = self._db.execute(
                        f"SELECT COUNT(*) FROM entries WHERE id NOT IN (SELECT id FROM incoming.{table})"
                    ).fetchone()[0]
                    if lacking:
                        raise SpanetError(f"{path} lacks the new vectors of {lacking} gallery entries; nothing switched")
                    cursor = self._db.execute(
                        f"UPDATE entries SET fingerprint = ?, feature = (SELECT feature FROM incoming.{table} AS new "
                        "WHERE new.id = entries.id)", (fingerprint,),
                    )  # fmt: skip
            finally:
                self._db.execute("DETACH DATABASE incoming")
        return int(cursor.rowcount)

    def cameras(self) -> dict[int, int | None]:
        with self._lock:
            return dict(self._db.execute("SELECT id, camera FROM entries").fetchall())

    def fingerprints(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT DISTINCT fingerprint FROM entries")}

    def images(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT DISTINCT image FROM entries")}

    def hashes(self, among: Sequence[str] | None = None) -> set[str]:
        """The distinct image hashes stored; with `among`, only those of `among` (by the sha256 index, not a scan)."""
        with self._lock:
            if among is None:
                return {r[0] for r in self._db.execute("SELECT DISTINCT sha256 FROM entries")}
            wanted, found = list(dict.fromkeys(among)), set()
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                sql = f"SELECT DISTINCT sha256 FROM entries WHERE sha256 IN ({','.join('?' * len(chunk))})"
                found.update(r[0] for r in self._db.execute(sql, chunk))
            return found

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Entry]:
        return [Entry(*row) for row in self._db.execute(sql, params).fetchall()]


def entry_images(path: Path) -> list[tuple[int, str]]:
    """(id, image file name) of every row of the gallery database `path`, read-only: a process that has the gallery
    open (`spanet serve`) goes on reading and writing meanwhile (WAL mode)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [(int(i), str(image)) for i, image in db.execute("SELECT id, image FROM entries ORDER BY id")]
    finally:
        db.close()


def _migrate(db: sqlite3.Connection) -> None:
    """Add what galleries made by older versions lack: the track and time columns (time filled from the timestamp
    text) and the segments table. Idempotent; one transaction."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    with _transaction(db):
        if "track" not in columns:
            db.execute("ALTER TABLE entries ADD COLUMN track INTEGER")
        if "time" not in columns:
            db.execute("ALTER TABLE entries ADD COLUMN time REAL")
            for entry_id, stamp in db.execute("SELECT id, timestamp FROM entries WHERE timestamp IS NOT NULL").fetchall():
                db.execute("UPDATE entries SET time = ? WHERE id = ?", (to_seconds(stamp), entry_id))
        db.execute("CREATE INDEX IF NOT EXISTS entries_track ON entries (track)")
        db.execute("CREATE INDEX IF NOT EXISTS entries_sha256 ON entries (sha256)")  # an enrolment's retry check
        db.execute("CREATE INDEX IF NOT EXISTS entries_time_camera ON entries (time, camera)")  # covers time + camera filters
        db.execute("CREATE TABLE IF NOT EXISTS segments (key TEXT PRIMARY KEY, entries INTEGER NOT NULL)")


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT; on any exception (Ctrl-C and SIGTERM included) ROLLBACK, but only while the
    transaction is still open: an interrupt that lands just after COMMIT must not turn into "cannot rollback - no
    transaction is active" and hide itself (a committed segment stays committed)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
