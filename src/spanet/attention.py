"""The parameter-free spatial attention layer (paper §3.2) and the pooling that follows it.

The layer turns a feature map into one weight per spatial position (the same weight for every channel at that
position) and rescales the map with it. It learns nothing; whatever it does comes from the activations themselves.

Pooling after attention (`pooling`, the `model.sa_pooling` switch):
- "mean" (the paper and the official code): GAP of `F ⊙ A`, i.e. `(1/HW) Σ_p A_p F_p`. Since `A` sums to 1 this is
  HW times smaller than a plain GAP of the map (3072× at stage 1 for a 384×128 input), and so are the logits of the
  branch and every gradient through it. A following linear layer could absorb the constant in what the model can
  express, but not under SGD with weight decay: the training dynamics differ, so the paper's form is the default.
- "sum" (spanet before this switch existed; checkpoints without `sa_pooling` use it): the attention-weighted sum
  `Σ_p A_p F_p`, a weighted average that equals plain GAP under uniform attention, so switching SA on or off keeps
  the scale of the pooled features.

Memory layout: pooling works on a 3-D view of the map that matches its memory format — (B, C, positions) for the
default layout, (B, positions, C) for channels_last — so the gradient flowing back into the backbone has the map's own
layout. A gradient in the other layout would turn every later add and convolution backward into a slow strided copy
(measured: a mixed-layout add of a stage-1 map is 8× slower than a matching one).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from spanet.errors import SpanetError

__all__ = ["ATTENTION_MODES", "SA_POOLINGS", "SpatialAttention", "attention_pool", "is_channels_last", "pool_positions"]

ATTENTION_MODES: tuple[str, ...] = ("softmax", "softmax_mean", "l1")
SA_POOLINGS: tuple[str, ...] = ("mean", "sum")


class SpatialAttention(nn.Module):
    """Parameter-free spatial attention: `forward(x) = x ⊙ A` with `A` of shape (B, 1, H, W) summing to 1 per sample.

    - `softmax` (the paper): `A = softmax over the H·W positions of Σ_c x[:, c]`. On a random network this is close
      to one-hot (1.0–1.5 effective positions): the channel sum of hundreds of activations separates positions by
      many units, so the layer starts as a max-pool over positions.
    - `softmax_mean` (NOT the paper's formula; a reading for the ablations): `A = softmax of mean_c x[:, c]`, i.e. the
      paper's softmax at temperature C. It keeps the softmax but spreads over most positions at initialisation, as
      the paper's "proportional to the relative magnitude of the summed activations" (§3.2) suggests.
    - `l1` (the official code): `A = mean_c x / Σ_positions mean_c x`; a sample whose map is all zero gets uniform
      weights instead of 0/0. Expects non-negative input (the layer follows a ReLU everywhere in SPANet).

    The channel sum and the normalisation run in at least float32 (float64 input stays float64), so large sums of
    2048 activations and bf16/fp16 autocast stay finite; the weights are cast back to the input's dtype.
    """

    def __init__(
        self, mode: Literal["softmax", "softmax_mean", "l1"] = "softmax", *, pooling: Literal["mean", "sum"] = "mean"
    ) -> None:
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise SpanetError(f"attention mode {mode!r} is unknown; use one of {', '.join(ATTENTION_MODES)}")
        if pooling not in SA_POOLINGS:
            raise SpanetError(f"attention pooling {pooling!r} is unknown; use one of {', '.join(SA_POOLINGS)}")
        self.mode = mode
        self.pooling = pooling  # how `pool_positions` pools x ⊙ A: the paper's mean or the weighted sum

    def position_weights(self, flat: Tensor, *, channel_dim: int) -> Tensor:
        """One weight per position of a (B, C, N) or (B, N, C) map -> (B, N), each sample's weights summing to 1.

        `channel_dim` (1 or 2) names the channel axis; the other non-batch axis holds the N positions.
        """
        compute_dtype = torch.promote_types(flat.dtype, torch.float32)
        # under autocast the map may be bf16/fp16: accumulate the channel sum in float32 without a float32 copy
        if self.mode in ("softmax", "softmax_mean"):
            reduce = flat.sum if self.mode == "softmax" else flat.mean  # softmax_mean: temperature C
            scores = reduce(dim=channel_dim, dtype=compute_dtype)  # (B, N)
            # softmax subtracts the per-sample maximum, so huge channel sums do not overflow
            weights = torch.softmax(scores, dim=-1)
        else:
            scores = flat.mean(dim=channel_dim, dtype=compute_dtype)  # (B, N)
            total = scores.sum(dim=-1, keepdim=True)  # (B, 1)
            uniform = torch.full_like(scores, 1.0 / scores.shape[-1])
            weights = torch.where(total > 0, scores / total.clamp_min(torch.finfo(compute_dtype).tiny), uniform)
        return weights.to(flat.dtype)

    def attention_map(self, x: Tensor) -> Tensor:
        """One weight per position: (B, C, H, W) -> (B, 1, H, W), each sample's weights summing to 1."""
        batch, _, height, width = x.shape
        return self.position_weights(x.flatten(2), channel_dim=1).reshape(batch, 1, height, width)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W): every channel at a position scaled by that position's weight."""
        return x * self.attention_map(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, pooling={self.pooling!r}"


def is_channels_last(x: Tensor) -> bool:
    """Whether a (B, C, H, W) tensor is laid out channels_last (and not also plainly contiguous, as 1×1 maps are)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def pool_positions(flat: Tensor, attention: SpatialAttention | None, *, channel_dim: int) -> Tensor:
    """Pool a (B, C, N) or (B, N, C) map over its N positions -> (B, C); `channel_dim` (1 or 2) names the channel axis.

    With attention: `(1/N) Σ_p A_p x_p` ("mean", the paper's GAP of x ⊙ A) or `Σ_p A_p x_p` ("sum"), as one batched
    matmul instead of materialising `x ⊙ A`; without: the plain mean over positions (GAP).
    """
    position_dim = 3 - channel_dim
    if attention is None:
        return flat.mean(dim=position_dim)
    weights = attention.position_weights(flat, channel_dim=channel_dim)  # (B, N)
    if attention.pooling == "mean":
        weights = weights / flat.shape[position_dim]
    if channel_dim == 1:
        return torch.bmm(flat, weights.unsqueeze(-1)).squeeze(-1)  # (B, C, N) @ (B, N, 1) -> (B, C)
    return torch.bmm(weights.unsqueeze(1), flat).squeeze(1)  # (B, 1, N) @ (B, N, C) -> (B, C)


def attention_pool(x: Tensor, attention: SpatialAttention | None) -> Tensor:
    """Pool a map to one vector per sample: (B, C, H, W) -> (B, C), through the view matching x's memory layout."""
    if is_channels_last(x):
        return pool_positions(x.permute(0, 2, 3, 1).flatten(1, 2), attention, channel_dim=2)  # (B, H·W, C), a view
    return pool_positions(x.flatten(2), attention, channel_dim=1)  # (B, C, H·W)
