"""Evaluation that explains itself: per-query results and a camera-pair matrix of rank-1 / mAP.

An average hides where a model fails. Per query we keep its AP, the rank of its first and of its hardest true match;
per (query camera, gallery camera) pair the rank-1 and mAP of those queries against that camera's gallery only, so a
camera with a colour cast or a bad viewpoint shows up as a dark row at a glance. Both follow the ranking protocol
of `spanet.evaluation.metrics` (same identity + same camera left out under `cross-camera`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spanet.data.protocol import sample_ids
from spanet.errors import SpanetError
from spanet.evaluation.metrics import rank_metrics

__all__ = ["per_query_results", "write_per_query_results", "worst_queries", "camera_pair_matrix"]

_ROWS_PER_CHUNK = 256


def per_query_results(
    distances: np.ndarray, query: Sequence[Any], gallery: Sequence[Any], *, cross_camera: bool = True
) -> list[dict[str, Any]]:
    """One record per query: path, pid, camid, AP, rank of the first and of the hardest true match (None if none)."""
    q_pids, q_cams = sample_ids(query)
    g_pids, g_cams = sample_ids(gallery)
    records = []
    for start in range(0, len(query), _ROWS_PER_CHUNK):
        block = distances[start : start + _ROWS_PER_CHUNK]
        order = np.argsort(block, axis=1, kind="stable")  # (R, G) nearest first; ties keep gallery order
        same_id = g_pids[order] == q_pids[start : start + len(block), None]
        same_cam = g_cams[order] == q_cams[start : start + len(block), None]
        junk = same_id & same_cam if cross_camera else np.zeros_like(same_id)
        positive = same_id & ~junk
        rank = np.cumsum(~junk, axis=1)  # protocol rank of every kept entry
        hits = np.cumsum(positive, axis=1)
        num_rel = positive.sum(axis=1)
        ap = np.where(positive, hits / np.maximum(rank, 1), 0.0).sum(axis=1) / np.maximum(num_rel, 1)
        for row in range(len(block)):
            q = query[start + row]
            found = np.flatnonzero(positive[row])
            record: dict[str, Any] = {"path": str(q.path), "pid": int(q.pid), "camid": int(q.camid)}
            if found.size:
                hardest = int(order[row, found[-1]])
                record.update(ap=float(ap[row]), first_match_rank=int(rank[row, found[0]]),
                              hardest_match_rank=int(rank[row, found[-1]]),
                              hardest_match_path=str(gallery[hardest].path))  # fmt: skip
            else:
                record.update(ap=None, first_match_rank=None, hardest_match_rank=None, hardest_match_path=None)
            records.append(record)
    return records


def write_per_query_results(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """CSV, one row per query (empty cells for queries without a true match)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ("path", "pid", "camid", "ap", "first_match_rank", "hardest_match_rank", "hardest_match_path")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({key: "" if record[key] is None else record[key] for key in columns})
    return path


def worst_queries(records: Sequence[dict[str, Any]], count: int) -> list[int]:
    """Indices of the `count` scored queries with the lowest AP (ties: earlier query first)."""
    scored = [i for i, r in enumerate(records) if r["ap"] is not None]
    return sorted(scored, key=lambda i: (records[i]["ap"], i))[:count]


def camera_pair_matrix(
    distances: np.ndarray, query: Sequence[Any], gallery: Sequence[Any], *, cross_camera: bool = True
) -> dict[str, Any] | None:
    """Rank-1 and mAP per (query camera, gallery camera), None where no query has a true match; None without cameras.

    Cell (i, j) ranks camera i's queries against camera j's gallery images only. Under `cross-camera` the diagonal
    is empty by construction (every same-camera true match is left out).
    """
    if not cross_camera:
        return None
    q_pids, q_cams = sample_ids(query)
    g_pids, g_cams = sample_ids(gallery)
    cameras = sorted(set(q_cams.tolist()) | set(g_cams.tolist()))
    if len(cameras) < 2:
        return None
    size = len(cameras)
    rank1: list[list[float | None]] = [[None] * size for _ in range(size)]
    mean_ap: list[list[float | None]] = [[None] * size for _ in range(size)]
    queries: list[list[int]] = [[0] * size for _ in range(size)]
    for i, qc in enumerate(cameras):
        rows = np.flatnonzero(q_cams == qc)
        for j, gc in enumerate(cameras):
            cols = np.flatnonzero(g_cams == gc)
            if rows.size == 0 or cols.size == 0:
                continue
            try:
                metrics = rank_metrics(distances[np.ix_(rows, cols)], q_pids[rows], g_pids[cols], q_cams[rows],
                                       g_cams[cols], max_rank=1)  # fmt: skip
            except SpanetError:  # no query of camera i has a true match in camera j
                continue
            rank1[i][j], mean_ap[i][j] = metrics.rank(1), metrics.mAP
            queries[i][j] = metrics.num_valid_queries
    return {"cameras": [int(c) for c in cameras], "rank1": rank1, "mAP": mean_ap, "queries": queries,
            "worst_query_camera": _worst_row(cameras, mean_ap)}  # fmt: skip


def _worst_row(cameras: Sequence[int], values: list[list[float | None]]) -> int | None:
    """The query camera whose filled cells have the lowest mean (None when no row has a value)."""
    means = {c: np.mean([v for v in row if v is not None]) for c, row in zip(cameras, values) if any(v is not None for v in row)}
    return int(min(means, key=means.get)) if means else None
