"""Evaluate a model on a dataset's query/gallery split: features → distances → (re-ranking) → CMC / mAP / mINP.

`evaluate_model` is what the training loop calls for periodic evaluation; `spanet evaluate` uses the two steps
(`extract_feature_set`, `score_features`) so that it can also save the features and draw ranked lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from spanet.data.protocol import CROSS_CAMERA, NO_CAMERA, describe_protocol, sample_ids
from spanet.errors import SpanetError
from spanet.evaluation.distance import pairwise_distances
from spanet.evaluation.metrics import RankMetrics, rank_metrics
from spanet.evaluation.rerank import k_reciprocal_rerank_features
from spanet.features import ExtractionOptions, extract_features, save_features
from spanet.runtime import resolve_device

__all__ = [
    "FeatureSet",
    "EvaluationResult",
    "extract_feature_set",
    "score_features",
    "evaluate_model",
    "EvaluationOutputs",
    "CheckpointEvaluation",
    "evaluate_checkpoint",
    "format_table",
]


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Query and gallery features with the samples (path, pid, camid) they belong to, row for row."""

    query_features: np.ndarray
    gallery_features: np.ndarray
    query: tuple[Any, ...]
    gallery: tuple[Any, ...]
    protocol: str = CROSS_CAMERA  # NO_CAMERA: same-camera filter off (`spanet.data.protocol`)

    def save(self, path: str | Path, *, info: dict[str, Any]) -> Path:
        """Write the one features `.npz` (`spanet.features`): query rows then gallery rows, with ids and split."""
        samples = self.query + self.gallery
        return save_features(
            path, features=np.concatenate([self.query_features, self.gallery_features]),
            paths=[str(s.path) for s in samples], pids=[s.pid for s in samples], camids=[s.camid for s in samples],
            splits=["query"] * len(self.query) + ["gallery"] * len(self.gallery), info=info,
        )  # fmt: skip


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Plain metrics at the top level (what a training log wants), the full results below.

    `distances` is the final query×gallery matrix (re-ranked when re-ranking ran), kept only on request.
    """

    rank1: float
    rank5: float
    rank10: float
    mAP: float
    mINP: float
    plain: RankMetrics
    reranked: RankMetrics | None = None
    metric: str = "euclidean"
    distances: np.ndarray | None = field(default=None, repr=False)
    protocol: str = CROSS_CAMERA
    notes: tuple[str, ...] = ()  # what is undefined or clipped (rank-k beyond the gallery, re-ranking's k1)

    def to_json(self) -> dict[str, Any]:
        """`{"plain": {"rank1", "rank5", "rank10", "mAP", "mINP"}, "reranked": {...}}` as fractions; an undefined
        rank is null and explained under "notes"."""
        out: dict[str, Any] = {"plain": self.plain.summary()}
        if self.reranked is not None:
            out["reranked"] = self.reranked.summary()
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def to_metrics_file(self) -> dict[str, Any]:
        """`to_json()` plus the CMC curves, the distance, and how many queries counted."""
        out: dict[str, Any] = dict(self.to_json())
        variants = {"plain": self.plain, "reranked": self.reranked}
        out["cmc"] = {name: [float(v) for v in m.cmc] for name, m in variants.items() if m is not None}
        out["queries"] = {"valid": self.plain.num_valid_queries, "skipped": self.plain.num_skipped_queries}
        out["metric"] = self.metric
        out["protocol"] = self.protocol
        return out


def extract_feature_set(
    model: nn.Module, dataset: Any, *, input_size: Sequence[int], options: ExtractionOptions = ExtractionOptions()
) -> FeatureSet:
    """Features of `dataset.query` and `dataset.gallery` (see `spanet.features.extract_features`)."""
    if not dataset.query or not dataset.gallery:
        raise SpanetError(
            f"dataset {getattr(dataset, 'name', '?')} at {getattr(dataset, 'root', '?')} has "
            f"{len(dataset.query)} query and {len(dataset.gallery)} gallery images; both are needed to evaluate"
        )
    query = extract_features(model, dataset.query, input_size=input_size, options=options, desc="query features")
    gallery = extract_features(model, dataset.gallery, input_size=input_size, options=options, desc="gallery features")
    protocol = getattr(dataset, "protocol", CROSS_CAMERA)
    return FeatureSet(query.features, gallery.features, tuple(dataset.query), tuple(dataset.gallery), protocol=protocol)


def score_features(
    features: FeatureSet,
    *,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    rerank_power: int = 2,
    max_rank: int = 50,
    keep_distances: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Distances, metrics, and with `rerank` the k-reciprocal re-ranked metrics as well."""
    q_pids, q_camids = sample_ids(features.query)
    g_pids, g_camids = sample_ids(features.gallery)
    if features.protocol == NO_CAMERA:  # no query shares a camera with the gallery: nothing is filtered out
        q_camids, g_camids = np.full_like(q_camids, -1), np.zeros_like(g_camids)
    distances = pairwise_distances(features.query_features, features.gallery_features, metric=metric)
    plain = rank_metrics(distances, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    reranked = None
    if rerank:
        distances = k_reciprocal_rerank_features(
            features.query_features, features.gallery_features,
            k1=k1, k2=k2, lambda_value=lambda_value, metric=metric, power=rerank_power, progress=progress,
        )  # fmt: skip
        reranked = rank_metrics(distances, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    return EvaluationResult(
        rank1=plain.rank(1), rank5=plain.rank(min(5, max_rank)), rank10=plain.rank(min(10, max_rank)),
        mAP=plain.mAP, mINP=plain.mINP, plain=plain, reranked=reranked, metric=metric,
        distances=distances if keep_distances else None, protocol=features.protocol,
        notes=_undefined_notes(plain, k1=k1 if rerank else None),
    )  # fmt: skip


def _undefined_notes(plain: RankMetrics, *, k1: int | None) -> tuple[str, ...]:
    """Say which numbers mean nothing on this gallery, instead of printing them as 100 % or as re-ranked."""
    notes = []
    gallery = plain.gallery_size
    undefined = plain.undefined_ranks()
    if undefined:
        names = ", ".join(f"rank-{k}" for k in undefined)
        notes.append(f"{names} undefined: the gallery holds {gallery} image(s), fewer than k (reported as n/a, not 100 %)")
    if k1 is not None and gallery is not None and k1 >= gallery:
        notes.append(f"re-ranking's k1={k1} is not smaller than the gallery ({gallery} images): its neighbour sets "
                     "are clipped to the whole gallery, so the re-ranked numbers may equal the plain ones")  # fmt: skip
    return tuple(notes)


def evaluate_model(
    model: nn.Module,
    dataset: Any,
    *,
    input_size: Sequence[int],
    options: ExtractionOptions = ExtractionOptions(),
    metric: Literal["euclidean", "cosine"] = "euclidean",
    rerank: bool = False,
) -> EvaluationResult:
    """Extract query/gallery features of `dataset` with `model` and score them (no files written)."""
    features = extract_feature_set(model, dataset, input_size=input_size, options=options)
    return score_features(features, metric=metric, rerank=rerank, progress=options.progress)


def format_table(result: EvaluationResult) -> str:
    """Plain and re-ranked metrics side by side, in percent."""
    columns = ("rank1", "rank5", "rank10", "mAP", "mINP")
    rows = [("plain", result.plain)] + ([("re-ranked", result.reranked)] if result.reranked is not None else [])
    lines = [f"{'':<10}" + "".join(f"{c:>9}" for c in ("rank-1", "rank-5", "rank-10", "mAP", "mINP"))]
    for name, metrics in rows:
        summary = metrics.summary()
        cells = (f"{100 * summary[c]:>9.2f}" if summary.get(c) is not None else f"{'n/a' if c in summary else '-':>9}"
                 for c in columns)  # fmt: skip
        lines.append(f"{name:<10}" + "".join(cells))
    lines.append(
        f"({result.plain.num_valid_queries} queries scored, {result.plain.num_skipped_queries} skipped without a "
        f"true match; {result.metric} distance)"
    )
    lines.append(describe_protocol(result.protocol))
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)


@dataclass(frozen=True)
class EvaluationOutputs:
    """What `evaluate_checkpoint` writes beside metrics.json and features.npz."""

    verification: bool = False  # "same person?" metrics and the distance histograms
    visualize: int = 0  # top-K gallery images drawn for a few queries into ranked/ and the worst ones into worst/
    visualize_queries: int = 8  # how many (seeded random) queries are drawn with `visualize`
    embedding: bool = False  # t-SNE scatter of 20 gallery identities (scikit-learn)


@dataclass(frozen=True)
class CheckpointEvaluation:
    """`evaluate_checkpoint`'s answer: the scores, the features they came from, and the files written."""

    result: EvaluationResult
    features: FeatureSet
    metrics: dict[str, Any]  # what metrics.json holds besides its source
    domain_note: str | None  # set when the checkpoint was trained on other data than it is evaluated on
    metrics_path: Path
    features_path: Path
    ranked: tuple[Path, ...] = ()
    split_path: Path | None = None  # own data: the split used, re-usable as --dataset list


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: Any,
    *,
    out_dir: str | Path,
    options: ExtractionOptions = ExtractionOptions(),
    metric: Literal["euclidean", "cosine"] = "euclidean",
    rerank: bool = False,
    rerank_power: int = 2,
    outputs: EvaluationOutputs = EvaluationOutputs(),
) -> CheckpointEvaluation:
    """Load `checkpoint`, extract and score `dataset`'s query/gallery, write the evaluation folder `out_dir`
    (metrics.json, features.npz, per-query file and diagnostics, ranked lists) — what `spanet evaluate` does."""
    from spanet.checkpoint import checkpoint_input_size, load_model
    from spanet.data.datasets import require_valid_queries
    from spanet.data.own import save_split_list
    from spanet.evaluation.diagnostics import domain_note, write_diagnostics
    from spanet.features import model_info
    from spanet.run_dir import FEATURES_FILE, RANKED_DIR, write_metrics

    out_dir = Path(out_dir)
    device = resolve_device(options.device)
    model, state = load_model(checkpoint, map_location=device)
    input_size = checkpoint_input_size(state, path=checkpoint)
    require_valid_queries(dataset)
    precision = options.precision(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    options = replace(options, device=device, amp=precision)
    features = extract_feature_set(model, dataset, input_size=input_size, options=options)
    result = score_features(features, metric=metric, rerank=rerank, rerank_power=rerank_power,
                            keep_distances=outputs.visualize > 0, progress=options.progress)  # fmt: skip
    note = domain_note(state, dataset=dataset.name, root=dataset.root)
    diagnostics = write_diagnostics(
        features, out_dir=out_dir, metric=metric, verification=outputs.verification,
        worst=outputs.visualize_queries if outputs.visualize > 0 else 0, top_k=max(outputs.visualize, 1),
        embedding=outputs.embedding,
    )  # fmt: skip
    metrics = {**result.to_metrics_file(), **diagnostics}
    source = {"checkpoint": str(checkpoint), "dataset": dataset.name, "flip": options.flip, "kind": options.kind,
              "rerank_power": rerank_power if rerank else None, "amp": precision.amp, "cross_domain": note}  # fmt: skip
    metrics_path = write_metrics(out_dir, metrics, source=source)
    info = model_info(model, model_args=state["model_args"], input_size=input_size, kind=options.kind,
                      checkpoint=checkpoint)  # fmt: skip
    features_path = features.save(out_dir / FEATURES_FILE, info=info)
    ranked: list[Path] = []
    if outputs.visualize > 0:
        from spanet.viz.figures import draw_ranked_lists

        ranked = draw_ranked_lists(
            result.distances, features.query, features.gallery, out_dir=out_dir / RANKED_DIR,
            top_k=outputs.visualize, num_queries=outputs.visualize_queries, seed=0,
        )  # fmt: skip
    return CheckpointEvaluation(
        result=result, features=features, metrics=metrics, domain_note=note, metrics_path=metrics_path,
        features_path=features_path, ranked=tuple(ranked), split_path=save_split_list(dataset, out_dir),
    )  # fmt: skip
