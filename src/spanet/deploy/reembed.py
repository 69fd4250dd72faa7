"""A gallery that follows its model (`spanet gallery reembed DIR --checkpoint NEW`): every vector re-computed from the
stored image copies, then one atomic switch to the new model.

1. Staging. Each stored image is embedded with the new model, batch by batch, into `reembed.sqlite` in the gallery
   folder (one transaction per batch, keyed by entry id and tagged with the new model's fingerprints). The gallery
   itself is only read, so a running `spanet serve` keeps searching the old vectors; a run killed mid-way resumes
   where it stopped (a staging file made for another checkpoint is started over).
2. The switch (seconds; it needs the gallery's lock, so a running service has to be stopped first). Entries enrolled
   or removed meanwhile are brought up to date, then one SQLite transaction replaces every row's vector and
   fingerprint; `index.faiss` is dropped (the next open rebuilds it from the rows), `gallery.json` names the new
   model and the staging file goes.

Crash safety of the switch: `.reembed-switch` (the new model's description) is written durably before the
transaction and removed last. A gallery opened with it present finishes the switch when the transaction committed
(every row carries the new fingerprint) and otherwise only drops the marker: the staged vectors wait for the next
run. Only SQLite galleries: a Milvus one is refused with the way round.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spanet.deploy.folder import DB_FILE, IMAGES_DIR, INDEX_FILE, META_FILE, create_meta, lock_folder, read_meta
from spanet.deploy.sqlite_store import SQLiteStore, entry_images
from spanet.deploy.store_spec import recorded_store
from spanet.errors import SpanetError

if TYPE_CHECKING:
    from spanet.features import FeatureExtractor

__all__ = ["ReembedReport", "reembed_gallery", "finish_switch", "drop_staged", "model_mismatch", "STAGING_FILE",
           "SWITCH_FILE"]

STAGING_FILE = "reembed.sqlite"
SWITCH_FILE = ".reembed-switch"
_IDENTITY = ("weights_fingerprint", "args_fingerprint", "kind", "feature_dim")  # what makes vectors comparable


@dataclass(frozen=True)
class ReembedReport:
    """What a run did: entries now carrying the new model's vectors, how many were embedded by this run and how many
    an earlier, interrupted run had staged; `switched` is False when the gallery already had this model."""

    entries: int
    computed: int
    reused: int
    switched: bool
    old_fingerprint: str
    new_fingerprint: str
    seconds: float


def reembed_gallery(directory: str | os.PathLike[str], extractor: FeatureExtractor, *,
                    progress: bool = False) -> ReembedReport:  # fmt: skip
    """Stage the new vectors of every entry of the gallery `directory`, then switch it to `extractor`'s model."""
    directory, began = Path(directory), time.perf_counter()
    _check_sqlite_gallery(directory)
    finish_switch(directory)
    old, new = _read_meta(directory)["model"], extractor.info
    if str(old.get("kind")) != str(new.get("kind")):
        raise SpanetError(f"gallery {directory} holds {old.get('kind')!r} embeddings: re-embed it with that kind, "
                          f"not {new.get('kind')!r}")  # fmt: skip
    if _same_model(old, new) and not (directory / STAGING_FILE).exists():
        count = len(entry_images(directory / DB_FILE))
        return ReembedReport(count, 0, 0, False, _fp(old), _fp(new), time.perf_counter() - began)
    staging = _Staging(directory / STAGING_FILE, target=new)
    try:
        rows = entry_images(directory / DB_FILE)
        reused = len(staging.done() & {i for i, _ in rows})
        computed = _stage(directory, rows, staging, extractor, progress=progress)
        try:
            lock = lock_folder(directory)
        except SpanetError:
            raise SpanetError(
                f"the new vectors of all {len(rows)} entries are staged in {directory / STAGING_FILE}, but gallery "
                f"{directory} is open in another process (a running `spanet serve`?): stop it and run this command "
                "again to switch (seconds)"
            ) from None
        try:
            rows = entry_images(directory / DB_FILE)  # final: nothing can be enrolled or removed now
            computed += _stage(directory, rows, staging, extractor, progress=False)
            staging.keep_only({i for i, _ in rows})
            staging.close()
            _switch(directory, new)
        finally:
            if lock is not None:
                lock.close()
    finally:
        staging.close()
    return ReembedReport(len(rows), computed, reused, True, _fp(old), _fp(new), time.perf_counter() - began)


