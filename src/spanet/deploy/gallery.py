"""A persistent, editable gallery folder: image copies, one database row per entry, and a faiss index over them.

Layout of a gallery folder (spanet owns everything in it):
- `gallery.json`: format, feature dimension and the model that made the features (fingerprints, as in an index),
  and the same-person threshold `spanet ingest` used (`spanet.deploy.threshold`), if any.
- `entries.sqlite`: one row per entry (id, image file, camera, timestamp, label, source, feature fingerprint, the
  feature vector itself, the track it came from and its time as UTC seconds), SQLite in WAL mode; a `segments` table
  names the stretches of footage `spanet ingest` enrolled (docs/video.md). Galleries made before the track and time
  columns get them on open (time filled from the timestamp).
- `images/`: the enrolled images, named by the SHA-256 of their bytes.
- `index.faiss`: a flat (exact) faiss index keyed by entry id (`IndexIDMap2`), a cache of the rows' vectors.

Why enrolment is all-or-nothing: the database commit is the one atomic step. The image file is written before it
(an unreferenced file left by a crash is removed on the next open), and the index is derived from the rows: on
open, vectors of rows missing from `index.faiss` are added from the stored features and entries no longer in the
database are removed. Nothing already indexed is recomputed, and the model is never run on open.

`GalleryStore` (`spanet.deploy.sqlite_store`) is the small interface the gallery needs from its database;
`SQLiteStore` there is the embedded default. `Gallery` is the SQLite implementation of
`spanet.deploy.backend.GalleryBackend`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spanet.data.images import IMAGE_EXTENSIONS
from spanet.deploy.entry import Entry, Hit, NewEntry, Want
from spanet.deploy.filters import Where, narrow, to_seconds
from spanet.deploy.folder import (
    DB_FILE,
    GALLERY_FORMAT,
    IMAGES_DIR,
    INDEX_FILE,
    META_FILE,
    lock_folder,
    open_folder,
    read_meta,
    write_meta,
)
from spanet.deploy.sqlite_store import GalleryStore, SQLiteStore
from spanet.errors import SpanetError
from spanet.outputs import durable_replace

__all__ = ["Entry", "NewEntry", "Hit", "GalleryStore", "SQLiteStore", "Gallery", "GALLERY_FORMAT", "open_folder", "store_image",
           "image_name", "existing_ids", "to_seconds", "lock_folder", "read_meta", "write_meta", "META_FILE", "DB_FILE",
           "INDEX_FILE", "IMAGES_DIR"]



class Gallery:
    """An open gallery folder. Thread-safe: writes and searches of the index are serialised by one lock."""

    def __init__(self, directory: Path, meta: dict[str, Any], store: GalleryStore, index: Any, *,
                 lock: Any = None) -> None:  # fmt: skip
        self.directory = directory
        self._lock_file = lock  # held while open: one process per gallery
        self.meta = meta
        self.store = store
        self.index = index
        self._lock = threading.RLock()
        self._cameras = store.cameras()
        self._dirty = False

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, model_info: dict[str, Any], create: bool = False) -> Gallery:
        """Open (or with `create`, make) the gallery in `directory` for features of the model `model_info` describes.

        A gallery made by another model (different fingerprints, kind or dimension) raises `SpanetError`.
        """
        from spanet.deploy.reembed import finish_switch

        directory = Path(directory)
        finish_switch(directory)  # a model switch a killed `spanet gallery reembed` left half done is completed first
        meta, lock = open_folder(directory, model_info=model_info, create=create)
        try:
            store = SQLiteStore(directory / DB_FILE, feature_dim=int(meta["feature_dim"]))
            strangers = store.fingerprints() - {meta["model"].get("weights_fingerprint")}
            if strangers:
                store.close()
                raise SpanetError(f"gallery {directory} holds features of other models ({', '.join(sorted(strangers))}); "
                                  "rebuild it with one checkpoint")  # fmt: skip
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        index = _load_index(directory / INDEX_FILE, int(meta["feature_dim"]))
        gallery = cls(directory, meta, store, index, lock=lock)
        gallery.reconcile()
        from spanet.deploy.retention import finish_pending

        finish_pending(gallery)  # a deletion a killed process left half done is completed first
        return gallery

    @staticmethod
    def stored_kind(directory: str | os.PathLike[str]) -> str | None:
        """The embedding kind ("parts", "reduced", "global") an existing gallery was built with; None for a new one."""
        try:
            return read_meta(directory)["model"].get("kind")  # type: ignore[index]
        except (KeyError, TypeError, AttributeError):
            return None  # Gallery.open says what is wrong with the file

    @property
    def fingerprint(self) -> str:
        return str(self.meta["model"].get("weights_fingerprint", ""))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def reconcile(self) -> dict[str, int]:
        """Make the index hold exactly the database's rows and delete image files no row refers to (crash leftovers)."""
        import faiss

        with self._lock:
            in_db = self.store.ids()
            in_index = faiss.vector_to_array(self.index.id_map).astype(np.int64) if self.index.ntotal else np.zeros(0, np.int64)
            extra = np.setdiff1d(in_index, in_db)
            missing = np.setdiff1d(in_db, in_index)
            if extra.size:
                self.index.remove_ids(extra)
            if missing.size:
                self.index.add_with_ids(self.store.features(missing), missing)
            if extra.size or missing.size:
                self.save_index()
            referenced = self.store.images()
            orphans = [p for p in (self.directory / IMAGES_DIR).iterdir() if p.name not in referenced]
            for path in orphans:
                path.unlink()
        return {"added": int(missing.size), "removed": int(extra.size), "orphan_files": len(orphans)}

    def add(self, entries: Sequence[NewEntry], features: np.ndarray, *, segment: str | None = None) -> list[int]:
        """Enrol `entries` with their features (N, D): image files, rows and index entries, all or none (with the
        `segment` key of the footage they came from, if given)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.shape != (len(entries), int(self.meta["feature_dim"])):
            raise SpanetError(f"{len(entries)} entries need ({len(entries)}, {self.meta['feature_dim']}) features, got {features.shape}")
        with self._lock:  # file writes inside the lock too, so a concurrent delete cannot remove a shared file
            names = [self._write_image(entry) for entry in entries]
            rows = [(e, n, self.fingerprint, f) for e, n, f in zip(entries, names, features)]
            ids = self.store.insert(rows, segment=segment) if segment is not None else self.store.insert(rows)
            self.index.add_with_ids(features, np.array(ids, dtype=np.int64))
            self._cameras.update({i: e.camera for i, e in zip(ids, entries)})
            self._dirty = True
        return ids

    def remove(self, entry_id: int) -> Entry | None:
        """Delete one entry (row, index vector, and its image file unless another entry shares it); None if unknown."""
        with self._lock:
            entry = self.store.delete(entry_id)
            if entry is None:
                return None
            self.index.remove_ids(np.array([entry_id], dtype=np.int64))
            self._cameras.pop(entry_id, None)
            self._dirty = True
            if entry.image not in self.store.images():
                (self.directory / IMAGES_DIR / entry.image).unlink(missing_ok=True)
        return entry

    def remove_where(self, where: Where) -> list[Entry]:
        """Delete every entry matching `where`: rows (one transaction), index vectors and image files no remaining
        entry shares. The index file is rewritten; `purge` then removes the deleted bytes from the database file."""
        with self._lock:
            removed = self.store.delete_where(where)
            if not removed:
                return []
            self.index.remove_ids(np.array([e.id for e in removed], dtype=np.int64))
            for entry in removed:
                self._cameras.pop(entry.id, None)
            self.save_index()
            referenced = self.store.images()
            for name in {e.image for e in removed} - referenced:
                (self.directory / IMAGES_DIR / name).unlink(missing_ok=True)
        return removed

    def purge(self) -> None:
        """Make removed entries unrecoverable: vacuum the database (free pages and the write-ahead log emptied;
        `secure_delete` has zeroed the rows already) and rewrite `index.faiss` without their vectors."""
        with self._lock:
            self.store.vacuum()
            self.save_index()

    def search(self, query: np.ndarray, *, top_k: int, camera: int | None = None, exclude_camera: int | None = None,
               where: Where | None = None) -> list[Hit]:  # fmt: skip
        """The `top_k` nearest entries to one query vector, optionally only one camera's or all but one camera's,
        and only among the rows `where` matches."""
        return self.search_many(np.reshape(query, (1, -1)), [(top_k, camera, exclude_camera)], where=[where])[0]

    def search_many(self, queries: np.ndarray, wants: Sequence[Want], *,
                    where: Sequence[Where | None] | None = None) -> list[list[Hit]]:  # fmt: skip
        """`search` for each row of `queries` (Q, D) with its (top_k, camera, exclude_camera): one faiss call for all.
        `where`, one per query, limits a query to the rows it matches (time window, camera set, track)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if where is not None and any(w is not None and not w.empty for w in where):
            return self._search_where(queries, wants, where)
        found: list[list[tuple[int, float]]] = []
        with self._lock:
            total = int(self.index.ntotal)
            k = min(max((w[0] for w in wants), default=1), total)
            distances, ids = self.index.search(queries, k) if k > 0 else (np.zeros((len(wants), 0)), np.zeros((len(wants), 0)))
            for row, (top_k, camera, exclude) in enumerate(wants):
                wanted, k_row = self._camera_filter(camera, exclude), k
                pairs = [(int(i), float(d)) for i, d in zip(ids[row], distances[row]) if i >= 0 and wanted(int(i))]
                while len(pairs) < top_k and k_row < total:  # a camera filter removed some: look further down
                    k_row = min(total, k_row * 4)
                    more_d, more_i = self.index.search(queries[row : row + 1], k_row)
                    pairs = [(int(i), float(d)) for i, d in zip(more_i[0], more_d[0]) if i >= 0 and wanted(int(i))]
                found.append(pairs[:top_k])
        rows = self.store.get([i for pairs in found for i, _ in pairs])
        return [[Hit(entry=rows[i], distance=d) for i, d in pairs if i in rows] for pairs in found]

    def _search_where(self, queries: np.ndarray, wants: Sequence[Want],
                      where: Sequence[Where | None]) -> list[list[Hit]]:  # fmt: skip
        """One faiss search per query over only the ids its `Where` (and camera options) selects."""
        import faiss

        found = []
        for row, ((top_k, camera, exclude), condition) in enumerate(zip(wants, where)):
            allowed = self.store.ids(narrow(condition, camera=camera))  # the camera in SQL: (time, camera) index
            if exclude is not None:
                allowed = np.array([i for i in allowed if self._camera_filter(None, exclude)(int(i))], dtype=np.int64)
            k = min(top_k, len(allowed))
            if k == 0:
                found.append([])
                continue
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            with self._lock:
                distances, ids = self.index.search(queries[row : row + 1], k, params=params)
            found.append([(int(i), float(d)) for i, d in zip(ids[0], distances[0]) if i >= 0])
        rows = self.store.get([i for pairs in found for i, _ in pairs])
        return [[Hit(entry=rows[i], distance=d) for i, d in pairs if i in rows] for pairs in found]

    def cameras(self) -> list[int]:
        """The cameras that have at least one entry."""
        with self._lock:
            return sorted({c for c in self._cameras.values() if c is not None})

    def get(self, entry_ids: Sequence[int]) -> dict[int, Entry]:
        return self.store.get(entry_ids)

    def query(self, *, camera: int | None, label: str | None, limit: int, offset: int,
              where: Where | None = None) -> tuple[list[Entry], int]:  # fmt: skip
        return self.store.query(camera=camera, label=label, limit=limit, offset=offset, where=where)

    def features(self, entry_ids: Sequence[int]) -> np.ndarray:
        return self.store.features(entry_ids)

    def ids(self, where: Where | None = None) -> np.ndarray:
        return self.store.ids(where)

    def segments(self) -> set[str]:
        return self.store.segments()

    def max_track(self) -> int:
        return self.store.max_track()

    def image_path(self, entry: Entry) -> Path:
        """The file of an entry's image; always inside the gallery's images folder."""
        folder = (self.directory / IMAGES_DIR).resolve()
        path = (folder / entry.image).resolve()
        if path.parent != folder:
            raise SpanetError(f"entry {entry.id} names an image outside the gallery; the database was edited by hand")
        return path

    def known_hashes(self, among: Sequence[str] | None = None) -> set[str]:
        """SHA-256 of every enrolled image (or of those in `among`), to skip files already enrolled."""
        return self.store.hashes(among)

    def save_index(self) -> None:
        """Write `index.faiss` atomically (temporary file, then rename), if anything changed."""
        import faiss

        with self._lock:
            tmp = self.directory / f"{INDEX_FILE}.tmp"
            faiss.write_index(self.index, str(tmp))
            durable_replace(tmp, self.directory / INDEX_FILE)
            self._dirty = False

    def close(self) -> None:
        with self._lock:
            if self._dirty:
                self.save_index()
            self.store.close()
            if self._lock_file is not None:
                self._lock_file.close()  # releases the lock
                self._lock_file = None

    def _camera_filter(self, camera: int | None, exclude_camera: int | None) -> Any:
        cams = self._cameras
        if camera is None and exclude_camera is None:
            return lambda _i: True
        return lambda i: (camera is None or cams.get(i) == camera) and (exclude_camera is None or cams.get(i) != exclude_camera)

    def _write_image(self, entry: NewEntry) -> str:
        return store_image(self.directory / IMAGES_DIR, entry)


