"""The values a gallery stores and returns, whatever the backend: `NewEntry` (what enrolment gets), `Entry` (a
stored row), `Hit` (a search result). Kept apart from `backend.py` and the backends so that every one of them can
import these without an import cycle."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["Entry", "NewEntry", "Hit", "Want"]


@dataclass(frozen=True)
class Entry:
    """One gallery row as the API shows it; `image` is a file name inside the gallery's `images/` folder."""

    id: int
    image: str
    camera: int | None
    timestamp: str | None
    label: str | None
    source: str | None
    fingerprint: str
    track: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("image", "fingerprint")}


@dataclass(frozen=True)
class NewEntry:
    """What enrolment needs for one image: its encoded bytes, its file suffix and what is known about it."""

    data: bytes
    suffix: str
    camera: int | None = None
    timestamp: str | None = None
    label: str | None = None
    source: str | None = None
    track: int | None = None


@dataclass(frozen=True)
class Hit:
    """A search result: the entry and its squared Euclidean distance to the query."""

    entry: Entry
    distance: float


Want = tuple[int, int | None, int | None]  # (top_k, camera, exclude_camera) of one query
