"""One search path over a gallery, shared by the service's `POST /search` and `spanet search --gallery`: the filters
(`Where`: cameras, time window), the camera options, and grouping by track (one row per track, its nearest crop).

Grouping asks the gallery for more hits than shown (8 × top-K, at most 1,000) and keeps the nearest of each track,
so a track with many crops near the query cannot crowd out the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spanet.deploy.backend import GalleryBackend
from spanet.deploy.entry import Hit, Want
from spanet.deploy.filters import Where

__all__ = ["SearchRequest", "search_gallery", "best_per_track"]

_GROUP_LOOKAHEAD = 8
_GROUP_MAX = 1000


@dataclass(frozen=True)
class SearchRequest:
    """What one query asks for besides its image."""

    top_k: int = 10
    where: Where | None = None  # time window, camera set
    group: bool = False  # one hit per track
    camera: int | None = None  # only this camera (the service's older option)
    exclude_camera: int | None = None

    def want(self) -> Want:
        """(top_k, camera, exclude_camera) asked of the gallery: more than `top_k` when grouping."""
        wanted = min(self.top_k * _GROUP_LOOKAHEAD, _GROUP_MAX) if self.group else self.top_k
        return (max(wanted, self.top_k), self.camera, self.exclude_camera)

    def finish(self, hits: list[Hit]) -> list[Hit]:
        return best_per_track(hits)[: self.top_k] if self.group else hits[: self.top_k]


def search_gallery(gallery: GalleryBackend, features: np.ndarray, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
    """The hits of each query row of `features` (Q, D) for its request: one `search_many` call for all."""
    hits = gallery.search_many(features, [r.want() for r in requests], where=[r.where for r in requests])
    return [request.finish(found) for request, found in zip(requests, hits)]


def best_per_track(hits: list[Hit]) -> list[Hit]:
    """The nearest hit of each track, in distance order; entries without a track are each their own group."""
    seen: set[int] = set()
    kept = []
    for hit in hits:
        if hit.entry.track is None or hit.entry.track not in seen:
            kept.append(hit)
            if hit.entry.track is not None:
                seen.add(hit.entry.track)
    return kept
