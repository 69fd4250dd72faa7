"""Figures a person looks at: CAM grids, ranked retrieval lists, search results, CMC and training curves.

Everything is drawn with matplotlib's Agg backend into PNG files, so it works on a headless machine and inside
tests. The functions take plain values (arrays, samples, dicts) and return the paths they wrote; computing CAMs
lives in `spanet.viz.cam`, the HTML page in `spanet.viz.report`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from spanet.errors import SpanetError  # noqa: E402

__all__ = [
    "CamRow",
    "MATCH_COLORS",
    "draw_cam_grid",
    "draw_ranked_lists",
    "draw_matches",
    "plot_cmc",
    "plot_training_curves",
    "save_figure",
]

# Border colours of a ranked list: true match, false match, junk (same id and camera: excluded by the protocol).
MATCH_COLORS = {"true": (34, 160, 60), "false": (210, 40, 40), "junk": (150, 150, 150)}
_DISPLAY_SIZE = (64, 128)  # (W, H) of one thumbnail in a ranked list


def save_figure(fig: plt.Figure, out_path: str | Path) -> Path:
    """Write `fig` as a PNG at 100 dpi (creating the folder) and close it."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


@dataclass(frozen=True)
class CamRow:
    """One row of a CAM grid: a label (e.g. "stage 2") and one map per CAM column (None: not available)."""

    label: str
    cams: tuple[np.ndarray | None, ...]
    notes: tuple[str, ...] = ()


def _overlay(ax: plt.Axes, image: np.ndarray, cam: np.ndarray | None, *, alpha: float) -> None:
    ax.imshow(image)
    if cam is not None:
        # maps arrive scaled to [0, 1] by `spanet.viz.cam.normalise` (positive part / maximum); a fixed colour
        # range keeps the columns of one figure comparable
        ax.imshow(cam, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0, interpolation="bilinear")
    else:
        ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, color="white",
                bbox={"facecolor": "black", "alpha": 0.6})
    ax.set_xticks([])
    ax.set_yticks([])


def draw_cam_grid(
    image: np.ndarray,
    rows: Sequence[CamRow],
    *,
    column_titles: Sequence[str],
    out_path: str | Path,
    title: str = "",
    alpha: float = 0.5,
) -> Path:
    """Save one figure like the paper's Fig. 5/6: rows = stages, columns = original | one overlay per CAM column.

    `image` is (H, W, 3) uint8 at the model's input size; every CAM is (H, W) in [0, 1] (upsampled, normalised).
    Each row's `notes` (e.g. spread measures) are written under its overlays.
    """
    if not rows:
        raise SpanetError("draw_cam_grid: no stages to draw; pass at least one stage")
    num_cols = 1 + len(column_titles)
    height, width = image.shape[:2]
    cell_w = 1.35
    cell_h = cell_w * height / width + 0.3
    fig_h = cell_h * len(rows) + (0.75 if title else 0.35)
    fig, axes = plt.subplots(len(rows), num_cols, figsize=(cell_w * num_cols + 0.6, fig_h), squeeze=False)
    for r, row in enumerate(rows):
        if len(row.cams) != len(column_titles):
            plt.close(fig)
            raise SpanetError(f"draw_cam_grid: row {row.label!r} has {len(row.cams)} maps for "
                              f"{len(column_titles)} columns")
        axes[r][0].imshow(image)
        axes[r][0].set_xticks([])
        axes[r][0].set_yticks([])
        axes[r][0].set_ylabel(row.label, fontsize=9)
        for c, cam in enumerate(row.cams):
            ax = axes[r][c + 1]
            _overlay(ax, image, cam, alpha=alpha)
            if c < len(row.notes) and row.notes[c]:
                ax.set_xlabel(row.notes[c], fontsize=7)
    for c, name in enumerate(["original", *column_titles]):
        axes[0][c].set_title(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig_h) if title else None, h_pad=0.4, w_pad=0.2)
    return save_figure(fig, out_path)


def _thumbnail(path: str, color: tuple[int, int, int], border: int) -> np.ndarray:
    from spanet.data.images import read_image

    image = read_image(path).resize(_DISPLAY_SIZE, Image.BILINEAR)
    return np.asarray(ImageOps.expand(image, border=border, fill=color))


