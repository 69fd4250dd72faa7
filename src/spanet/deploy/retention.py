"""Forgetting people and old footage: deletions that leave no trace in the gallery folder, with an audit log.

`forget(gallery, where)` removes every entry `where` matches — rows, vectors, image files no other entry shares —
through the `GalleryBackend` contract (`remove_where`), then asks the backend to `purge` what it deleted. On a
SQLite gallery that vacuums the database (free pages and the write-ahead log emptied; `secure_delete` zeroes
deleted rows even before that) and rewrites `index.faiss`, so that the deleted image bytes and vectors are in no
file of the folder. On a Milvus gallery the image files go the same way and the collection is flushed and
compacted; what that removes physically depends on the Milvus deployment (docs/scale.md). Each deletion appends one JSON line to `audit.jsonl`: when, what was asked (the condition), how
many entries and image files went — never the images or vectors.

Crash safety: the condition is written to `.forget-pending` (durably) before anything is deleted and removed after
the vacuum. A gallery opened with that file present (the process was killed mid-way) finishes the deletion first.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanet.deploy.filters import Where, iso_utc
from spanet.errors import SpanetError

if TYPE_CHECKING:
    from spanet.deploy.backend import GalleryBackend

__all__ = ["ForgetReport", "forget", "prune_before", "finish_pending", "describe", "AUDIT_FILE", "PENDING_FILE"]

AUDIT_FILE = "audit.jsonl"
PENDING_FILE = ".forget-pending"


@dataclass(frozen=True)
class ForgetReport:
    entries: int
    images: int
    where: Where


def forget(gallery: GalleryBackend, where: Where, *, action: str = "forget", origin: str = "cli") -> ForgetReport:
    """Delete what `where` matches from `gallery` leaving no trace (module docstring); `origin` is logged."""
    if where.empty:
        raise SpanetError("refusing to forget every gallery entry: give a condition (id, label, track, camera, time)")
    pending = gallery.directory / PENDING_FILE
    _write_durably(pending, json.dumps({"action": action, "origin": origin, "where": _where_record(where)}))
    report = _delete(gallery, where)
    _audit(gallery.directory, {"action": action, "origin": origin, **_counts(report)})
    pending.unlink(missing_ok=True)
    return report


def prune_before(gallery: GalleryBackend, *, older_than: float, now: float | None = None, origin: str = "cli") -> ForgetReport:
    """Forget every entry whose time is more than `older_than` seconds before `now` (entries without a time stay)."""
    cutoff = (time.time() if now is None else now) - older_than
    return forget(gallery, Where(before=cutoff), action="prune", origin=origin)


def finish_pending(gallery: GalleryBackend) -> ForgetReport | None:
    """Complete a deletion that a killed process left half done (called when a gallery is opened)."""
    pending = gallery.directory / PENDING_FILE
    if not pending.is_file():
        return None
    action, where = "vacuum", None
    try:
        record = json.loads(pending.read_text(encoding="utf-8"))
        where = Where(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["where"].items()})
        action = str(record.get("action", "forget"))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # the marker itself was cut short: nothing was deleted yet, but vacuum to be sure
    report = _delete(gallery, where) if where is not None else _vacuum_only(gallery)
    _audit(gallery.directory, {"action": action, "origin": "resumed after an interruption", **_counts(report)})
    pending.unlink(missing_ok=True)
    return report


def _delete(gallery: GalleryBackend, where: Where) -> ForgetReport:
    images_before = _image_files(gallery)
    removed = gallery.remove_where(where)
    gallery.purge()
    from spanet.deploy.reembed import drop_staged

    drop_staged(gallery.directory, [entry.id for entry in removed])  # vectors staged by `spanet gallery reembed`
    gone = len(images_before - _image_files(gallery))
    return ForgetReport(entries=len(removed), images=gone, where=where)


def _vacuum_only(gallery: GalleryBackend) -> ForgetReport:
    gallery.purge()
    return ForgetReport(entries=0, images=0, where=Where())


def _image_files(gallery: GalleryBackend) -> set[str]:
    return {path.name for path in (gallery.directory / "images").iterdir()}


def _where_record(where: Where) -> dict[str, Any]:
    """The condition as stored in the pending marker: raw values (seconds), so it is re-read exactly."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(where).items() if v is not None}


def _counts(report: ForgetReport) -> dict[str, Any]:
    return {"where": report.where.to_json(), "entries": report.entries, "image_files": report.images}


def _audit(directory: Path, record: dict[str, Any]) -> None:
    line = json.dumps({"time": iso_utc(time.time()), **record}, sort_keys=True)
    with open(directory / AUDIT_FILE, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def describe(report: ForgetReport) -> str:
    """One line for the command line and the API."""
    what = ", ".join(f"{k}={v}" for k, v in report.where.to_json().items()) or "nothing"
    return f"removed {report.entries} entries and {report.images} image files ({what})"

