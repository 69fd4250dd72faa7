"""Class activation maps (paper §3.3, §5.2) for every supervised head of SPANet, and how spread out they are.

For a head whose pooled feature `v` reaches the logit of class c through linear maps only, the logit is
`w^c · v + b'`, so with plain GAP (`v = mean_p f(p)`) the map `M_c(p) = Σ_k w^c_k f_k(p)` has mean `logit − b'`;
with spatial attention `M_c(p) = A(p) · Σ_k w^c_k f_k(p)` has mean `logit − b'` when the layer pools with the
paper's GAP of `F ⊙ A` (`sa_pooling="mean"`) and sum `logit − b'` with the weighted sum (`"sum"`). Every `HeadCam` keeps `logit` and `offset` (= b') so that identity can be checked.

How `w^c` is composed (attribute names from `spanet.model`):
- DS stages 1–3: pooled C_k → `reduce` (1×1 conv 256×C_k) → `classifier` (classes×256):
  `w^c = classifier.weight[c] @ reduce.weight`, offset = classifier bias.
- Stage 4, part i: stripe i pooled → `part_reduce` = conv (256×C4) → BN → ReLU → `part_classifiers[i]`. BN in eval
  mode is affine (`s ⊙ z + t`), folded in. ReLU is not linear: we linearise it at the actual point, i.e. use the
  ReLU mask m_i = [BN output > 0] of this image. That is exact for this image's logit (the derivative of the logit
  w.r.t. the pooled stripe, which is what Grad-CAM would use too): `w^c_i = (W_i[c] ⊙ m_i ⊙ s) @ conv.weight`,
  offset = `(W_i[c] ⊙ m_i) · t + b_i[c]`.
- Stage 4, global head: logit = global classifier on the mean of the P reduced part vectors, so every stripe
  contributes through its own masked weight `(W_g[c] ⊙ m_i ⊙ s) @ conv.weight / P`; position p gets the weight of
  the stripe(s) it lies in, scaled so that the whole map again satisfies the mean (GAP) or sum (SA1) identity.
- "parts" (display only): each stripe shows the CAM of its own part classifier, stitched into one map.

Dropout is the identity in eval mode, which these functions switch on for their duration. Maps are upsampled to
the input size (bilinear); display and spread measures use the positive part scaled by the maximum (`normalise`).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spanet.data.names import person_id_from_name
from spanet.errors import SpanetError

__all__ = [
    "CAM_STAGES",
    "HeadCam",
    "ImageCams",
    "CamRunSummary",
    "image_cams",
    "without_attention",
    "has_attention",
    "upsample",
    "normalise",
    "cam_spread",
    "train_labels_by_pid",
    "run_cam",
]

CAM_STAGES: tuple[str, ...] = ("stage1", "stage2", "stage3", "global", "parts")
_STAGE_LABELS = {"stage1": "stage 1 (DS)", "stage2": "stage 2 (DS)", "stage3": "stage 3 (DS)",
                 "global": "stage 4 (global)", "parts": "stage 4 (parts)"}


@dataclass(frozen=True)
class HeadCam:
    """One head's CAM at feature resolution with the exact identity `reduce(cam) + offset == logit`.

    `reduce` is the attention's pooling ("mean" or "sum") with attention and "mean" without (module docstring). `rows` is the [start, end)
    range of stage-map rows the map covers (a stripe for a part head, all rows otherwise).
    """

    cam: Tensor  # (h, w)
    logit: float
    offset: float
    reduce: str
    rows: tuple[int, int]


@dataclass(frozen=True)
class ImageCams:
    """All head CAMs of one image for one class: keys "stage1".."stage3", "global", "part0".."part{P-1}", "parts"."""

    target: int
    predicted: int
    heads: dict[str, HeadCam]
    stage_height: int  # rows of the stage-4 map, for stitching


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as `s ⊙ z + t`."""
    if bn.running_var is None or bn.running_mean is None:
        raise SpanetError("CAM needs BatchNorm running statistics (track_running_stats=True) in the part head")
    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight
    t = -s * bn.running_mean + (bn.bias if bn.bias is not None else 0.0)
    return s, t


