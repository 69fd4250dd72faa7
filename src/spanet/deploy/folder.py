"""The files of a gallery folder that every backend shares (`spanet.deploy.backend`): their names, `gallery.json`
(format, feature dimension, the model that made the vectors) and `.lock` (one process per folder). The SQLite
backend (`spanet.deploy.gallery`) adds `entries.sqlite` and `index.faiss`; `images/` holds the enrolled images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spanet.errors import SpanetError
from spanet.outputs import write_text

__all__ = ["GALLERY_FORMAT", "GALLERY_VERSION", "META_FILE", "DB_FILE", "INDEX_FILE", "IMAGES_DIR", "open_folder",
           "create_meta", "read_meta", "write_meta", "lock_folder"]

GALLERY_FORMAT = "spanet-gallery"
GALLERY_VERSION = 1
META_FILE = "gallery.json"
DB_FILE = "entries.sqlite"
INDEX_FILE = "index.faiss"
IMAGES_DIR = "images"
_LOCK_FILE = ".lock"


def open_folder(directory: Path, *, model_info: dict[str, Any], create: bool) -> tuple[dict[str, Any], Any]:
    """The checked `gallery.json` of a gallery folder (written first for a new one) and the folder's lock, with
    `images/` made: what every backend (`spanet.deploy.backend`) shares."""
    from spanet.deploy.index import check_compatible

    meta_path = directory / META_FILE
    if not meta_path.is_file():
        if not create:
            raise SpanetError(f"{directory} is not a spanet gallery (no {META_FILE}); make one with `spanet gallery build`")
        if directory.exists() and any(directory.iterdir()):
            raise SpanetError(f"{directory} exists and is not empty; give a new or empty folder for a new gallery")
        create_meta(directory, model_info)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != GALLERY_FORMAT:
        raise SpanetError(f"{meta_path} is not a spanet gallery description (format {meta.get('format')!r})")
    check_compatible(meta, model_info, index_path=directory)
    lock = lock_folder(directory)
    try:
        (directory / IMAGES_DIR).mkdir(exist_ok=True)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    return meta, lock


def create_meta(directory: Path, model_info: dict[str, Any]) -> None:
    """A new `gallery.json` for vectors of the model `model_info` (anything stored before, e.g. a threshold, goes)."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": GALLERY_FORMAT,
        "version": GALLERY_VERSION,
        "feature_dim": int(model_info["feature_dim"]),
        "index": "flat",
        "model": model_info,
    }
    write_meta(directory, meta)


def read_meta(directory: str | Path) -> dict[str, Any] | None:
    """A gallery folder's `gallery.json` as written, or None when there is none or it cannot be read (without
    opening the gallery; `Gallery.open` says what is wrong with a bad one)."""
    try:
        meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def write_meta(directory: str | Path, meta: dict[str, Any]) -> None:
    """Replace `gallery.json` atomically (e.g. with the threshold `spanet ingest` stores beside the model)."""
    write_text(Path(directory) / META_FILE, json.dumps(meta, indent=2) + "\n")


def lock_folder(directory: Path) -> Any:
    """An exclusive lock on DIR/.lock, held while the gallery is open (the OS releases it if the process dies), or
    None where there is no `fcntl` (not POSIX)."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(directory / _LOCK_FILE, "a+b")  # noqa: SIM115 - kept open while the gallery is
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SpanetError(
            f"gallery {directory} is open in another process (a running `spanet serve` or `spanet gallery build`); "
            "stop it first, or enrol through the running service (POST /gallery)"
        ) from None
    return handle
