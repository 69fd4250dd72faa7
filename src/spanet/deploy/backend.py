"""The gallery contract that `spanet serve`, `spanet gallery build` and `spanet gallery export/import` use, and the
choice of its backend (`--store`).

Two implementations, one module each:
- `spanet.deploy.gallery.Gallery`: SQLite rows + an in-memory exact faiss index (the default; one host).
- `spanet.deploy.milvus_gallery.MilvusGallery`: rows and vectors in a Milvus collection through
  `pymilvus.MilvusClient` (`--store milvus:./g.db` for a Milvus Lite file, `--store milvus://host:19530` for a
  Milvus server or cluster). Needs the `spanet[milvus]` extra.

Both keep the gallery *folder* (`gallery.json`: the model; `images/`: the image bytes named by their SHA-256;
`.lock`: one process per folder); only where rows and vectors live differs. A Milvus folder records its collection
in `store.json`, so later commands find the store without `--store`. tests/deploy/test_gallery_contract.py runs
the same tests against every backend.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from spanet.deploy.entry import Entry, Hit, NewEntry, Want
from spanet.deploy.filters import Where
from spanet.deploy.store_spec import STORE_FILE, StoreSpec, parse_store, recorded_store
from spanet.errors import SpanetError

__all__ = ["Entry", "NewEntry", "Hit", "Want", "GalleryBackend", "StoreSpec", "parse_store", "recorded_store", "open_gallery",
           "STORE_FILE"]
_MILVUS_HINT = "pip install 'spanet[milvus]' (pymilvus and milvus-lite)"


class GalleryBackend(Protocol):
    """What the commands need from a gallery. Ids are positive integers assigned by the backend (below 2**53, so
    they survive JSON and JavaScript); distances are squared Euclidean; a search or listing right after `add`
    returns what was added (read-your-writes).

    Filters are `spanet.deploy.filters.Where` values (ids, camera set, label, track, after <= time < before in UTC
    seconds; rows without a time never match a time filter); None restricts nothing."""

    directory: Path
    meta: dict[str, Any]

    @property
    def fingerprint(self) -> str: ...  # weights fingerprint of the model that made every vector
    def __len__(self) -> int: ...
    def add(self, entries: Sequence[NewEntry], features: np.ndarray, *, segment: str | None = None) -> list[int]: ...
    # ^ (N, D) features, all or none; `segment` (a key of ingested footage) is recorded with the rows
    def remove(self, entry_id: int) -> Entry | None: ...
    def remove_where(self, where: Where) -> list[Entry]: ...  # `where` must restrict something; the removed entries
    def purge(self) -> None: ...  # after removals: make deleted rows and vectors unrecoverable where the store can
    def get(self, entry_ids: Sequence[int]) -> dict[int, Entry]: ...  # {id: Entry} of those that exist
    def query(self, *, camera: int | None, label: str | None, limit: int, offset: int,
              where: Where | None = None) -> tuple[list[Entry], int]: ...  # fmt: skip
    def search(self, query: np.ndarray, *, top_k: int, camera: int | None = None, exclude_camera: int | None = None,
               where: Where | None = None) -> list[Hit]: ...  # fmt: skip
    def search_many(self, queries: np.ndarray, wants: Sequence[Want], *,
                    where: Sequence[Where | None] | None = None) -> list[list[Hit]]: ...  # fmt: skip
    def features(self, entry_ids: Sequence[int]) -> np.ndarray: ...  # stored vectors (N, D), for export
    def ids(self, where: Where | None = None) -> np.ndarray: ...  # matching ids, ascending
    def cameras(self) -> list[int]: ...
    def segments(self) -> set[str]: ...  # keys of the footage segments enrolled (`spanet ingest`)
    def max_track(self) -> int: ...  # the largest track id in use, 0 when none
    def image_path(self, entry: Entry) -> Path: ...
    def known_hashes(self, among: Sequence[str] | None = None) -> set[str]: ...  # SHA-256 stored (of `among` only)
    def save_index(self) -> None: ...
    def close(self) -> None: ...


def open_gallery(directory: str | os.PathLike[str], *, model_info: dict[str, Any], create: bool = False,
                 store: str | StoreSpec | None = None) -> GalleryBackend:  # fmt: skip
    """Open (or with `create`, make) the gallery in `directory` on the store `store` names (see `parse_store`);
    None means the store the folder was made with, SQLite for a new folder."""
    directory = Path(directory)
    wanted = parse_store(store) if isinstance(store, str) or store is None else store
    recorded = recorded_store(directory)
    if recorded is not None and wanted is not None and wanted != recorded:
        raise SpanetError(f"gallery {directory} lives in {recorded.kind} {recorded.uri}, not {wanted.kind} {wanted.uri}; "
                          "leave out --store, or move it with `spanet gallery export` and `spanet gallery import`")  # fmt: skip
    spec = recorded or wanted or StoreSpec(kind="sqlite")
    if spec.kind == "sqlite":
        from spanet.deploy.gallery import Gallery

        return Gallery.open(directory, model_info=model_info, create=create)
    if (directory / "entries.sqlite").exists():
        raise SpanetError(f"gallery {directory} is a SQLite gallery; leave out --store, or move it to Milvus with "
                          "`spanet gallery export` and `spanet gallery import --store ...` into a new folder")  # fmt: skip
    try:
        from spanet.deploy.milvus_gallery import MilvusGallery
    except ImportError as exc:
        raise SpanetError(f"--store {spec.kind} needs pymilvus ({exc}): {_MILVUS_HINT}") from None
    return MilvusGallery.open(directory, model_info=model_info, create=create, spec=spec)