def draw_ranked_lists(
    distmat: np.ndarray,
    query: Sequence,
    gallery: Sequence,
    *,
    out_dir: str | Path,
    top_k: int = 10,
    num_queries: int = 8,
    seed: int = 0,
    queries: Sequence[int] | None = None,
) -> list[Path]:
    """Save, for `num_queries` seeded random queries (or the given `queries`), the query and its top-K gallery
    images, one PNG each.

    `query`/`gallery` are sequences of `Sample(path, pid, camid)` matching the rows/columns of `distmat`. Borders:
    green = true match, red = false match, grey = junk (same id and same camera as the query, which the
    evaluation protocol removes from the ranking; shown here so the reader sees what was skipped). The label under
    each image is its rank within the protocol (junk has none) and its distance.
    """
    distmat = np.asarray(distmat)
    if distmat.shape != (len(query), len(gallery)):
        raise SpanetError(f"draw_ranked_lists: distance matrix is {distmat.shape} but there are {len(query)} queries "
                          f"and {len(gallery)} gallery images")
    if top_k < 1 or num_queries < 1:
        raise SpanetError("draw_ranked_lists: top_k and num_queries must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(query) == 0 or len(gallery) == 0:
        return []
    rng = np.random.default_rng(seed)
    chosen = (np.sort(rng.choice(len(query), size=min(num_queries, len(query)), replace=False))
              if queries is None else np.asarray(queries, dtype=np.int64))
    g_pids = np.array([g.pid for g in gallery])
    g_camids = np.array([g.camid for g in gallery])
    k = min(top_k, len(gallery))
    paths = []
    for qi in chosen:
        q = query[int(qi)]
        order = np.argsort(distmat[qi], kind="stable")[:k]
        fig, axes = plt.subplots(1, k + 1, figsize=(1.05 * (k + 1), 2.9), squeeze=False)
        axes = axes[0]
        axes[0].imshow(_thumbnail(q.path, (40, 90, 200), 4))
        axes[0].set_title("query", fontsize=8)
        axes[0].set_xlabel(f"id {q.pid}\ncam {q.camid}", fontsize=7)
        protocol_rank = 0
        for j, gi in enumerate(order):
            junk = g_pids[gi] == q.pid and g_camids[gi] == q.camid
            kind = "junk" if junk else ("true" if g_pids[gi] == q.pid else "false")
            if not junk:
                protocol_rank += 1
            ax = axes[j + 1]
            ax.imshow(_thumbnail(gallery[int(gi)].path, MATCH_COLORS[kind], 5))
            head = "junk" if junk else f"#{protocol_rank}"
            ax.set_title(head, fontsize=8, color=np.array(MATCH_COLORS[kind]) / 255)
            ax.set_xlabel(f"d={distmat[qi, gi]:.3g}\nid {g_pids[gi]} c{g_camids[gi]}", fontsize=7)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        fig.suptitle(f"query {int(qi)}: {Path(q.path).name}  (green = same id, red = other id, "
                     "grey = junk: same id & camera, excluded)", fontsize=7)
        fig.tight_layout()
        paths.append(save_figure(fig, out / f"ranked_q{int(qi):05d}.png"))
    return paths


def draw_matches(
    query_path: str, matches: Sequence[Any], *, out_path: str | Path, thumb: tuple[int, int] = (64, 128),
    threshold: float | None = None,
) -> Path:
    """Save one PNG for a gallery search (matches with `path`, `distance`): the query (blue frame) then its matches left to right, each labelled with rank and distance.

    With a `threshold`, matches farther than it get a red frame and the label "unknown".

    A gallery image that can no longer be read is drawn as a grey tile, so a moved file does not stop the picture.
    """
    from PIL import ImageDraw

    from spanet.data.images import read_image

    width, height = thumb
    pad, label = 6, 28
    canvas = Image.new("RGB", ((len(matches) + 1) * (width + pad) + pad, height + 2 * pad + label), "white")
    draw = ImageDraw.Draw(canvas)
    tiles = [(query_path, "query", (40, 90, 200))]
    for rank, m in enumerate(matches, start=1):
        unknown = threshold is not None and m.distance > threshold
        tiles.append((m.path, f"#{rank} d={m.distance:.3g}" + (" unknown" if unknown else ""),
                      MATCH_COLORS["false"] if unknown else (120, 120, 120)))
    for column, (path, text, colour) in enumerate(tiles):
        left = pad + column * (width + pad)
        try:
            tile = read_image(path).resize((width, height))
        except SpanetError:
            tile = Image.new("RGB", (width, height), (200, 200, 200))
            text += " (missing)"
        canvas.paste(tile, (left, pad))
        draw.rectangle([left - 2, pad - 2, left + width + 1, pad + height + 1], outline=colour, width=2)
        draw.text((left, pad + height + 4), text, fill=(0, 0, 0))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_path)
    return out_path


