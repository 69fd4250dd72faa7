"""Pseudo-identities for unlabelled crops: tracklets pooled, k-reciprocal Jaccard distances, DBSCAN, tracklet rules.

The recipe of the clustering-based domain adaptation papers (SSG, UDAP, SpCL, Cluster Contrast): one feature per
item (a crop, or a tracklet: the mean of its crops' L2-normalised features), the Jaccard distance between the items'
k-reciprocal sets (`spanet.evaluation.rerank.k_reciprocal_jaccard`, k1=30, k2=6 as in Cluster Contrast), DBSCAN on it
with a precomputed metric. Items DBSCAN calls noise are left out of the round's training. Two tracklets of one
camera that overlap in time are two people, so a cluster holding both is split afterwards (`split_conflicts`).

`eps`, the DBSCAN radius, is either fixed (Cluster Contrast uses 0.6 on Market-1501) or chosen from the data
(`eps=None`) by the UDAP rule (Song et al., 2020): the mean of the smallest `eps_share` of all pairwise distances,
so it follows how tight this model's neighbourhoods are on these cameras. UDAP's share, 0.16 %, clustered only ~12 %
of the crops here; 0.5 % is the default (measurements in docs/adapt.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spanet.data.unlabelled import UnlabelledCrop
from spanet.errors import SpanetError
from spanet.evaluation.distance import centre_per_camera
from spanet.evaluation.metrics import pair_counts

__all__ = ["ClusterSettings", "PseudoLabels", "group_tracklets", "pseudo_labels", "udap_eps",
           "item_tracklets", "split_conflicts", "cluster_statistics"]  # fmt: skip


@dataclass(frozen=True)
class ClusterSettings:
    """How items become pseudo-identities: k-reciprocal sets (k1, k2), DBSCAN's radius and minimum cluster size."""

    k1: int = 30
    k2: int = 6
    eps: float | None = None  # None: the UDAP rule below
    eps_share: float = 0.005  # the share of smallest pairwise distances whose mean is eps (UDAP: 0.0016; docs/adapt.md)
    min_samples: int = 4  # DBSCAN: an item with this many neighbours within eps (itself included) is a core
    camera_centre: bool = False  # subtract each camera's mean feature first (its colour cast, its background)

    def to_json(self) -> dict[str, Any]:
        return {"k1": self.k1, "k2": self.k2, "eps": self.eps, "eps_share": self.eps_share,
                "min_samples": self.min_samples, "camera_centre": self.camera_centre}  # fmt: skip


@dataclass(frozen=True)
class PseudoLabels:
    """One clustering round's result: a label per crop (-1: left out), the eps used and the statistics."""

    labels: np.ndarray  # (N crops,) int64, 0..clusters-1 or -1
    eps: float
    statistics: dict[str, Any]


def group_tracklets(crops: Sequence[UnlabelledCrop]) -> np.ndarray:
    """(N,) item index of every crop: crops sharing a tracklet key are one item, every other crop its own."""
    items: dict[str, int] = {}
    index = np.empty(len(crops), dtype=np.int64)
    for i, crop in enumerate(crops):
        key = crop.tracklet if crop.tracklet is not None else f"crop:{i}"
        index[i] = items.setdefault(key, len(items))
    return index


def pseudo_labels(features: np.ndarray, crops: Sequence[UnlabelledCrop], *, settings: ClusterSettings) -> PseudoLabels:
    """Cluster `features` (N, D) of `crops` into pseudo-identities; refuses a clustering that collapsed."""
    from sklearn.cluster import DBSCAN

    from spanet.evaluation.rerank import k_reciprocal_jaccard

    item_of = group_tracklets(crops)
    num_items = int(item_of.max()) + 1 if len(item_of) else 0
    if num_items <= settings.k1:
        raise SpanetError(
            f"adaptation needs more than k1={settings.k1} crops or tracklets to find neighbours among, got "
            f"{num_items}; add crops (more footage or cameras) or lower --k1"
        )
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if settings.camera_centre:
        unit = centre_per_camera(unit, np.array([crop.camera for crop in crops]))
    pooled = np.zeros((num_items, features.shape[1]), dtype=np.float64)
    np.add.at(pooled, item_of, unit)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    distances = k_reciprocal_jaccard(pooled.astype(np.float32), k1=settings.k1, k2=settings.k2)
    eps = settings.eps if settings.eps is not None else udap_eps(distances, share=settings.eps_share)
    if not eps > 0:  # close items share one expanded neighbour set: k1 / k2 reach across several people
        raise SpanetError(
            f"the closest {settings.eps_share:.1%} of pairs among {num_items} crops or tracklets are at Jaccard "
            f"distance 0, so no DBSCAN radius can be derived from them: k1={settings.k1} / k2={settings.k2} "
            "neighbours are too many for so few items; lower --k2 and --k1 (to about the crops or tracklets one "
            "person has, and a few times that) or give --eps"
        )  # fmt: skip
    items = DBSCAN(eps=eps, min_samples=settings.min_samples, metric="precomputed").fit_predict(distances)
    items = split_conflicts(items, item_tracklets(crops, item_of, num_items))
    labels = np.where(items[item_of] >= 0, items[item_of], -1).astype(np.int64)
    _refuse_collapse(labels, eps=eps, settings=settings)
    truth = np.array([-1 if c.truth is None else c.truth for c in crops], dtype=np.int64)
    return PseudoLabels(labels=labels, eps=float(eps), statistics=cluster_statistics(labels, truth, eps=eps))


