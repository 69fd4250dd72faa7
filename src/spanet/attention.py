"""The parameter-free spatial attention layer (paper §3.2) and the pooling that follows it.

The layer turns a feature map into one weight per spatial position (the same weight for every channel at that
position) and rescales the map with it. It learns nothing; whatever it does comes from the activations themselves.

Pooling convention: after attention the project pools with the attention-weighted SUM `Σ_p A_p F_p`, not the
paper's GAP of `F ⊙ A` (= `(1/HW) Σ_p A_p F_p`). Because `A` sums to 1, the weighted sum is a weighted average: with
uniform attention it equals plain GAP exactly, so switching SA on or off does not change the scale of the pooled
features (or of the logits, the 1×1 conv and the learning rate that act on them), and it does not depend on the input
size. The paper's form differs only by the constant factor 1/HW, which a following linear layer can absorb.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from spanet.errors import SpanetError

__all__ = ["ATTENTION_MODES", "SpatialAttention", "attention_pool"]

ATTENTION_MODES: tuple[str, ...] = ("softmax", "l1")


class SpatialAttention(nn.Module):
    """Parameter-free spatial attention: `forward(x) = x ⊙ A` with `A` of shape (B, 1, H, W) summing to 1 per sample.

    - `softmax` (the paper): `A = softmax over the H·W positions of Σ_c x[:, c]`.
    - `l1` (the official code): `A = mean_c x / Σ_positions mean_c x`; a sample whose map is all zero gets uniform
      weights instead of 0/0. Expects non-negative input (the layer follows a ReLU everywhere in SPANet).

    The channel sum and the normalisation run in at least float32 (float64 input stays float64), so large sums of
    2048 activations and bf16/fp16 autocast stay finite; the weights are cast back to the input's dtype.
    """

    def __init__(self, mode: Literal["softmax", "l1"] = "softmax") -> None:
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise SpanetError(f"attention mode {mode!r} is unknown; use one of {', '.join(ATTENTION_MODES)}")
        self.mode = mode

    def attention_map(self, x: Tensor) -> Tensor:
        """One weight per position: (B, C, H, W) -> (B, 1, H, W), each sample's weights summing to 1."""
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        # under autocast x may be bf16/fp16: accumulate the channel sum in float32 without a float32 copy of x
        if self.mode == "softmax":
            scores = x.sum(dim=1, keepdim=True, dtype=compute_dtype)  # (B, C, H, W) -> (B, 1, H, W)
            # softmax subtracts the per-sample maximum, so huge channel sums do not overflow
            weights = torch.softmax(scores.flatten(2), dim=-1).reshape_as(scores)  # over the H·W positions
        else:
            scores = x.mean(dim=1, keepdim=True, dtype=compute_dtype)  # (B, 1, H, W)
            total = scores.sum(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
            uniform = torch.full_like(scores, 1.0 / (scores.shape[2] * scores.shape[3]))
            weights = torch.where(total > 0, scores / total.clamp_min(torch.finfo(compute_dtype).tiny), uniform)
        return weights.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W): every channel at a position scaled by that position's weight."""
        return x * self.attention_map(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def attention_pool(x: Tensor, attention: SpatialAttention | None) -> Tensor:
    """Pool a map to one vector per sample: (B, C, H, W) -> (B, C).

    With attention: the attention-weighted sum `Σ_p A_p x_p` (a weighted average, see the module docstring);
    without: the plain mean over positions (GAP).
    """
    if attention is None:
        return x.mean(dim=(2, 3))
    weights = attention.attention_map(x).flatten(1).unsqueeze(-1)  # (B, 1, H, W) -> (B, H·W, 1)
    # one batched matmul instead of materialising x ⊙ A and summing it: (B, C, H·W) @ (B, H·W, 1) -> (B, C)
    return torch.bmm(x.flatten(2), weights).squeeze(-1)