def _as_percent(values: np.ndarray) -> np.ndarray:
    """Metrics may be stored as fractions (0..1) or percentages; plots always show percentages."""
    return values * 100.0 if values.size and values.max() <= 1.0 else values


def plot_cmc(curves: Mapping[str, Sequence[float]], *, out_path: str | Path, max_rank: int = 50) -> Path:
    """Plot CMC curves (name -> values for ranks 1..N, as fractions or percentages) into one PNG."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    drawn = 0
    for name, values in curves.items():
        values = np.asarray(values, dtype=float)[:max_rank]
        if values.size == 0:
            continue
        values = _as_percent(values)
        ax.plot(np.arange(1, values.size + 1), values, marker="o" if values.size <= 20 else None, ms=3, label=name)
        drawn += 1
    if drawn == 0:
        plt.close(fig)
        raise SpanetError("plot_cmc: no CMC values to plot")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title("CMC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_path)


def _series(records: Sequence[Mapping], key: str, x_key: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r[x_key], r[key]) for r in records
             if isinstance(r.get(key), (int, float)) and isinstance(r.get(x_key), (int, float))]
    if not pairs:
        return np.empty(0), np.empty(0)
    x, y = zip(*pairs)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def plot_training_curves(records: Sequence[Mapping], *, out_dir: str | Path) -> dict[str, Path]:
    """Draw the training curves a log holds: losses (total and per head), learning rate, rank-1/mAP per epoch.

    `records` are log.jsonl lines (dicts with "type" step|epoch|eval|attention). Per-step records are preferred for losses
    and lr (x = global step) when present, otherwise per-epoch ones (x = epoch). Returns name -> PNG for the curves
    that had data ("losses", "lr", "eval", "attention"); a log without some kind of record just yields fewer figures.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = [r for r in records if r.get("type") == "step"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    evals = [r for r in records if r.get("type") in ("val", "eval")]  # "eval": logs from before the val split
    source, x_key = (steps, "step") if steps else (epochs, "epoch")
    written: dict[str, Path] = {}

    term_names = sorted({name for r in source for name in (r.get("terms") or {})})
    x, total = _series(source, "loss", x_key)
    if total.size or term_names:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        if total.size:
            ax.plot(x, total, color="black", lw=1.6, label="total loss")
        for name in term_names:
            flat = [{x_key: r.get(x_key), "v": (r.get("terms") or {}).get(name)} for r in source]
            tx, ty = _series(flat, "v", x_key)
            ax.plot(tx, ty, lw=0.9, alpha=0.85, label=name)
        ax.set_xlabel(x_key)
        ax.set_ylabel("loss")
        ax.set_title("training losses (per head)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        written["losses"] = save_figure(fig, out / "losses.png")

    x, lr = _series(source, "lr", x_key)
    if lr.size:
        fig, ax = plt.subplots(figsize=(5.5, 3.0))
        ax.plot(x, lr, color="tab:purple")
        ax.set_xlabel(x_key)
        ax.set_ylabel("learning rate")
        ax.set_title("learning rate")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written["lr"] = save_figure(fig, out / "lr.png")

    drawn = False
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for key, label in (("rank1", "rank-1"), ("mAP", "mAP")):
        ex, ey = _series(evals, key, "epoch")
        if ey.size:
            ax.plot(ex, _as_percent(ey), marker="o", ms=3, label=label)
            drawn = True
    if drawn:
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.set_title("validation during training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written["eval"] = save_figure(fig, out / "eval.png")
    plt.close(fig)
    spread = [{"epoch": r.get("epoch"), **r["attention"]} for r in records if isinstance(r.get("attention"), Mapping)]
    _plot_attention_spread(spread, out=out, written=written)
    return written


def _plot_attention_spread(records: Sequence[Mapping], *, out: Path, written: dict[str, Path]) -> None:
    """Per SA layer, the effective fraction of attended positions per epoch (1 = uniform, ~0 = one position)."""
    layers = sorted({name for r in records for name, v in r.items() if isinstance(v, Mapping) and "fraction" in v})
    if not layers:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name in layers:
        flat = [{"epoch": r.get("epoch"), "v": (r.get(name) or {}).get("fraction")} for r in records]
        x, y = _series(flat, "v", "epoch")
        ax.plot(x, y, marker="o", ms=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("effective positions / (H·W)")
    ax.set_title("attention spread per SA layer (1 = uniform)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    written["attention"] = save_figure(fig, out / "attention.png")
