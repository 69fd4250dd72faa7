"""Splits made from a dataset's own training identities: a validation set that model selection may look at.

Choosing `best.pt` by test mAP turns the test split into a validation split, so its numbers are no longer test
results. `hold_out_identities` moves N training identities (seeded) out of training and splits their images into a
query and a gallery the way the benchmarks' test splits are made: one query per identity and camera, the other
images of that identity in the gallery. The periodic evaluation then runs on this split only.
"""

from __future__ import annotations

import random
from dataclasses import replace

from spanet.data.samples import ReidDataset, Sample
from spanet.data.protocol import NO_CAMERA, split_query_gallery
from spanet.errors import SpanetError

__all__ = ["hold_out_identities", "draw_query_gallery"]


def hold_out_identities(dataset: ReidDataset, *, num_ids: int, seed: int) -> tuple[ReidDataset, ReidDataset]:
    """(training set without `num_ids` identities, relabelled 0..K−1; validation set of those identities)."""
    identities = sorted({s.pid for s in dataset.train})
    if not 0 < num_ids < len(identities):
        raise SpanetError(
            f"data.val_ids={num_ids}: {dataset.name} has {len(identities)} training identities; hold out between 1 "
            f"and {len(identities) - 1}"
        )
    held = set(random.Random(seed).sample(identities, num_ids))  # a local generator: no global random state
    kept = [s for s in dataset.train if s.pid not in held]
    labels = {pid: label for label, pid in enumerate(sorted({s.pid for s in kept}))}
    train = replace(dataset, train=tuple(Sample(s.path, labels[s.pid], s.camid) for s in kept))
    held_samples = [s for s in dataset.train if s.pid in held]
    if dataset.protocol == NO_CAMERA:  # own data without camera ids: one query per identity, no camera filter
        query, gallery = (tuple(part) for part in split_query_gallery(held_samples, cameras=False))
    else:
        query, gallery = draw_query_gallery(held_samples, seed=seed)
    if not query:
        raise SpanetError(
            f"data.val_ids={num_ids}: none of the held-out identities has images from two cameras, so no validation "
            "query has a true match; hold out more identities or set data.val_ids=0"
        )
    val = ReidDataset(name=f"{dataset.name} (validation)", root=dataset.root, train=(), query=query, gallery=gallery,
                      protocol=dataset.protocol)
    return train, val


def draw_query_gallery(samples: list[Sample], *, seed: int) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """One query per (identity, camera), DRAWN at random with `seed` (validation splits); every other image in the
    gallery. Queries of an identity seen by one camera only would have no true match, so such identities go to the
    gallery entirely. (`protocol.split_query_gallery` is the deterministic rule for test splits: first image first.)"""
    rng = random.Random(seed)
    by_id_camera: dict[tuple[int, int], list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: s.path):
        by_id_camera.setdefault((sample.pid, sample.camid), []).append(sample)
    cameras_per_id: dict[int, int] = {}
    for pid, _ in by_id_camera:
        cameras_per_id[pid] = cameras_per_id.get(pid, 0) + 1
    query: list[Sample] = []
    gallery: list[Sample] = []
    for (pid, _), group in sorted(by_id_camera.items()):
        if cameras_per_id[pid] > 1:
            chosen = rng.randrange(len(group))
            query.append(group[chosen])
            gallery.extend(s for i, s in enumerate(group) if i != chosen)
        else:
            gallery.extend(group)
    return tuple(query), tuple(gallery)
