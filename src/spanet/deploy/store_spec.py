"""The `--store` choice of a gallery (kept apart from `backend.py` so the Milvus module can use it without an
import cycle): which store, and the one a gallery folder recorded in `store.json`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from spanet.errors import SpanetError

__all__ = ["StoreSpec", "parse_store", "recorded_store", "STORE_FILE"]

STORE_FILE = "store.json"


@dataclass(frozen=True)
class StoreSpec:
    """A parsed `--store`: kind "sqlite" or "milvus"; for Milvus the URI `MilvusClient` gets (a `.db` path for
    Milvus Lite, http://host:port for a server)."""

    kind: str
    uri: str = ""

    @property
    def is_file(self) -> bool:
        return self.kind == "milvus" and not self.uri.startswith(("http://", "https://"))


def parse_store(text: str | None) -> StoreSpec | None:
    """`sqlite`, `milvus:PATH.db`, `milvus://HOST:PORT` or `milvus+https://HOST:PORT`; None for None."""
    if text is None:
        return None
    if text == "sqlite":
        return StoreSpec(kind="sqlite")
    for prefix, scheme in (("milvus://", "http://"), ("milvus+http://", "http://"), ("milvus+https://", "https://")):
        if text.startswith(prefix):
            address = text[len(prefix) :].rstrip("/")
            if not address or "/" in address:
                raise SpanetError(f"--store {text}: expected {prefix}HOST:PORT (e.g. {prefix}127.0.0.1:19530)")
            return StoreSpec(kind="milvus", uri=scheme + address)
    if text.startswith("milvus:"):
        path = text[len("milvus:") :]
        if not path.endswith(".db"):
            raise SpanetError(f"--store {text}: a Milvus Lite file must end in .db (e.g. milvus:./gallery.db)")
        return StoreSpec(kind="milvus", uri=str(Path(path).expanduser().resolve()))
    raise SpanetError(f"--store {text!r} is not a store: give sqlite, milvus:FILE.db or milvus://HOST:PORT")


def recorded_store(directory: str | os.PathLike[str]) -> StoreSpec | None:
    """The store a gallery folder was made with (its `store.json`), or None for a SQLite or new folder."""
    path = Path(directory) / STORE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return StoreSpec(kind=str(record["store"]), uri=str(record["uri"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpanetError(f"{path} cannot be read ({exc}); it names the gallery's Milvus collection: restore it") from None
