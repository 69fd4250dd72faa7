"""spanet: Parameter-Free Spatial Attention Network for person re-identification.

The top-level names are imported lazily so that `spanet --help` and the data tools start without loading torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SpatialAttention", "SPANet", "FeatureExtractor", "ReID", "SpanetError", "__version__"]
__version__ = "0.1.0"

_LAZY = {
    "SpatialAttention": "spanet.attention",
    "SPANet": "spanet.model",
    "FeatureExtractor": "spanet.features",
    "ReID": "spanet.deploy.reid",
    "SpanetError": "spanet.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spanet' has no attribute {name!r}")
