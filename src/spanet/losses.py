"""Cross-entropy terms for every SPANet head and the three readings of how to weigh them (paper, official, means).

The model returns logits only; this module names one loss per head so the training loop can log each term and
sum them with explicit weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from spanet.errors import SpanetError

if TYPE_CHECKING:
    from spanet.model import SPANetOutput

__all__ = ["WEIGHTINGS", "PAPER_PART_WEIGHT", "PAPER_OTHER_WEIGHT", "classification_terms", "weigh_terms"]

WEIGHTINGS: tuple[str, ...] = ("paper", "official", "means")
PAPER_PART_WEIGHT = 0.8  # the paper's α, on each part loss
PAPER_OTHER_WEIGHT = 0.2  # 1 − α, on each deeply supervised loss and on the main (global) loss


def classification_terms(output: SPANetOutput, targets: Tensor, *, label_smoothing: float = 0.0) -> dict[str, Tensor]:
    """One mean cross-entropy per head: "ds1".."ds3" (if DS), "part1".."partP" (if parts) and "global".

    Logits are upcast to float32 first, so the loss is accurate under bf16/fp16 autocast.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise SpanetError(f"loss.label_smoothing must be in [0, 1), got {label_smoothing!r}")
    heads = [
        *((f"ds{k}", logits) for k, logits in enumerate(output.ds_logits, start=1)),
        *((f"part{i}", logits) for i, logits in enumerate(output.part_logits, start=1)),
        ("global", output.global_logits),
    ]
    return {
        name: F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing) for name, logits in heads
    }


def weigh_terms(terms: dict[str, Tensor], *, weighting: Literal["paper", "official", "means"] = "paper") -> Tensor:
    """The scalar training loss.

    - "paper" (§4, α = 0.8): `L = 0.8 · Σ_i L_part_i + 0.2 · (Σ_k L_ds_k + L_global)`. Sums, not means: each part
      loss gets weight 0.8 and each auxiliary/main loss 0.2, the numbers the paper states, and the total weight
      (0.8·6 + 0.2·4 = 5.6) stays of the order of the official code's unweighted sum (10), for which its learning
      rate was tuned; means would shrink the gradients about tenfold. Without part terms (Table 2's non-PCB rows)
      there is nothing to proportion against, so the DS and global losses get weight 1: the baseline's loss is its
      plain cross-entropy, and "+DS" adds the auxiliary losses with the main loss weighted like them.
    - "official": the unweighted sum of every term (what the official code back-propagates).
    - "means": `0.8 · mean_i L_part_i + 0.2 · mean(L_ds_1..3, L_global)`, the formula the official trainer logs (but
      does not back-propagate). Total weight 1, parts' share 0.8 (paper: 5.6 and 0.86; official: 10 and 0.6).
      Without part terms, the mean of the DS and global terms.
    """
    if weighting not in WEIGHTINGS:
        raise SpanetError(f"loss.weighting {weighting!r} is unknown; use one of {', '.join(WEIGHTINGS)}")
    if not terms:
        raise SpanetError("weigh_terms: no loss terms to weigh")
    unknown = [name for name in terms if not _is_known(name)]
    if unknown:
        raise SpanetError(f"weigh_terms: unknown loss terms {unknown}; expected ds<k>, part<i> and global")
    if weighting == "official":
        return torch.stack(list(terms.values())).sum()
    parts = [term for name, term in terms.items() if name.startswith("part")]
    others = [term for name, term in terms.items() if not name.startswith("part")]
    if weighting == "means":
        if not parts:
            return torch.stack(others).mean()
        return PAPER_PART_WEIGHT * torch.stack(parts).mean() + PAPER_OTHER_WEIGHT * torch.stack(others).mean()
    has_parts = any(name.startswith("part") for name in terms)
    other_weight = PAPER_OTHER_WEIGHT if has_parts else 1.0
    weighted = [(PAPER_PART_WEIGHT if name.startswith("part") else other_weight) * term for name, term in terms.items()]
    return torch.stack(weighted).sum()


def _is_known(name: str) -> bool:
    for prefix in ("ds", "part"):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return True
    return name == "global"
