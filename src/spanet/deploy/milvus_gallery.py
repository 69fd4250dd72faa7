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

import datetime as dt
import json
import os
import re
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from spanet.deploy.entry import Entry, Hit, NewEntry, Want
from spanet.deploy.filters import Where, narrow, to_seconds
from spanet.deploy.gallery import open_folder, store_image
from spanet.deploy.store_spec import STORE_FILE, StoreSpec
from spanet.errors import SpanetError
from spanet.outputs import write_json

__all__ = ["MilvusGallery", "CONSISTENCY", "where_expression"]

CONSISTENCY = "Strong"
_NO_CAMERA = -1
_ENTRY_FIELDS = ["id", "image", "camera", "time_text", "label", "source", "fingerprint", "track"]
_MAX_LIMIT = 16384  # Milvus' largest top-k and query window
_CHUNK = 1000  # ids per get / names per membership query
_MIN_SERVER = (2, 5)  # nullable scalar fields (tested: 2.3.5 standalone rejects null timestamps at insert)
_FLUSH_ROWS = 4096  # unflushed rows are searched by brute force (Milvus Lite: in Python, ~25x slower at 3k rows)
_COMPACT_WAIT_S = 300.0  # longest wait for a compaction after a forget
_NOTHING = "id < 0"  # matches no row (ids are >= 1): an empty id or camera set


def where_expression(where: Where | None, *, camera: int | None = None, exclude_camera: int | None = None) -> str:
    """The Milvus boolean expression of `where` (and a search's camera options); "" for no filter. The time field
    holds whole epoch seconds, so a window boundary with a fraction of a second is widened to the whole second
    (`after` floored, `before` rounded up); `remove_where` re-checks the exact times before deleting."""
    where = where or Where()
    terms = []
    if where.ids is not None:
        terms.append(f"id in [{', '.join(str(int(i)) for i in where.ids)}]" if where.ids else _NOTHING)
    if camera is not None:
        terms.append(f"camera == {int(camera)}")
    if where.cameras is not None:
        terms.append(f"camera in [{', '.join(str(int(c)) for c in where.cameras)}]" if where.cameras else _NOTHING)
    if exclude_camera is not None:
        terms.append(f"camera != {int(exclude_camera)}")
    if where.label is not None:
        terms.append(f"label == {json.dumps(where.label)}")
    if where.track is not None:
        terms.append(f"track == {int(where.track)}")
    if where.after is not None:
        terms.append(f"timestamp >= {int(np.floor(where.after))}")
    if where.before is not None:
        terms.append(f"timestamp < {int(np.ceil(where.before))}")
    return " and ".join(terms)


