"""A cluster memory and its contrastive loss term, for `spanet adapt --memory-weight`.

Cluster Contrast (Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification", 2021) keeps one unit
vector per pseudo-identity, starts it at the cluster's centroid, and trains every crop's unit feature to be closer
to its own cluster's vector than to any other's: an InfoNCE term, `cross_entropy(f · Mᵀ / τ, cluster)`. The memory is
not learnt by gradients: after each step, each cluster in the batch moves its vector towards the batch's mean feature
of its crops (`m ← μ·m + (1 − μ)·mean`, then unit length). Unlike a classifier started anew each round, the memory
scores every cluster from the first step on with what the clusters look like now.

The feature is the one retrieval and the clustering use (`SPANet.embed(kind="parts")`): each pooled stripe at unit
length, concatenated, then scaled to unit length overall (in training: before dropout). The memory (C, P·C4) and
its settings are a plain dict in the checkpoint of a training run (`state_dict`), so a resumed round continues with
the memory it stopped with.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from spanet.errors import SpanetError

__all__ = ["ClusterMemory", "memory_features"]


def memory_features(part_features: torch.Tensor) -> torch.Tensor:
    """(B, P·C4) unit features from a forward pass's `part_features` (B, P, C4), in float32."""
    parts = F.normalize(part_features.float(), dim=-1).flatten(1)
    return parts / part_features.shape[1] ** 0.5


class ClusterMemory:
    """One unit vector per cluster; `loss` scores a batch against them, `update` moves them after a step."""

    def __init__(self, centroids: torch.Tensor, *, temperature: float = 0.05, momentum: float = 0.1,
                 weight: float = 1.0) -> None:  # fmt: skip
        if centroids.ndim != 2 or len(centroids) < 2:
            raise SpanetError(f"a cluster memory needs (clusters >= 2, dim) centroids, got shape {tuple(centroids.shape)}")
        if not temperature > 0 or not 0 <= momentum < 1 or not weight > 0:
            raise SpanetError(f"cluster memory: temperature > 0, 0 <= momentum < 1 and weight > 0 are needed; got "
                              f"{temperature}, {momentum}, {weight}")  # fmt: skip
        self.vectors = F.normalize(centroids.detach().float(), dim=1)
        self.temperature, self.momentum, self.weight = temperature, momentum, weight

    def to(self, device: torch.device) -> ClusterMemory:
        self.vectors = self.vectors.to(device)
        return self

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean InfoNCE of unit `features` (B, D) against every cluster's vector; `targets` (B,) their clusters."""
        logits = features @ self.vectors.T / self.temperature
        return F.cross_entropy(logits, targets)

    @torch.no_grad()
    def update(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Move each batch cluster's vector towards the mean of its crops' features; keep it at unit length."""
        features = features.detach().float()
        clusters, slots = torch.unique(targets, return_inverse=True)
        sums = torch.zeros(len(clusters), features.shape[1], device=features.device).index_add_(0, slots, features)
        counts = torch.bincount(slots, minlength=len(clusters)).unsqueeze(1).float()
        moved = self.momentum * self.vectors[clusters] + (1 - self.momentum) * sums / counts
        self.vectors[clusters] = F.normalize(moved, dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {"vectors": self.vectors.cpu().clone(), "temperature": self.temperature, "momentum": self.momentum,
                "weight": self.weight}  # fmt: skip

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ClusterMemory:
        memory = cls(state["vectors"], temperature=state["temperature"], momentum=state["momentum"], weight=state["weight"])
        memory.vectors = state["vectors"].float().clone()  # as stored, bit for bit (normalising again can move bits)
        return memory
