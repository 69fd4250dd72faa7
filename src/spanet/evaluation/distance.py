"""Query–gallery distances, computed in row chunks with one matrix product each.

"euclidean" is the SQUARED Euclidean distance `‖a‖² + ‖b‖² − 2 a·b` (clamped at 0), as torchreid's
`euclidean_squared_distance` and the official SPANet code use: ranking metrics do not change under the square, but
k-reciprocal re-ranking squares the distances it is given once more, so re-ranked numbers match the field's only
with this choice. "cosine" is `1 − cos(a, b)`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from spanet.errors import SpanetError

__all__ = ["METRICS", "pairwise_distances", "prepare", "distance_rows", "centre_per_camera"]

METRICS = ("euclidean", "cosine")


def pairwise_distances(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    *,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    chunk_size: int = 4096,
) -> np.ndarray:
    """(len(a), len(b)) float32 distances between the rows of `a` and `b` (see the module docstring)."""
    a_t, b_t = _as_features(a, "a"), _as_features(b, "b")
    if a_t.shape[1] != b_t.shape[1]:
        raise SpanetError(
            f"feature sizes differ: {a_t.shape[1]} vs {b_t.shape[1]}; were both extracted with the same model?"
        )
    b_prepared = prepare(b_t, metric=metric)
    out = np.empty((a_t.shape[0], b_t.shape[0]), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, a_t.shape[0], chunk_size):
            rows = prepare(a_t[start : start + chunk_size], metric=metric)
            out[start : start + len(rows[0])] = distance_rows(rows, b_prepared, metric=metric).numpy()
    return out


def prepare(features: torch.Tensor, *, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, squared norms) for euclidean; (unit rows, unused) for cosine: what `distance_rows` needs per side."""
    if metric == "euclidean":
        return features, features.pow(2).sum(dim=1)
    if metric == "cosine":
        return F.normalize(features, dim=1), torch.empty(0)
    raise SpanetError(f"distance metric {metric!r} is unknown; use one of {', '.join(METRICS)}")


def distance_rows(
    rows: tuple[torch.Tensor, torch.Tensor], columns: tuple[torch.Tensor, torch.Tensor], *, metric: str
) -> torch.Tensor:
    """Distances between prepared `rows` and prepared `columns`: (len(rows), len(columns)) float32."""
    if metric == "euclidean":
        # (R, 1) + (1, C) - 2 (R, D) @ (D, C)
        dist = torch.addmm(rows[1][:, None] + columns[1][None, :], rows[0], columns[0].T, alpha=-2.0)
        return dist.clamp_min_(0.0)
    return 1.0 - rows[0] @ columns[0].T


def _as_features(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(x).detach().cpu()
    if tensor.ndim != 2:
        raise SpanetError(f"features {name} must be 2-D (num_images, dim), got shape {tuple(tensor.shape)}")
    return tensor.float()


def centre_per_camera(features: np.ndarray, cameras: np.ndarray) -> np.ndarray:
    """Features (n, d) minus their camera's mean feature, each row re-normalised to unit length (float64): what every
    crop of one camera shares (its colour cast, light, background) stops pulling that camera's people together, so
    one person in two cameras comes closer. Used by cross-camera association and by adaptation's pseudo-labels."""
    centred = np.asarray(features, dtype=np.float64).copy()
    cameras = np.asarray(cameras)
    for camera in np.unique(cameras):
        centred[cameras == camera] -= centred[cameras == camera].mean(axis=0)
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
