"""Features with each camera's own batch-norm statistics: a camera's colour cast and light normalised away inside
the network, before the features are compared across cameras.

A model's batch-norm layers normalise with running means and variances of its training data. On another site every
camera shifts those statistics its own way (an amber cast raises red and lowers blue in every crop of that camera),
so crops of one person from two cameras land far apart. Re-estimating the statistics on one camera's crops and
embedding that camera's crops with them removes the per-camera shift at every layer — camera-based batch
normalisation (Zhuang et al., "Rethinking the Distribution Gap of Person Re-identification with Camera-based Batch
Normalization", ECCV 2020). `spanet adapt` clusters on these features unless `--no-camera-bn` (docs/adapt.md: on
synthetic domain b, development seed 9, the unadapted model's test mAP is 9.7 % with its own statistics and 26.2 %
with each test camera's). Only the statistics change, in a copy of the model; no weight is trained here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["with_statistics_of", "camera_bn_features"]


@torch.no_grad()
def with_statistics_of(model: torch.nn.Module, paths: Sequence[str], *, input_size: Sequence[int],
                       device: torch.device, batch_size: int = 64) -> torch.nn.Module:  # fmt: skip
    """A copy of `model` whose batch-norm running statistics are the plain averages over the images `paths`
    (resized as for evaluation), everything else unchanged; in eval mode."""
    from spanet.data.images import read_image
    from spanet.data.transforms import eval_transform

    copied = copy.deepcopy(model).to(device).eval()
    if len(paths) < 2:  # one image has no variance to estimate: the model's own statistics stay
        return copied
    norms = [m for m in copied.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over every batch
        norm.train()  # only the norms: dropout and the rest stay as in evaluation
    transform = eval_transform(input_size)
    for chunk in np.array_split(np.arange(len(paths)), -(-len(paths) // batch_size)):  # even: no batch of one
        copied(torch.stack([transform(read_image(paths[i])) for i in chunk]).to(device))
    return copied.eval()


def camera_bn_features(model: torch.nn.Module, paths: Sequence[str], cameras: Sequence[int], *,
                       input_size: Sequence[int],
                       embed: Callable[[torch.nn.Module, list[str]], np.ndarray]) -> np.ndarray:  # fmt: skip
    """(N, D) features of `paths`, each camera's crops embedded by `embed(model, paths)` with a copy of `model`
    holding that camera's batch-norm statistics (`with_statistics_of` its own crops)."""
    cameras = np.asarray(cameras)
    device = next(model.parameters()).device
    features: np.ndarray | None = None
    for camera in np.unique(cameras):
        index = np.flatnonzero(cameras == camera)
        mine = [paths[i] for i in index]
        found = embed(with_statistics_of(model, mine, input_size=input_size, device=device), mine)
        if features is None:
            features = np.zeros((len(paths), found.shape[1]), dtype=np.float32)
        features[index] = found
    assert features is not None
    return features