def udap_eps(distances: np.ndarray, *, share: float) -> float:
    """The mean of the smallest `share` of the pairwise distances (upper triangle, at least one pair)."""
    upper = distances[np.triu_indices(len(distances), k=1)]
    count = max(1, int(round(share * upper.size)))
    return float(np.partition(upper, count - 1)[:count].mean())


def item_tracklets(
    crops: Sequence[UnlabelledCrop], item_of: np.ndarray, num_items: int
) -> list[tuple[int, float, float] | None]:
    """Per item (camera, start, end) when it is a tracklet with a known time span, else None."""
    spans: list[tuple[int, float, float] | None] = [None] * num_items
    for crop, item in zip(crops, item_of):
        if crop.tracklet is not None and crop.start is not None and crop.end is not None:
            spans[int(item)] = (crop.camera, crop.start, crop.end)
    return spans


def split_conflicts(labels: np.ndarray, spans: Sequence[tuple[int, float, float] | None]) -> np.ndarray:
    """Labels where no cluster holds two tracklets of one camera that overlap in time (they are two people).

    Within a conflicting cluster, tracklets are taken in order of start and each joins the first part without a
    conflict, a new part when every part has one; the first part keeps the label, the others get new ones."""
    labels = labels.copy()
    next_label = int(labels.max()) + 1 if len(labels) else 0
    for label in np.unique(labels[labels >= 0]):
        members = [int(i) for i in np.flatnonzero(labels == label) if spans[int(i)] is not None]
        members.sort(key=lambda i: spans[i][1])  # type: ignore[index]
        parts: list[list[int]] = []
        for item in members:
            part = next((p for p in parts if not any(_overlap(spans[item], spans[o]) for o in p)), None)
            if part is None:
                parts.append([item])
            else:
                part.append(item)
        for part in parts[1:]:
            labels[part] = next_label
            next_label += 1
    return labels


def _overlap(a: tuple[int, float, float] | None, b: tuple[int, float, float] | None) -> bool:
    return a is not None and b is not None and a[0] == b[0] and a[1] <= b[2] and b[1] <= a[2]


def _refuse_collapse(labels: np.ndarray, *, eps: float, settings: ClusterSettings) -> None:
    clusters = len(np.unique(labels[labels >= 0]))
    if clusters == 0:
        raise SpanetError(
            f"clustering found no group of {settings.min_samples} or more similar crops (eps {eps:.3f}): adaptation "
            "needs several crops of each person, from two or more cameras; add crops or raise --eps"
        )
    if clusters == 1:
        raise SpanetError(
            f"clustering put every clustered crop into one identity (eps {eps:.3f}): adaptation needs crops of several "
            "different people; add crops of more people or lower --eps"
        )


def cluster_statistics(labels: np.ndarray, truth: np.ndarray, *, eps: float) -> dict[str, Any]:
    """Clusters, un-clustered share and, where every crop's true identity is known (truth >= 0), the purity (share of
    clustered crops in their cluster's majority identity) and pairwise precision / recall of the clustered crops."""
    kept = labels >= 0
    sizes = np.unique(labels[kept], return_counts=True)[1]
    stats: dict[str, Any] = {
        "crops": int(len(labels)), "clusters": int(len(sizes)), "unclustered_share": float(1.0 - kept.mean()),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0, "eps": float(eps),
    }  # fmt: skip
    if len(truth) and (truth >= 0).all() and kept.any():
        own, person = labels[kept], truth[kept]
        majority = sum(np.bincount(np.unique(person, return_inverse=True)[1][own == c]).max() for c in np.unique(own))
        together, same, both = pair_counts(own, person)
        stats.update(purity=float(majority / kept.sum()), pair_precision=both / together if together else 1.0,
                     pair_recall=both / same if same else 1.0, true_identities=int(len(np.unique(truth))))  # fmt: skip
    return stats