_SAFE_SUFFIXES = (*IMAGE_EXTENSIONS, ".gif")  # what the service accepts: the readable images and GIF


def store_image(folder: Path, entry: NewEntry) -> str:
    """Write an entry's bytes into the images folder as SHA256.suffix (durably, once per content); the file name."""
    name = image_name(entry)
    path = folder / name
    if not path.exists():
        tmp = path.with_name(f".{name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(entry.data)
        durable_replace(tmp, path)  # on disk before the row that names it is committed
    return name


def existing_ids(gallery: Any, entries: Sequence[NewEntry]) -> list[int | None]:
    """Per entry, the id of a stored one with the same bytes, camera, timestamp and label (a client's retry), or
    None. Uses only what every backend offers (`known_hashes`, `query`)."""
    hashes = [hashlib.sha256(entry.data).hexdigest() for entry in entries]
    known = gallery.known_hashes(hashes)  # only these: a service's enrolment does not read every row's hash
    return [_existing_id(gallery, entry) if sha in known else None for entry, sha in zip(entries, hashes)]


def _existing_id(gallery: Any, entry: NewEntry) -> int | None:
    name, offset = image_name(entry), 0
    while True:
        rows, total = gallery.query(camera=entry.camera, label=entry.label, limit=1000, offset=offset)
        for row in rows:
            if row.image == name and row.camera == entry.camera and row.timestamp == entry.timestamp:
                return row.id
        offset += len(rows)
        if not rows or offset >= total:
            return None


def image_name(entry: NewEntry) -> str:
    """The file name an entry's bytes are stored under: SHA256 of the content, then a safe suffix."""
    suffix = entry.suffix.lower() if entry.suffix.lower() in _SAFE_SUFFIXES else ".img"
    return f"{hashlib.sha256(entry.data).hexdigest()}{suffix}"


def _load_index(path: Path, dim: int) -> Any:
    """index.faiss, or a new empty index when there is none or it cannot be read: the index is a cache of the rows,
    and `reconcile` re-adds every row from the stored vectors."""
    import warnings

    import faiss

    if path.is_file():
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            warnings.warn(f"{path} could not be read ({str(exc).splitlines()[0][:120]}); rebuilding it from the "
                          "gallery's rows", stacklevel=3)  # fmt: skip
            return faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
        if index.d != dim:
            raise SpanetError(f"{path} holds {index.d}-d vectors but the gallery's are {dim}-d; delete {path} to rebuild it")
        return index
    return faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
