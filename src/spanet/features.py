"""Retrieval features for a list of images: batched, in inference mode, optionally averaged with the mirror image.

Flip averaging sums `embed(x)` and `embed(flip(x))` and L2-normalises the sum the same way `SPANet.embed`
normalises its output: each of the `model.num_parts` stripe vectors for kind "parts" and "reduced", the whole
vector for "global". So a flipped feature has the same layout and norms as a plain one, and distances stay
comparable between the two.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from spanet.device import resolve_device
from spanet.errors import SpanetError

__all__ = ["extract_features"]


def extract_features(
    model: nn.Module,
    images: Sequence,
    *,
    input_size: Sequence[int],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    flip: bool = False,
    kind: Literal["parts", "reduced", "global"] = "parts",
    progress: bool = True,
    num_workers: int = 0,
    amp: bool | None = None,
    desc: str = "features",
) -> np.ndarray:
    """float32 (N, D) features of `images` (paths or `Sample`s), in their order.

    `input_size` is (height, width) as stored in the checkpoint. The model must already live on `device`; it is
    run in eval mode and put back in its previous mode afterwards. `amp=None` uses float16 autocast on CUDA only.
    """
    from tqdm.auto import tqdm

    from spanet.data.datasets import Sample
    from spanet.data.images import ImageDataset
    from spanet.data.transforms import build_transforms

    if batch_size < 1:
        raise SpanetError(f"batch size must be at least 1, got {batch_size}")
    height, width = (int(v) for v in input_size)
    device = resolve_device(device)
    model_device = next((p.device for p in model.parameters()), device)
    if model_device.type != device.type:
        raise SpanetError(f"the model is on {model_device} but features were asked for on {device}; move it first")
    samples = [s if hasattr(s, "path") else Sample(path=os.fspath(s), pid=-1, camid=-1) for s in images]
    if not samples:
        return np.zeros((0, _embedding_dim(model, kind)), dtype=np.float32)
    loader = DataLoader(
        ImageDataset(samples, build_transforms(height=height, width=width, train=False)),
        batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda",
    )  # fmt: skip
    use_amp = device.type == "cuda" if amp is None else amp
    num_parts = int(getattr(model, "num_parts", 1)) if kind in ("parts", "reduced") else 1
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=use_amp):
            for batch, _, _, index in tqdm(loader, desc=desc, unit="batch", disable=not progress):
                batch = batch.to(device, non_blocking=True)
                feats = model.embed(batch, kind=kind)  # (B, D)
                if flip:
                    feats = _normalise_parts(feats + model.embed(batch.flip(dims=[3]), kind=kind), num_parts)
                feats = feats.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(samples), feats.shape[1]), dtype=np.float32)
                out[index.numpy()] = feats
    finally:
        model.train(was_training)
    assert out is not None
    return out


def _normalise_parts(features: torch.Tensor, num_parts: int) -> torch.Tensor:
    """L2-normalise each of the `num_parts` equal slices of every row: (B, P·C) -> (B, P·C)."""
    batch, dim = features.shape
    if num_parts < 1 or dim % num_parts:
        num_parts = 1
    return F.normalize(features.reshape(batch, num_parts, dim // num_parts), dim=-1).reshape(batch, dim)


def _embedding_dim(model: nn.Module, kind: str) -> int:
    get_dim = getattr(model, "embedding_dim", None)
    return int(get_dim(kind)) if callable(get_dim) else 0
