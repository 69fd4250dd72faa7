"""A gallery whose rows and vectors live in Milvus (`pymilvus.MilvusClient`): the `GalleryBackend` for galleries
that outgrow one host. The gallery folder keeps `gallery.json` (the model), `images/` (image bytes, named by their
SHA-256, as in the SQLite gallery) and `store.json` (which Milvus, which collection, the next id).

One collection per gallery folder, fields:
- `id` INT64 primary key, assigned here from `store.json`'s counter (reserved durably before the insert, so an id
  is never reused; below 2**53 so JSON and JavaScript keep it exact). Milvus' auto ids are 64-bit and would not.
- `vector` FLOAT_VECTOR (D), FLAT index, L2 metric: exact search; Milvus returns squared L2, as faiss does.
- `camera` INT64, the partition key (-1 = unknown camera; a partition key cannot be null): a camera filter searches
  only that camera's partitions.
- `timestamp` INT64 epoch seconds (nullable, INVERTED index; a timestamp without a zone is read as UTC), for time
  windows; `time_text` keeps the ISO 8601 text as given, so an entry reads back unchanged.
- `track` INT64 (nullable), `label`, `source`, `image` (file name in `images/`), `sha256`, `fingerprint` (weights
  fingerprint of the model that made the vector).

Consistency level: Strong. An enrolment's ids are returned only after the insert, and a search or listing that
follows must see them (the page enrols, then searches); Strong is the one level that guarantees that across
Milvus nodes, at the price of waiting for the newest write timestamp on every read (Bounded would allow reads up to
a few seconds stale). Milvus Lite runs in one process and is always up to date.

Milvus has no multi-row transactions: a batch is one insert request, so a failed request may leave part of a batch;
image files without a row are deleted on the next open.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import MilvusClient

from spanet.deploy.entry import Entry, Hit, NewEntry, Want
from spanet.deploy.filters import Where, narrow
from spanet.deploy.folder import open_folder
from spanet.deploy.gallery import store_image
from spanet.deploy.milvus_schema import (
    check_collection, connect, create_collection, in_window, to_entry, to_row, where_expression,
)
from spanet.deploy.store_spec import STORE_FILE, StoreSpec
from spanet.errors import SpanetError
from spanet.outputs import write_json

__all__ = ["MilvusGallery"]

_ENTRY_FIELDS = ["id", "image", "camera", "time_text", "label", "source", "fingerprint", "track"]
_MAX_LIMIT = 16384  # Milvus' largest top-k and query window
_CHUNK = 1000  # ids per get / names per membership query
_FLUSH_ROWS = 4096  # unflushed rows are searched by brute force (Milvus Lite: in Python, ~25x slower at 3k rows)
_COMPACT_WAIT_S = 300.0  # longest wait for a compaction after a forget


class MilvusGallery:
    """An open gallery folder on a Milvus collection. Thread-safe: calls to Milvus are serialised by one lock
    (Milvus Lite requires serialised writes; the model, not Milvus, is the service's bottleneck)."""

    def __init__(self, directory: Path, meta: dict[str, Any], client: MilvusClient, record: dict[str, Any], *,
                 lock: Any, spec: StoreSpec, seal_before_search: bool = False) -> None:  # fmt: skip
        self.directory = directory
        self.meta = meta
        self.spec = spec
        self.client = client
        self.collection = str(record["collection"])
        self._record = record
        self._lock_file = lock
        self._lock = threading.RLock()
        self._unflushed = 0
        self._seal_before_search = seal_before_search

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, model_info: dict[str, Any], create: bool = False,
             spec: StoreSpec) -> MilvusGallery:  # fmt: skip
        directory = Path(directory)
        meta, lock = open_folder(directory, model_info=model_info, create=create)
        try:
            client = connect(spec)
            record_path = directory / STORE_FILE
            if record_path.is_file():
                record = json.loads(record_path.read_text(encoding="utf-8"))
                check_collection(client, record, meta, spec)
            else:
                stem = "".join(c if c.isalnum() else "_" for c in directory.resolve().name)[:40]
                record = {"store": "milvus", "uri": spec.uri, "collection": f"spanet_{stem}_{uuid.uuid4().hex[:8]}",
                          "next_id": 1, "cameras": []}  # fmt: skip
                create_collection(client, record["collection"], dim=int(meta["feature_dim"]))
                _write_record(directory, record)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        lite = str(client.get_server_version()).startswith("milvus_lite")  # file or `milvus_lite server`
        gallery = cls(directory, meta, client, record, lock=lock, spec=spec, seal_before_search=lite)
        gallery._check_fingerprints()
        gallery._finish_segment()
        gallery._remove_orphans()
        from spanet.deploy.retention import finish_pending

        finish_pending(gallery)  # a deletion a killed process left half done is completed first
        return gallery

    @property
    def fingerprint(self) -> str:
        return str(self.meta["model"].get("weights_fingerprint", ""))

    def __len__(self) -> int:
        return self._count("")

    def add(self, entries: Sequence[NewEntry], features: np.ndarray, *, segment: str | None = None) -> list[int]:
        """Enrol `entries` with their features (N, D): image files first, then one insert request. A `segment` key
        is recorded as pending with the reserved ids before the insert and as done after it, so a crash in between
        is settled on the next open (`_finish_segment`)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        dim = int(self.meta["feature_dim"])
        if features.shape != (len(entries), dim):
            raise SpanetError(f"{len(entries)} entries need ({len(entries)}, {dim}) features, got {features.shape}")
        if not entries and segment is None:
            return []
        with self._lock:
            names = [store_image(self.directory / "images", entry) for entry in entries]
            first = int(self._record["next_id"])
            ids = list(range(first, first + len(entries)))
            self._reserve(entries, stop=first + len(entries), segment=segment)  # ids never handed out twice
            rows = [to_row(i, e, n, self.fingerprint, f) for i, e, n, f in zip(ids, entries, names, features)]
            if rows:
                self.client.insert(self.collection, rows)
            if segment is not None:
                self._settle_segment(done=True)
            self._unflushed += len(rows)
            if self._unflushed >= _FLUSH_ROWS:
                self.save_index()
        return ids

    def remove(self, entry_id: int) -> Entry | None:
        """Delete one entry, and its image file unless another entry shares it; None if unknown."""
        with self._lock:
            entry = self.get([entry_id]).get(entry_id)
            if entry is None:
                return None
            self.client.delete(self.collection, ids=[int(entry_id)])
            if not self.client.query(self.collection, filter=f"image == {json.dumps(entry.image)}", output_fields=["id"], limit=1):
                (self.directory / "images" / entry.image).unlink(missing_ok=True)
        return entry

    def get(self, entry_ids: Sequence[int]) -> dict[int, Entry]:
        found: dict[int, Entry] = {}
        ids = [int(i) for i in entry_ids]
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                rows = self.client.get(self.collection, ids=ids[start : start + _CHUNK], output_fields=_ENTRY_FIELDS)
                found.update({int(r["id"]): to_entry(r) for r in rows})
        return found

    def query(self, *, camera: int | None, label: str | None, limit: int, offset: int,
              where: Where | None = None) -> tuple[list[Entry], int]:  # fmt: skip
        """One page of entries in id order (Milvus iterators go in primary-key order) and the number matching."""
        expression = where_expression(narrow(where, camera=camera, label=label))
        with self._lock:
            total = self._count(expression)
            rows = self._iterate(expression, _ENTRY_FIELDS, skip=offset, limit=limit) if offset < total else []
        return [to_entry(r) for r in rows], total

    def search(self, query: np.ndarray, *, top_k: int, camera: int | None = None, exclude_camera: int | None = None,
               where: Where | None = None) -> list[Hit]:  # fmt: skip
        """The `top_k` nearest entries to one query among those `where` (and the camera options) selects."""
        return self.search_many(np.reshape(query, (1, -1)), [(top_k, camera, exclude_camera)], where=[where])[0]

    def search_many(self, queries: np.ndarray, wants: Sequence[Want], *,
                    where: Sequence[Where | None] | None = None) -> list[list[Hit]]:  # fmt: skip
        """`search` for each row of `queries` (Q, D) with its (top_k, camera, exclude_camera) and its `Where`."""
        conditions = list(where) if where is not None else [None] * len(wants)
        return self._search(queries, [(k, where_expression(w, camera=c, exclude_camera=e))
                                      for (k, c, e), w in zip(wants, conditions)])  # fmt: skip

    def remove_where(self, where: Where) -> list[Entry]:
        """Delete every entry `where` matches (it must restrict something), and the image files no entry uses any
        more; the removed entries. Times are re-checked exactly before deleting (the field holds whole seconds)."""
        if where.empty:
            raise SpanetError("refusing to delete every gallery entry: give a condition (id, label, track, camera, time)")
        with self._lock:
            removed = [e for e in map(to_entry, self._iterate(where_expression(where), _ENTRY_FIELDS)) if in_window(e, where)]
            ids = [e.id for e in removed]
            for start in range(0, len(ids), _CHUNK):
                self.client.delete(self.collection, ids=ids[start : start + _CHUNK])
            self._unflushed += len(ids)  # deletions are sealed by the next flush too
            self._remove_unused_images(sorted({e.image for e in removed}))
        return removed

    def purge(self) -> None:
        """Flush the deletions and ask Milvus to compact the collection (segments rewritten without deleted rows),
        waiting for the compaction. On a Milvus server the replaced segment files are removed later by its garbage
        collector; Milvus Lite 3.2 reports a compaction done at once and keeps deleted vectors in its index files
        (docs/scale.md)."""
        import time

        with self._lock:
            self.client.flush(self.collection)
            self._unflushed = 0
            job = self.client.compact(self.collection)
            deadline = time.monotonic() + _COMPACT_WAIT_S
            while str(self.client.get_compaction_state(job)) not in ("Completed", "UndefiedState", "UndefinedState"):
                if time.monotonic() > deadline:
                    raise SpanetError(f"Milvus compaction {job} of {self.collection} did not finish in "
                                      f"{_COMPACT_WAIT_S:.0f} s; run the same forget again later to compact again")  # fmt: skip
                time.sleep(0.5)

    def segments(self) -> set[str]:
        with self._lock:
            return set(self._record.get("segments", []))

    def max_track(self) -> int:
        """The largest track id in use (0 when none), kept in `store.json` as entries are added."""
        with self._lock:
            return int(self._record.get("max_track", 0))

    def _search(self, queries: np.ndarray, wants: Sequence[tuple[int, str]]) -> list[list[Hit]]:
        """One Milvus request per distinct filter expression, for the rows of `queries` (Q, D) that share it."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        results: list[list[Hit]] = [[] for _ in wants]
        groups: dict[str, list[int]] = {}
        for row, (_k, expression) in enumerate(wants):
            groups.setdefault(expression, []).append(row)
        with self._lock:
            if self._seal_before_search and self._unflushed:
                self.save_index()  # Milvus Lite searches unsealed rows in Python: 60 of them made a search 7x slower
            for expression, rows in groups.items():
                limit = min(_MAX_LIMIT, max(int(wants[r][0]) for r in rows))
                found = self.client.search(
                    self.collection, data=[queries[r].tolist() for r in rows], anns_field="vector", limit=limit,
                    filter=expression, output_fields=_ENTRY_FIELDS, search_params={"metric_type": "L2"},
                )  # fmt: skip
                for r, hits in zip(rows, found):
                    results[r] = [Hit(entry=to_entry({**h["entity"], "id": h["id"]}), distance=float(h["distance"]))
                                  for h in list(hits)[: int(wants[r][0])]]  # fmt: skip
        return results

    def features(self, entry_ids: Sequence[int]) -> np.ndarray:
        dim = int(self.meta["feature_dim"])
        out = np.zeros((len(entry_ids), dim), dtype=np.float32)
        ids = [int(i) for i in entry_ids]
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                rows = self.client.get(self.collection, ids=ids[start : start + _CHUNK], output_fields=["id", "vector"])
                vectors = {int(r["id"]): r["vector"] for r in rows}
                for i, entry_id in enumerate(ids[start : start + _CHUNK]):
                    if entry_id not in vectors:
                        raise SpanetError(f"gallery entry {entry_id} is not in collection {self.collection}")
                    out[start + i] = np.asarray(vectors[entry_id], dtype=np.float32)
        return out

    def ids(self, where: Where | None = None) -> np.ndarray:
        with self._lock:
            return np.array([int(r["id"]) for r in self._iterate(where_expression(where), ["id"])], dtype=np.int64)

    def cameras(self) -> list[int]:
        """The cameras that have at least one entry (the ones ever enrolled, each checked with one small query)."""
        with self._lock:
            return [c for c in self._record["cameras"]
                    if self.client.query(self.collection, filter=f"camera == {int(c)}", output_fields=["id"], limit=1)]  # fmt: skip

    def image_path(self, entry: Entry) -> Path:
        folder = (self.directory / "images").resolve()
        path = (folder / entry.image).resolve()
        if path.parent != folder:
            raise SpanetError(f"entry {entry.id} names an image outside the gallery; the collection was edited by hand")
        return path

    def known_hashes(self, among: Sequence[str] | None = None) -> set[str]:
        with self._lock:
            if among is None:
                return {str(r["sha256"]) for r in self._iterate("", ["sha256"])}
            wanted, found = list(dict.fromkeys(among)), set()
            for start in range(0, len(wanted), 100):  # 100 hashes: the limit leaves room for 160 rows per image
                chunk = wanted[start : start + 100]  # `sha256 in [...]` uses the INVERTED index: no scan
                rows = self.client.query(self.collection, filter=f"sha256 in {json.dumps(chunk)}", output_fields=["sha256"],
                                         limit=_MAX_LIMIT)  # fmt: skip
                found.update(str(r["sha256"]) for r in rows)
            return found

    def save_index(self) -> None:
        """Seal the rows inserted since the last flush into indexed segments. Inserts are durable without it (Milvus'
        write-ahead log); searching unsealed rows is brute force, so galleries flush every few thousand rows and
        after a build or import."""
        with self._lock:
            if self._unflushed:
                self.client.flush(self.collection)
                self._unflushed = 0

    def close(self) -> None:
        with self._lock:
            self.save_index()
            self.client.close()
            if self.spec.is_file:  # stop Milvus Lite's in-process server, which holds the .db folder's lock
                from milvus_lite import server_manager_instance

                server_manager_instance.release_server(self.spec.uri)
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def _count(self, expression: str) -> int:
        with self._lock:
            rows = self.client.query(self.collection, filter=expression, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _iterate(self, expression: str, fields: list[str], *, skip: int = 0, limit: int | None = None) -> list[dict]:
        """Rows matching `expression` in id order: `limit` of them after the first `skip`."""
        iterator = self.client.query_iterator(self.collection, filter=expression, output_fields=fields,
                                              batch_size=min(_MAX_LIMIT, max(1, (limit or _MAX_LIMIT) + skip)))  # fmt: skip
        out: list[dict] = []
        try:
            while limit is None or len(out) < limit:
                batch = iterator.next()
                if not batch:
                    break
                take = list(batch)[skip:]
                skip = max(0, skip - len(batch))
                out += take
        finally:
            iterator.close()
        return out if limit is None else out[:limit]

    def _reserve(self, entries: Sequence[NewEntry], *, stop: int, segment: str | None) -> None:
        """Write `store.json` with the next free id `stop`, the cameras and largest track including `entries`, and
        `segment` as pending over the reserved ids; durably, before the insert."""
        record = dict(self._record)
        cameras = set(record.get("cameras", [])) | {e.camera for e in entries if e.camera is not None}
        tracks = [int(e.track) for e in entries if e.track is not None]
        record.update(next_id=stop, cameras=sorted(cameras), max_track=max([int(record.get("max_track", 0)), *tracks]))
        if segment is not None:
            record["pending_segment"] = {"key": segment, "first": int(self._record["next_id"]), "stop": stop}
        self._record = record
        _write_record(self.directory, record)

    def _settle_segment(self, *, done: bool) -> None:
        """Move the pending segment to the done list (`done`) or drop it."""
        record = dict(self._record)
        pending = record.pop("pending_segment")
        if done:
            record["segments"] = sorted({*record.get("segments", []), pending["key"]})
        self._record = record
        _write_record(self.directory, record)

    def _finish_segment(self) -> None:
        """Settle a segment whose enrolment a killed process left unconfirmed: done if all its rows are there,
        else its rows are deleted (all or none) and it is dropped, so the next ingest enrols it again."""
        pending = self._record.get("pending_segment")
        if pending is None:
            return
        expression = f"id >= {int(pending['first'])} and id < {int(pending['stop'])}"
        complete = self._count(expression) == int(pending["stop"]) - int(pending["first"])
        if not complete:
            self.client.delete(self.collection, filter=expression)
        self._settle_segment(done=complete)

    def _remove_unused_images(self, images: list[str]) -> None:
        for start in range(0, len(images), _CHUNK):
            chunk = images[start : start + _CHUNK]
            kept = {r["image"] for r in self.client.query(self.collection, filter=f"image in {json.dumps(chunk)}",
                                                          output_fields=["image"], limit=_MAX_LIMIT)}  # fmt: skip
            for name in set(chunk) - kept:
                (self.directory / "images" / name).unlink(missing_ok=True)

    def _check_fingerprints(self) -> None:
        strangers = self.client.query(self.collection, filter=f"fingerprint != {json.dumps(self.fingerprint)}",
                                      output_fields=["fingerprint"], limit=1)  # fmt: skip
        if strangers:
            self.close()
            raise SpanetError(f"gallery {self.directory} holds features of another model ({strangers[0]['fingerprint']}) "
                              f"in collection {self.collection}; rebuild it with one checkpoint")  # fmt: skip

    def _remove_orphans(self) -> int:
        """Delete image files that no row names (left by a crash between the file and the insert)."""
        files = sorted(p for p in (self.directory / "images").iterdir())
        removed = 0
        for start in range(0, len(files), _CHUNK):
            names = [p.name for p in files[start : start + _CHUNK]]
            rows = self.client.query(self.collection, filter=f"image in {json.dumps(names)}", output_fields=["image"],
                                     limit=_MAX_LIMIT)  # fmt: skip
            referenced = {r["image"] for r in rows}
            for path in files[start : start + _CHUNK]:
                if path.name not in referenced:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


def _write_record(directory: Path, record: dict[str, Any]) -> None:
    write_json(directory / STORE_FILE, record)  # atomic and durable (`spanet.outputs`)


