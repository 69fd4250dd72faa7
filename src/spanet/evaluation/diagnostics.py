"""Diagnostics: what `spanet evaluate` adds to the plain metrics (per-query results, camera pairs, worst queries,
verification). Not to be confused with the search page's "explain" (activation maps of a match, `deploy/service.py`).

All of it uses the plain (not re-ranked) distances, the ones a deployed search sees, so thresholds found here mean
the same as in `spanet search --threshold`. Files written into the evaluation folder: `per_query.csv`,
`analysis/camera_pairs.png`, `analysis/distances.png` (with verification), `analysis/embedding.png` (with
`embedding`, needs scikit-learn) and `worst/*.png` (with `worst` > 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spanet.data.protocol import CROSS_CAMERA
from spanet.evaluation.analysis import camera_pair_matrix, per_query_results, worst_queries, write_per_query_results
from spanet.evaluation.distance import pairwise_distances
from spanet.evaluation.verification import open_set_identification, pair_distances, verification_metrics
from spanet.run_dir import ANALYSIS_DIR, PER_QUERY_FILE, WORST_DIR

if TYPE_CHECKING:  # evaluate.evaluate_checkpoint calls this module: the type only, no import back at run time
    from spanet.evaluation.evaluate import FeatureSet

__all__ = ["PER_QUERY_FILE", "write_diagnostics", "domain_note", "format_verification"]



def write_diagnostics(
    features: FeatureSet, *, out_dir: str | Path, metric: str = "euclidean", verification: bool = False,
    worst: int = 0, top_k: int = 10, embedding: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Write the per-query file and figures into `out_dir`; return the additions to metrics.json."""
    out_dir = Path(out_dir)
    cross = features.protocol == CROSS_CAMERA
    distances = pairwise_distances(features.query_features, features.gallery_features, metric=metric)
    records = per_query_results(distances, features.query, features.gallery, cross_camera=cross)
    write_per_query_results(records, out_dir / PER_QUERY_FILE)
    extra: dict[str, Any] = {"per_query_file": PER_QUERY_FILE}
    matrix = camera_pair_matrix(distances, features.query, features.gallery, cross_camera=cross)
    extra["camera_pairs"] = matrix
    if matrix is not None:
        from spanet.viz.analysis import plot_camera_pairs

        plot_camera_pairs(matrix, out_path=out_dir / ANALYSIS_DIR / "camera_pairs.png")
    if verification:
        extra["verification"] = _verification(features, distances, metric=metric, cross_camera=cross)
        from spanet.viz.analysis import plot_distance_histograms

        plot_distance_histograms(extra["verification"], out_path=out_dir / ANALYSIS_DIR / "distances.png")
    if worst > 0:
        from spanet.viz.figures import draw_ranked_lists

        chosen = worst_queries(records, worst)
        draw_ranked_lists(distances, features.query, features.gallery, out_dir=out_dir / WORST_DIR, top_k=top_k,
                          queries=chosen)  # fmt: skip
        extra["worst_queries"] = [{"index": i, **records[i]} for i in chosen]
    if embedding:
        from spanet.viz.analysis import plot_embedding

        g_pids, _ = _ids(features.gallery)
        plot_embedding(features.gallery_features, g_pids, out_path=out_dir / ANALYSIS_DIR / "embedding.png")
    return extra


def domain_note(checkpoint: dict[str, Any], *, dataset: str, root: Path) -> str | None:
    """"cross-domain: …" when the checkpoint was trained on another dataset or folder than the one evaluated."""
    data = (checkpoint.get("config") or {}).get("data") or {}
    trained_on, trained_root = checkpoint.get("dataset") or data.get("dataset"), data.get("root")
    if not trained_on:
        return None
    same_root = trained_root is None or Path(trained_root).expanduser().resolve() == Path(root).resolve()
    if trained_on == dataset and same_root:
        return None
    where = f" at {trained_root}" if trained_root else ""
    return f"cross-domain: trained on {trained_on}{where}, evaluated on {dataset} at {root}"


def format_verification(result: dict[str, Any]) -> str:
    """The verification and open-set rows of the evaluation table."""
    pairs = result["pairs"]
    lines = [f"verification ({pairs['positive']} same-person / {pairs['negative']} different-person pairs, "
             f"ROC AUC {100 * result['auc']:.2f}):"]  # fmt: skip
    for row in result["at_fpr"]:
        note = "" if row["resolved"] else " (too few negative pairs to resolve this rate)"
        lines.append(f"  TPR@FPR={row['fpr_target']:g}: {100 * row['tpr']:6.2f}%  threshold {row['threshold']:.4g}{note}")
    open_set = result["open_set"]
    lines.append(f"open-set identification ({open_set['held_out_identities']} identities held out: "
                 f"{open_set['non_mated_searches']} non-mated / {open_set['mated_searches']} mated searches, "
                 f"gallery {open_set['gallery_images']} images):")  # fmt: skip
    for row in open_set["at_fpir"]:
        value = "-" if row["dir"] is None else f"{100 * row['dir']:6.2f}%"
        lines.append(f"  DIR@FPIR={row['fpir_target']:g}: {value}  threshold {row['threshold']:.4g}")
    return "\n".join(lines)


def _verification(features: FeatureSet, distances: np.ndarray, *, metric: str, cross_camera: bool) -> dict[str, Any]:
    q_pids, q_cams = _ids(features.query)
    g_pids, g_cams = _ids(features.gallery)
    positives, negatives = pair_distances(distances, q_pids, g_pids, q_cams, g_cams, cross_camera=cross_camera)
    result = verification_metrics(positives, negatives)
    result["metric"] = metric
    result["open_set"] = open_set_identification(distances, q_pids, g_pids, q_cams, g_cams, cross_camera=cross_camera)
    return result


def _ids(samples: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.array([s.pid for s in samples], dtype=np.int64), np.array([s.camid for s in samples], dtype=np.int64)