class MilvusGallery:
    """An open gallery folder on a Milvus collection. Thread-safe: calls to Milvus are serialised by one lock
    (Milvus Lite requires serialised writes; the model, not Milvus, is the service's bottleneck)."""

    def __init__(self, directory: Path, meta: dict[str, Any], client: MilvusClient, record: dict[str, Any], *,
                 lock: Any, spec: StoreSpec) -> None:  # fmt: skip
        self.directory = directory
        self.meta = meta
        self.spec = spec
        self.client = client
        self.collection = str(record["collection"])
        self._record = record
        self._lock_file = lock
        self._lock = threading.RLock()
        self._unflushed = 0

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, model_info: dict[str, Any], create: bool = False,
             spec: StoreSpec) -> MilvusGallery:  # fmt: skip
        directory = Path(directory)
        meta, lock = open_folder(directory, model_info=model_info, create=create)
        try:
            client = _connect(spec)
            record_path = directory / STORE_FILE
            if record_path.is_file():
                record = json.loads(record_path.read_text(encoding="utf-8"))
                _check_collection(client, record, meta, spec)
            else:
                stem = "".join(c if c.isalnum() else "_" for c in directory.resolve().name)[:40]
                record = {"store": "milvus", "uri": spec.uri, "collection": f"spanet_{stem}_{uuid.uuid4().hex[:8]}",
                          "next_id": 1, "cameras": []}  # fmt: skip
                _create_collection(client, record["collection"], dim=int(meta["feature_dim"]))
                _write_record(directory, record)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        gallery = cls(directory, meta, client, record, lock=lock, spec=spec)
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
            rows = [_row(i, e, n, self.fingerprint, f) for i, e, n, f in zip(ids, entries, names, features)]
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
                found.update({int(r["id"]): _entry(r) for r in rows})
        return found

    def query(self, *, camera: int | None, label: str | None, limit: int, offset: int,
              where: Where | None = None) -> tuple[list[Entry], int]:  # fmt: skip
        """One page of entries in id order (Milvus iterators go in primary-key order) and the number matching."""
        expression = where_expression(narrow(where, camera=camera, label=label))
        with self._lock:
            total = self._count(expression)
            rows = self._iterate(expression, _ENTRY_FIELDS, skip=offset, limit=limit) if offset < total else []
        return [_entry(r) for r in rows], total

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
            removed = [e for e in map(_entry, self._iterate(where_expression(where), _ENTRY_FIELDS)) if _in_window(e, where)]
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
            for expression, rows in groups.items():
                limit = min(_MAX_LIMIT, max(int(wants[r][0]) for r in rows))
                found = self.client.search(
                    self.collection, data=[queries[r].tolist() for r in rows], anns_field="vector", limit=limit,
                    filter=expression, output_fields=_ENTRY_FIELDS, search_params={"metric_type": "L2"},
                )  # fmt: skip
                for r, hits in zip(rows, found):
                    results[r] = [Hit(entry=_entry({**h["entity"], "id": h["id"]}), distance=float(h["distance"]))
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

    def known_hashes(self) -> set[str]:
        with self._lock:
            return {str(r["sha256"]) for r in self._iterate("", ["sha256"])}

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


def _connect(spec: StoreSpec) -> MilvusClient:
    if spec.is_file:
        import importlib.util

        if importlib.util.find_spec("milvus_lite") is None:
            raise SpanetError(f"--store milvus:{spec.uri} needs Milvus Lite: pip install 'spanet[milvus]'")
    try:
        client = MilvusClient(uri=spec.uri, token=os.environ.get("SPANET_MILVUS_TOKEN", ""), timeout=30)
        version = str(client.get_server_version())
    except Exception as exc:  # pymilvus raises its own MilvusException and grpc errors
        raise SpanetError(f"cannot connect to Milvus at {spec.uri} ({str(exc).splitlines()[0][:200]}); start it, or "
                          "check the address and SPANET_MILVUS_TOKEN") from None  # fmt: skip
    match = re.match(r"v?(\d+)\.(\d+)", version)  # a server says v2.5.4; Milvus Lite says milvus_lite-3.2.2
    if match and (int(match[1]), int(match[2])) < _MIN_SERVER:
        client.close()
        raise SpanetError(f"Milvus at {spec.uri} is {version}; the gallery schema needs Milvus >= 2.5 (nullable "
                          "fields, INVERTED scalar indexes): upgrade the server")  # fmt: skip
    return client


def _create_collection(client: MilvusClient, name: str, *, dim: int) -> None:
    if client.has_collection(name):
        raise SpanetError(f"Milvus already has a collection {name}; give a new gallery folder")
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("camera", DataType.INT64, is_partition_key=True)
    schema.add_field("timestamp", DataType.INT64, nullable=True)
    schema.add_field("time_text", DataType.VARCHAR, max_length=64, nullable=True)
    schema.add_field("track", DataType.INT64, nullable=True)
    schema.add_field("label", DataType.VARCHAR, max_length=200, nullable=True)
    schema.add_field("source", DataType.VARCHAR, max_length=4096, nullable=True)
    schema.add_field("image", DataType.VARCHAR, max_length=128)
    schema.add_field("sha256", DataType.VARCHAR, max_length=64)
    schema.add_field("fingerprint", DataType.VARCHAR, max_length=64)
    indexes = client.prepare_index_params()
    indexes.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
    for field in ("timestamp", "sha256", "image", "label"):
        indexes.add_index(field_name=field, index_type="INVERTED")  # scalar INVERTED: Milvus ≥ 2.4
    client.create_collection(name, schema=schema, index_params=indexes, consistency_level=CONSISTENCY)


def _check_collection(client: MilvusClient, record: dict[str, Any], meta: dict[str, Any], spec: StoreSpec) -> None:
    name = str(record.get("collection", ""))
    if not client.has_collection(name):
        raise SpanetError(f"Milvus at {spec.uri} has no collection {name!r} (named in {STORE_FILE}); it was dropped "
                          "or this is another server: restore it, or import an export into a new gallery")  # fmt: skip
    fields = {f["name"]: f for f in client.describe_collection(name)["fields"]}
    dim = int(fields.get("vector", {}).get("params", {}).get("dim", -1))
    if dim != int(meta["feature_dim"]):
        raise SpanetError(f"collection {name} holds {dim}-d vectors but the gallery's model makes {meta['feature_dim']}-d")
    client.load_collection(name)


def _write_record(directory: Path, record: dict[str, Any]) -> None:
    write_json(directory / STORE_FILE, record)  # atomic and durable (`spanet.outputs`)


def _epoch(text: str | None) -> int | None:
    if not text:
        return None
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SpanetError(f"timestamp {text!r} is not ISO 8601 (e.g. 2024-05-01T13:45:00)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return int(np.floor(stamp.timestamp()))


def _row(entry_id: int, entry: NewEntry, image: str, fingerprint: str, feature: np.ndarray) -> dict[str, Any]:
    return {
        "id": entry_id, "vector": feature.tolist(), "camera": _NO_CAMERA if entry.camera is None else int(entry.camera),
        "timestamp": _epoch(entry.timestamp), "time_text": entry.timestamp, "track": entry.track,
        "label": entry.label, "source": entry.source, "image": image, "sha256": Path(image).stem,
        "fingerprint": fingerprint,
    }  # fmt: skip


def _entry(row: dict[str, Any]) -> Entry:
    camera, track = row.get("camera"), row.get("track")
    return Entry(id=int(row["id"]), image=str(row["image"]), camera=None if camera in (None, _NO_CAMERA) else int(camera),
                 timestamp=row.get("time_text"), label=row.get("label"), source=row.get("source"),
                 fingerprint=str(row["fingerprint"]), track=None if track is None else int(track))  # fmt: skip


def _in_window(entry: Entry, where: Where) -> bool:
    """Whether the entry's exact time is inside `where`'s window (the Milvus field compares whole seconds)."""
    if where.after is None and where.before is None:
        return True
    seconds = to_seconds(entry.timestamp)
    return seconds is not None and (where.after is None or seconds >= where.after) and (
        where.before is None or seconds < where.before)