def finish_switch(directory: str | os.PathLike[str]) -> bool:
    """Complete a switch a killed run left half done (see the module docstring); True when one was completed."""
    directory = Path(directory)
    marker = directory / SWITCH_FILE
    if not marker.is_file():
        return False
    lock = lock_folder(directory)
    try:
        if not marker.is_file():  # another process finished it meanwhile
            return False
        new = json.loads(marker.read_text(encoding="utf-8"))
        store = SQLiteStore(directory / DB_FILE, feature_dim=int(new["feature_dim"]))
        try:
            committed = store.fingerprints() <= {_fp(new)}
        finally:
            store.close()
        if committed:
            _complete(directory, new)
        marker.unlink()
        return committed
    finally:
        if lock is not None:
            lock.close()


def drop_staged(directory: str | os.PathLike[str], entry_ids: list[int]) -> None:
    """Delete staged vectors of removed entries (`spanet gallery forget`), so that no file of the folder keeps them."""
    path = Path(directory) / STAGING_FILE
    if entry_ids and path.is_file():
        db = sqlite3.connect(path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA secure_delete=ON")
            db.executemany("DELETE FROM staged WHERE id = ?", [(int(i),) for i in entry_ids])
            db.execute("VACUUM")
        finally:
            db.close()


def model_mismatch(directory: str | os.PathLike[str], model_info: dict[str, Any], *, checkpoint: str) -> str | None:
    """None when the gallery `directory` (if it exists) holds vectors of `model_info`'s model; else one line that
    names the gallery's model and the way out (`spanet gallery reembed`)."""
    built = (read_meta(directory) or {}).get("model")
    if not isinstance(built, dict):
        return None  # a new gallery, or one `Gallery.open` will report on
    if _same_model(built, model_info, missing_ok=True):
        return None
    return (f"gallery {directory} holds features of another model (weights {_fp(built)}, from checkpoint "
            f"{built.get('checkpoint', 'unknown')}) than {checkpoint} (weights {_fp(model_info)}): re-compute them with "
            f"`spanet gallery reembed {directory} --checkpoint {checkpoint}` (keeps every entry), or use the gallery "
            "with its own checkpoint")  # fmt: skip


class _Staging:
    """The staged vectors (`reembed.sqlite`): table `staged` (id, feature) and the model they come from."""

    def __init__(self, path: Path, *, target: dict[str, Any]) -> None:
        self._db: sqlite3.Connection | None = sqlite3.connect(path, timeout=60, isolation_level=None)
        db = self._db
        db.execute("PRAGMA secure_delete=ON")
        db.execute("CREATE TABLE IF NOT EXISTS target (info TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS staged (id INTEGER PRIMARY KEY, feature BLOB NOT NULL)")
        row = db.execute("SELECT info FROM target").fetchone()
        if row is None or not _same_model(json.loads(row[0]), target):
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM staged")  # vectors of another checkpoint: start over
            db.execute("DELETE FROM target")
            db.execute("INSERT INTO target (info) VALUES (?)", (json.dumps(target),))
            db.execute("COMMIT")

    def done(self) -> set[int]:
        assert self._db is not None
        return {int(r[0]) for r in self._db.execute("SELECT id FROM staged")}

    def put(self, ids: list[int], features: np.ndarray) -> None:
        """One batch, one transaction: a kill loses at most the batch in flight."""
        assert self._db is not None
        rows = [(int(i), np.ascontiguousarray(f, dtype=np.float32).tobytes()) for i, f in zip(ids, features)]
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("INSERT OR REPLACE INTO staged (id, feature) VALUES (?, ?)", rows)
        self._db.execute("COMMIT")

    def keep_only(self, ids: set[int]) -> None:
        assert self._db is not None
        gone = [(i,) for i in self.done() - ids]
        if gone:
            self._db.executemany("DELETE FROM staged WHERE id = ?", gone)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _stage(directory: Path, rows: list[tuple[int, str]], staging: _Staging, extractor: FeatureExtractor, *,
           progress: bool) -> int:  # fmt: skip
    """Embed the entries of `rows` not staged yet, batch by batch (an image shared by entries once); how many."""
    from tqdm.auto import tqdm

    done = staging.done()
    by_image: dict[str, list[int]] = {}
    for entry_id, image in rows:
        if entry_id not in done:
            by_image.setdefault(image, []).append(entry_id)
    images = list(by_image)
    todo = sum(len(ids) for ids in by_image.values())
    bar = tqdm(total=todo, desc="reembed", unit="entry", disable=not progress or not todo)
    for start in range(0, len(images), extractor.batch_size):
        chunk = images[start : start + extractor.batch_size]
        result = extractor.extract_files([directory / IMAGES_DIR / name for name in chunk], progress=False)
        if result.failures:
            path, reason = result.failures[0]
            ids = by_image[Path(path).name]
            raise SpanetError(f"the stored image of gallery entr{'ies' if len(ids) > 1 else 'y'} "
                              f"{', '.join(map(str, ids))} cannot be read ({reason}); remove {'them' if len(ids) > 1 else 'it'} "
                              f"with `spanet gallery forget {directory} --id ...` and run this command again")  # fmt: skip
        ids = [entry_id for i in result.indices for entry_id in by_image[chunk[i]]]
        features = np.concatenate([np.repeat(result.features[k : k + 1], len(by_image[chunk[i]]), axis=0)
                                   for k, i in enumerate(result.indices)])  # fmt: skip
        staging.put(ids, features)
        bar.update(len(ids))
    bar.close()
    return todo


def _switch(directory: Path, new: dict[str, Any]) -> None:
    """Write the marker, swap every row's vector in one transaction, then finish (index, gallery.json, files)."""
    marker = directory / SWITCH_FILE
    tmp = marker.with_name(marker.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(new))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, marker)
    store = SQLiteStore(directory / DB_FILE, feature_dim=int(new["feature_dim"]))
    try:
        store.adopt_features(directory / STAGING_FILE, table="staged", fingerprint=_fp(new))
    finally:
        store.close()
    _complete(directory, new)
    marker.unlink()