def _conv_matrix(conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    """A 1×1 conv applied to a pooled vector as (out, in) matrix and bias."""
    weight = conv.weight.flatten(1)  # (out, in, 1, 1) -> (out, in)
    bias = conv.bias if conv.bias is not None else weight.new_zeros(weight.shape[0])
    return weight, bias


def _ds_cams(model: nn.Module, maps: Sequence[Tensor], logits: Sequence[Tensor], c: int) -> dict[str, HeadCam]:
    cams = {}
    for k, (head, stage_map, stage_logits) in enumerate(zip(model.ds_heads, maps, logits)):
        f = stage_map[0]  # (C_k, h, w)
        w1, b1 = _conv_matrix(head.reduce)
        w2 = head.classifier.weight[c]  # (256,)
        weight = w2 @ w1  # (C_k,)
        offset = float(w2 @ b1 + head.classifier.bias[c])
        raw = torch.einsum("k,khw->hw", weight, f)
        if head.sa_ds is not None:
            cam, reduce = head.sa_ds.attention_map(stage_map)[0, 0] * raw, head.sa_ds.pooling
        else:
            cam, reduce = raw, "mean"
        cams[f"stage{k + 1}"] = HeadCam(cam, float(stage_logits[0, c]), offset, reduce, (0, f.shape[1]))
    return cams


def _stage4_cams(model: nn.Module, last_map: Tensor, output: Any, c: int) -> dict[str, HeadCam]:
    from spanet.model import stripe_bounds

    f = last_map[0]  # (C4, h, w)
    height, width = f.shape[1:]
    bounds = stripe_bounds(height, model.num_parts)
    pooled = model.pool_parts(last_map)[0]  # (P, C4)
    w_conv, b_conv = _conv_matrix(model.part_reduce.conv)
    s, t = _bn_affine(model.part_reduce.bn)
    pre = (pooled @ w_conv.T + b_conv) * s + t  # (P, 256): BN output before ReLU
    mask = (pre > 0).to(pre.dtype)  # the ReLU linearised at this image's activation
    shift = s * b_conv + t  # constant part of the BN output
    attention = model.sa_parts
    cams: dict[str, HeadCam] = {}

    for i, classifier in enumerate(model.part_classifiers):
        start, end = bounds[i]
        gated = classifier.weight[c] * mask[i]  # (256,)
        weight = (gated * s) @ w_conv  # (C4,)
        stripe = f[:, start:end]
        raw = torch.einsum("k,khw->hw", weight, stripe)
        if attention is not None:
            cam, reduce = attention.attention_map(stripe[None])[0, 0] * raw, attention.pooling
        else:
            cam, reduce = raw, "mean"
        logit = float(output.part_logits[i][0, c])  # the model's own logit: the identity checks the composition
        cams[f"part{i}"] = HeadCam(cam, logit, float(gated @ shift + classifier.bias[c]), reduce, (start, end))

    parts = len(bounds)
    global_cam = f.new_zeros(height, width)
    w_g = model.global_classifier.weight[c]
    offset = float(model.global_classifier.bias[c])
    for i, (start, end) in enumerate(bounds):
        gated = w_g * mask[i] / parts
        offset += float(gated @ shift)
        stripe = f[:, start:end]
        raw = torch.einsum("k,khw->hw", (gated * s) @ w_conv, stripe)
        if attention is not None:
            scale = 1.0 if attention.pooling == "sum" else 1.0 / ((end - start) * width)
            global_cam[start:end] += attention.attention_map(stripe[None])[0, 0] * raw * scale
        else:
            global_cam[start:end] += raw * (height * width) / ((end - start) * width)
    logit = float(output.global_logits[0, c])
    cams["global"] = HeadCam(global_cam, logit, offset, "sum" if attention is not None else "mean", (0, height))
    return cams


def _stitch_parts(heads: Mapping[str, HeadCam], height: int) -> Tensor | None:
    """One map with each stripe's own part CAM (overlapping stripes of very short maps are averaged)."""
    parts = [heads[k] for k in sorted(heads) if k.startswith("part") and k[4:].isdigit()]
    if not parts:
        return None
    total = parts[0].cam.new_zeros(height, parts[0].cam.shape[1])
    count = total.new_zeros(height, 1)
    for head in parts:
        start, end = head.rows
        total[start:end] += head.cam
        count[start:end] += 1
    return total / count.clamp_min(1)


@torch.no_grad()
def image_cams(model: nn.Module, image: Tensor, *, target: int | None = None) -> ImageCams:
    """CAMs of every supervised head of `model` for one normalised image (3, H, W).

    `target`: the class to explain; None uses the class the global (main) classifier predicts.
    """
    if image.dim() != 3:
        raise SpanetError(f"image_cams expects one (3, H, W) image tensor, got shape {tuple(image.shape)}")
    was_training = model.training
    model.eval()
    maps: list[Tensor] = []
    layers = [getattr(model.backbone, f"layer{k}") for k in range(1, 5)]
    # capture the stage maps of the one forward pass, so the CAMs use exactly the features the logits came from
    hooks = [layer.register_forward_hook(lambda _m, _i, out: maps.append(out)) for layer in layers]
    try:
        x = image[None].to(next(model.parameters()).device)
        output = model(x)
        predicted = int(output.global_logits[0].argmax())
        c = predicted if target is None else int(target)
        if not 0 <= c < model.num_classes:
            raise SpanetError(f"class {c} is outside the model's {model.num_classes} classes")
        heads = _ds_cams(model, maps[:3], output.ds_logits, c)
        heads.update(_stage4_cams(model, maps[3], output, c))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    heads = {name: replace(head, cam=head.cam.float().cpu()) for name, head in heads.items()}
    stitched = _stitch_parts(heads, maps[3].shape[2])
    if stitched is not None:
        heads["parts"] = HeadCam(stitched, math.nan, math.nan, "display", (0, maps[3].shape[2]))
    return ImageCams(target=c, predicted=predicted, heads=heads, stage_height=maps[3].shape[2])


def without_attention(model: nn.Module) -> nn.Module:
    """The same weights with every spatial attention layer removed (SA has no parameters, so nothing is lost).

    DS heads then pool with GAP, and stage 4 with per-stripe GAP: the "same weights, SA off" comparison.
    """
    plain = copy.deepcopy(model)
    for head in plain.ds_heads:
        head.sa_ds = None
    plain.sa_parts = None
    return plain


def has_attention(model: nn.Module) -> bool:
    """Whether any head of `model` pools with spatial attention."""
    return model.sa_parts is not None or any(h.sa_ds is not None for h in model.ds_heads)


def _compare_title(compare_model: nn.Module, label: str) -> str:
    """The right column's title: "without SA" only when the compared model really has none."""
    name = label or "compare checkpoint"
    if not has_attention(compare_model):
        return f"without SA: {name}"
    warnings.warn(f"the compared model {name} has spatial attention as well; its column is titled so, not "
                  "'without SA' (compare with a checkpoint trained with model.sa_ds=false model.sa_parts=false)",
                  stacklevel=3)  # fmt: skip
    return f"{name} (also with SA)"


def upsample(cam: Tensor, *, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of a (h, w) map to `size` = (H, W)."""
    return F.interpolate(cam[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


def normalise(cam: Tensor | np.ndarray) -> np.ndarray:
    """Positive evidence scaled to [0, 1]: `max(M, 0) / max(M)` (all zeros when no position has positive evidence).

    Negative CAM values argue against the class; like Grad-CAM we show (and measure) only where the map supports
    it. Plain min-max scaling would instead turn a map that is ~0 everywhere except one strongly negative spot into
    "everything highlighted".
    """
    values = np.asarray(cam, dtype=np.float64)
    high = values.max()
    if not np.isfinite(high) or high <= 0:
        return np.zeros_like(values)
    return np.clip(values, 0.0, None) / high


def cam_spread(cam: Tensor | np.ndarray) -> dict[str, float]:
    """How spread out a CAM is, on its normalised form (what the figure shows); higher = more spread.

    - `area_above_half`: fraction of positions at ≥ half the maximum (the paper's "highlighted area").
    - `entropy`: entropy of the normalised map taken as a distribution, divided by log(#positions): 1 = uniform.
    - `rows_above_half`: fraction of rows reaching ≥ half the maximum somewhere (§5.2: SA is "more scattered
      along the vertical axis").
    A map with no positive value highlights nothing: all three are 0.
    """
    values = normalise(cam)
    if values.ndim != 2 or values.size < 2:
        raise SpanetError(f"cam_spread expects a 2-D map with at least 2 positions, got shape {values.shape}")
    total = values.sum()
    if total <= 0:
        return {"area_above_half": 0.0, "entropy": 0.0, "rows_above_half": 0.0}
    p = values / total
    nonzero = p[p > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum() / math.log(values.size))
    above = values >= 0.5
    return {
        "area_above_half": float(above.mean()),
        "entropy": entropy,
        "rows_above_half": float(above.any(axis=1).mean()),
    }


def train_labels_by_pid(checkpoint: Mapping[str, Any]) -> tuple[dict[int, int] | None, str]:
    """Person id (from a Market-style file name) -> training label, rebuilt from the checkpoint's training data.

    Labels are assigned when the training split is read (`load_dataset` relabels ids 0..N−1), so re-reading the
    dataset the checkpoint names gives the same mapping. Returns (None, reason) when that is impossible.
    """
    import warnings

    from spanet.data.datasets import load_dataset

    data = (checkpoint.get("config") or {}).get("data") or {}
    name, root = data.get("dataset"), data.get("root")
    if not name or not root:
        return None, "the checkpoint does not name its training data"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = load_dataset(name, root)
    except SpanetError as exc:
        return None, f"its training data could not be read ({exc})"
    mapping: dict[int, int] = {}
    for sample in dataset.train:
        person = person_id_from_name(sample.path)
        if person is None or mapping.setdefault(person, sample.pid) != sample.pid:
            return None, f"training file names in {root} do not start with a person id"
    num_classes = (checkpoint.get("model_args") or {}).get("num_classes")
    if num_classes is not None and len(set(mapping.values())) != num_classes:
        return None, f"{root} now holds {len(set(mapping.values()))} training ids, the model has {num_classes}"
    return mapping, f"training ids of {name} in {root}"


@dataclass
class CamRunSummary:
    """What `run_cam` wrote: figures, one spread record per image × stage × variant, and their means."""

    figures: list[Path] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    variants: dict[str, str] = field(default_factory=dict)
    class_note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"variants": self.variants, "class_note": self.class_note, "summary": self.summary,
                "records": self.records, "figures": [str(p) for p in self.figures]}


def _stage_maps(cams: ImageCams, stages: Sequence[str], size: tuple[int, int]) -> dict[str, np.ndarray]:
    return {stage: normalise(upsample(cams.heads[stage].cam, size=size)) for stage in stages if stage in cams.heads}


def _summarise(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["stage"], record["variant"]), []).append(record)
    summary = []
    for (stage, variant), rows in groups.items():
        entry: dict[str, Any] = {"stage": stage, "variant": variant, "count": len(rows)}
        for key in ("area_above_half", "entropy", "rows_above_half"):
            entry[key] = float(np.mean([r[key] for r in rows]))
        summary.append(entry)
    order = {s: i for i, s in enumerate(CAM_STAGES)}
    return sorted(summary, key=lambda e: (order.get(e["stage"], 99), e["variant"]))


def run_cam(
    model: nn.Module,
    images: Sequence[str | Path],
    *,
    out_dir: str | Path,
    input_size: tuple[int, int],
    compare_model: nn.Module | None = None,
    compare_label: str = "",
    class_mode: str = "predicted",
    labels_by_pid: Mapping[int, int] | None = None,
    stages: Sequence[str] | None = None,
    progress: bool = True,
) -> CamRunSummary:
    """Write one Fig. 5/6-style PNG per image (rows = stages; original | with SA | without SA) and spread.json/csv.

    The "without SA" column is `compare_model` (e.g. a checkpoint trained without SA, named by `compare_label`) or,
    when None, `model` with its attention switched off (same weights). Both columns explain the same class: the true
    class when `class_mode="true"` and the image's file name gives a person id found in `labels_by_pid`, otherwise
    the class `model` predicts (each record says which).
    """
    from tqdm.auto import tqdm

    from spanet.data.images import read_image
    from spanet.data.transforms import eval_transform
    from spanet.run_dir import write_spread
    from spanet.viz.figures import CamRow, draw_cam_grid

    if compare_model is not None and compare_model.num_classes != model.num_classes:
        raise SpanetError(f"the compared model {compare_label or ''} has {compare_model.num_classes} classes, the "
                          f"model {model.num_classes}; compare models trained on the same data")

    if class_mode not in ("true", "predicted"):
        raise SpanetError(f"class_mode {class_mode!r} is unknown: use 'true' or 'predicted'")
    chosen = list(stages) if stages else list(CAM_STAGES)
    unknown = [s for s in chosen if s not in CAM_STAGES]
    if unknown:
        raise SpanetError(f"stages {', '.join(unknown)}: unknown; choose from {', '.join(CAM_STAGES)}")
    height, width = input_size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    other = compare_model if compare_model is not None else without_attention(model)
    variants = {
        "with_sa": "with SA" if has_attention(model) else "this model (it has no SA)",
        "without_sa": _compare_title(compare_model, compare_label) if compare_model is not None
        else "same weights, SA off",
    }
    transform = eval_transform(input_size)
    summary = CamRunSummary(variants=variants)
    true_count = 0
    for index, path in enumerate(tqdm(list(images), desc="CAM", unit="img", disable=not progress)):
        picture = read_image(path)
        tensor = transform(picture)
        target, source = None, "predicted"
        person = person_id_from_name(path)
        if class_mode == "true" and labels_by_pid and person in labels_by_pid:
            target, source = labels_by_pid[person], f"true (person {person})"
            true_count += 1
        main = image_cams(model, tensor, target=target)
        compared = image_cams(other, tensor, target=main.target)
        present = [s for s in chosen if s in main.heads or s in compared.heads]
        maps = {"with_sa": _stage_maps(main, present, (height, width)),
                "without_sa": _stage_maps(compared, present, (height, width))}
        rows = []
        for stage in present:
            notes = []
            for variant in ("with_sa", "without_sa"):
                if stage not in maps[variant]:
                    notes.append("")
                    continue
                spread = cam_spread(maps[variant][stage])
                summary.records.append({"image": str(path), "stage": stage, "variant": variant,
                                        "class": main.target, "class_source": source, **spread})
                notes.append(f"area≥½ {spread['area_above_half']:.2f} · H {spread['entropy']:.2f}")
            rows.append(CamRow(label=_STAGE_LABELS[stage], notes=tuple(notes),
                               cams=(maps["with_sa"].get(stage), maps["without_sa"].get(stage))))
        if not rows:
            raise SpanetError(f"stages {', '.join(chosen)}: none of these heads exist in the model(s)")
        shown = np.asarray(picture.resize((width, height)))
        title = f"{Path(path).name}: class {main.target} ({source}); predicted {main.predicted}"
        summary.figures.append(draw_cam_grid(shown, rows, column_titles=(variants["with_sa"], variants["without_sa"]),
                                             out_path=out / f"cam_{index:04d}_{Path(path).stem}.png", title=title))
    summary.summary = _summarise(summary.records)
    if class_mode == "true" and true_count < len(images):
        summary.class_note = (f"{len(images) - true_count} of {len(images)} images used the predicted class (no "
                              "training person id known for them).")
    write_spread(out, summary.to_json(), summary.records)
    return summary
