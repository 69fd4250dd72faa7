"""Figures of an evaluation's analysis: camera-pair matrix, positive / negative distance histograms, t-SNE scatter.

They take the plain dicts that `spanet.evaluation.analysis` and `spanet.evaluation.verification` put into
metrics.json, so a report can redraw them from the file alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spanet.viz.figures import save_figure  # noqa: E402

__all__ = ["plot_camera_pairs", "plot_distance_histograms", "plot_embedding"]


def plot_camera_pairs(matrix: Mapping[str, Any], *, out_path: str | Path) -> Path:
    """Rank-1 and mAP heat maps, query camera × gallery camera (empty cells: no query with a true match there)."""
    cameras = [f"c{c}" for c in matrix["cameras"]]
    fig, axes = plt.subplots(1, 2, figsize=(2.2 + 1.1 * len(cameras), 0.9 + 0.5 * len(cameras)), squeeze=False)
    for ax, key in zip(axes[0], ("rank1", "mAP")):
        values = np.array([[np.nan if v is None else 100 * v for v in row] for row in matrix[key]], dtype=float)
        ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 60 else "black")
        ax.set_xticks(range(len(cameras)), cameras, fontsize=7)
        ax.set_yticks(range(len(cameras)), cameras, fontsize=7)
        ax.set_xlabel("gallery camera", fontsize=8)
        ax.set_ylabel("query camera", fontsize=8)
        ax.set_title(f"{'rank-1' if key == 'rank1' else key} (%)", fontsize=9)
    worst = matrix.get("worst_query_camera")
    if worst is not None:
        fig.suptitle(f"worst query camera: c{worst}", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_path)


def plot_distance_histograms(verification: Mapping[str, Any], *, out_path: str | Path) -> Path:
    """Same-person and different-person distance histograms (normalised) with the thresholds at FPR 1e-4..1e-2."""
    hist = verification["histogram"]
    edges = np.asarray(hist["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for key, colour in (("positive", "tab:green"), ("negative", "tab:red")):
        counts = np.asarray(hist[key], dtype=float)
        ax.bar(centres, counts / max(counts.sum(), 1), width=width, alpha=0.5, color=colour,
               label=f"{'same' if key == 'positive' else 'different'} person ({verification['pairs'][key]} pairs)")
    for row in verification["at_fpr"]:
        if np.isfinite(row["threshold"]):
            ax.axvline(row["threshold"], color="black", lw=0.8, ls=":")
            ax.text(row["threshold"], ax.get_ylim()[1] * 0.95, f"FPR {row['fpr_target']:g}", rotation=90,
                    fontsize=6, va="top", ha="right")
    ax.set_xlabel(f"{verification.get('metric', 'euclidean')} distance")
    ax.set_ylabel("fraction of pairs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_path)


def plot_embedding(
    features: np.ndarray, pids: np.ndarray, *, out_path: str | Path, max_identities: int = 20, seed: int = 0
) -> Path:
    """t-SNE (scikit-learn) of the images of up to `max_identities` seeded random identities, one colour each.

    Well-separated clusters mean the embedding tells these people apart; a cluster split in two is often one
    person seen by two very different cameras.
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        from spanet.errors import SpanetError

        raise SpanetError("the embedding scatter needs scikit-learn: pip install 'spanet[analysis]'") from None
    pids = np.asarray(pids)
    ids = np.unique(pids)
    chosen = np.random.default_rng(seed).permutation(ids)[:max_identities]
    rows = np.flatnonzero(np.isin(pids, chosen))
    if rows.size < 3:
        from spanet.errors import SpanetError

        raise SpanetError(f"an embedding scatter needs at least 3 images, got {rows.size}")
    tsne = TSNE(n_components=2, perplexity=float(min(30, rows.size - 1)), init="pca", random_state=seed)
    points = tsne.fit_transform(np.asarray(features, dtype=np.float32)[rows])  # (N, D) -> (N, 2)
    fig, ax = plt.subplots(figsize=(5.0, 4.2))
    colours = plt.get_cmap("tab20")
    for number, pid in enumerate(chosen):
        mine = pids[rows] == pid
        ax.scatter(points[mine, 0], points[mine, 1], s=12, color=colours(number % 20), label=str(pid))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {rows.size} gallery images, {len(chosen)} identities", fontsize=9)
    if len(chosen) <= 20:
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5), title="id", title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_path)