def _complete(directory: Path, new: dict[str, Any]) -> None:
    """After the rows switched (idempotent): drop the stale index first, then name the new model, then clean up."""
    (directory / INDEX_FILE).unlink(missing_ok=True)
    create_meta(directory, new)
    for suffix in ("", "-wal", "-shm", "-journal"):
        (directory / f"{STAGING_FILE}{suffix}").unlink(missing_ok=True)


def _check_sqlite_gallery(directory: Path) -> None:
    if not (directory / META_FILE).is_file():
        raise SpanetError(f"{directory} is not a spanet gallery (no {META_FILE}); make one with `spanet gallery build`")
    store = recorded_store(directory)
    if store is not None and store.kind != "sqlite":
        raise SpanetError(
            f"gallery {directory} lives in {store.kind} {store.uri}: `spanet gallery reembed` re-computes SQLite "
            "galleries only; rebuild it with `spanet gallery build DIR --checkpoint NEW IMAGES`, or move it to a "
            "SQLite folder with `spanet gallery export` / `spanet gallery import`, re-embed that, and move it back"
        )


def _read_meta(directory: Path) -> dict[str, Any]:
    meta = read_meta(directory)
    if meta is None:
        raise SpanetError(f"cannot read {directory / META_FILE} (missing, unreadable or not a JSON object)")
    return meta


def _same_model(a: dict[str, Any], b: dict[str, Any], *, missing_ok: bool = False) -> bool:
    """Do vectors of these two model descriptions compare? (with `missing_ok`, a key one side lacks is not checked)"""
    return all(str(a.get(k)) == str(b.get(k)) or (missing_ok and (k not in a or k not in b)) for k in _IDENTITY)


def _fp(info: dict[str, Any]) -> str:
    return str(info.get("weights_fingerprint", ""))
