"""Distances, k-reciprocal re-ranking and ranking metrics (CMC, mAP, mINP).

The names below are imported lazily, so `from spanet.evaluation import rank_metrics` does not load torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RankMetrics", "rank_metrics", "k_reciprocal_rerank", "k_reciprocal_rerank_features", "pairwise_distances"]

_LAZY = {
    "RankMetrics": "spanet.evaluation.metrics",
    "rank_metrics": "spanet.evaluation.metrics",
    "k_reciprocal_rerank": "spanet.evaluation.rerank",
    "k_reciprocal_rerank_features": "spanet.evaluation.rerank",
    "pairwise_distances": "spanet.evaluation.distance",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spanet.evaluation' has no attribute {name!r}")
