"""Which evaluation protocol a dataset gets, how a test split becomes query + gallery, and what makes data unusable.

Two protocols: `cross-camera` (Market-1501: a gallery image of the query's identity from the query's own camera is
ignored, so a query needs a true match from another camera) and `no-camera` (data without camera ids: every other
image of the identity counts as a true match). The second is the answer to "all query identities do not appear in
gallery" on own data, and every table says which one ran.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from spanet.errors import SpanetError

__all__ = [
    "CROSS_CAMERA",
    "NO_CAMERA",
    "PROTOCOLS",
    "describe_protocol",
    "split_identities",
    "split_query_gallery",
    "check_splits",
    "sample_ids",
]

CROSS_CAMERA = "cross-camera"
NO_CAMERA = "no-camera"
PROTOCOLS = (CROSS_CAMERA, NO_CAMERA)
_DESCRIPTIONS = {
    CROSS_CAMERA: "cross-camera (Market-1501 rule: one query per identity and camera; gallery images of the query's "
    "identity from its own camera ignored)",
    NO_CAMERA: "no camera ids (one query per identity, the rest gallery; same-camera filter off)",
}


def sample_ids(samples: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The person ids and camera ids of `samples` as int64 arrays (what the ranking protocol compares)."""
    return np.array([s.pid for s in samples], dtype=np.int64), np.array([s.camid for s in samples], dtype=np.int64)


def describe_protocol(protocol: str) -> str:
    """One line for tables and `check-data`."""
    return f"protocol: {_DESCRIPTIONS[protocol]}"


def split_identities(pids: Iterable[int], *, test_fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """(train ids, test ids): a seeded permutation of the sorted ids, `test_fraction` of them (≥ 1 each) to test."""
    ids = sorted(set(pids))
    if len(ids) < 4:
        raise SpanetError(
            f"only {len(ids)} identities; a train/test split needs at least 4 (2 per side): add identities"
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    num_test = min(max(2, round(test_fraction * len(ids))), len(ids) - 2)
    test = {ids[i] for i in order[:num_test]}
    return set(ids) - test, test


def split_query_gallery(samples: Sequence[Any], *, cameras: bool) -> tuple[list[Any], list[Any]]:
    """Query and gallery from test samples (in the given order; the first image of a group is its query).

    With `cameras`: per identity, the first image of each camera becomes a query as long as the identity keeps a
    gallery image from another camera (Market rule). Without: the first image of each identity with ≥ 2 images.
    """
    by_id: dict[int, list[Any]] = defaultdict(list)
    for sample in samples:
        by_id[sample.pid].append(sample)
    query: list[Any] = []
    chosen: set[int] = set()
    for pid, group in by_id.items():
        if not cameras:
            if len(group) >= 2:
                query.append(group[0])
                chosen.add(id(group[0]))
            continue
        picked: list[Any] = []
        for camid in sorted({s.camid for s in group}):
            first = next(s for s in group if s.camid == camid)
            if _all_matched([*picked, first], group):
                picked.append(first)
        query += picked
        chosen.update(id(s) for s in picked)
    gallery = [s for s in samples if id(s) not in chosen]
    return query, gallery


def _all_matched(queries: list[Any], group: list[Any]) -> bool:
    """Whether every query keeps a gallery image of its identity from another camera."""
    taken = {id(q) for q in queries}
    cameras_left = {s.camid for s in group if id(s) not in taken}
    return all(cameras_left - {q.camid} for q in queries)


def check_splits(
    train: Sequence[Any], query: Sequence[Any], gallery: Sequence[Any], *, pool: Sequence[Any], protocol: str,
    where: str,
) -> None:
    """Fail early, in one line saying what to do, on data that cannot be trained or evaluated.

    `pool` is the test split that `split_query_gallery` divided (empty when the data named query and gallery
    itself, where a single-image gallery identity is a legitimate distractor).
    """
    train_ids = {s.pid for s in train}
    if train and len(train_ids) < 2:
        raise SpanetError(f"{where}: the train split has {len(train_ids)} identity; training needs at least 2")
    test = list(query) + list(gallery)
    if len({s.pid for s in test}) < 2:
        raise SpanetError(f"{where}: the test split has {len({s.pid for s in test})} identity; evaluation needs at least 2")
    counts: dict[int, int] = defaultdict(int)
    for sample in pool:
        counts[sample.pid] += 1
    single = sorted(pid for pid, n in counts.items() if n == 1)
    if single:
        shown = ", ".join(str(pid) for pid in single[:5]) + (f" (and {len(single) - 5} more)" if len(single) > 5 else "")
        raise SpanetError(
            f"{where}: {len(single)} test identities have a single image ({shown}); such an image can be neither a "
            "query with a match nor a match: add a second image or move the identity to train"
        )
    if protocol == CROSS_CAMERA and len({s.camid for s in test}) < 2:
        raise SpanetError(
            f"{where}: every test image comes from one camera, so cross-camera evaluation has no valid query; "
            "drop the camera ids (remove cameras.csv / the camid column) to evaluate without the same-camera filter"
        )
    if not query:
        raise SpanetError(
            f"{where}: no valid query (no test identity has images from two cameras); "
            "add images from another camera, or drop the camera ids"
        )
