"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) with sparse sets: same output as the reference, far less memory.

The reference (the authors' distance-matrix version, also torchreid's `re_ranking`) stacks the (q+g)×(q+g) distance
matrix D, squares it, divides each column by its maximum and transposes, so row i of its "original distance" is
column i of D² over that column's maximum. It ranks every row, keeps the k1-reciprocal neighbours of EVERY row
(queries and gallery), adds a reciprocal neighbour's own round(k1/2)-reciprocal set when more than 2/3 of that set
lies in the first set, weights the members by exp(−distance) normalised to sum 1 (V), averages V over the k2 nearest
rows (query expansion), and returns `(1−λ)·Jaccard(V_query, V_gallery) + λ·original` for query × gallery.

Everything but the first step touches only a few dozen entries per row, so here:
- one pass over row chunks computes the column maxima, each row's k nearest (top-k with exact index tie-breaking)
  and keeps the query×gallery block of the normalised distances (the only dense output);
- reciprocal sets, expansion, weights and query expansion are scipy.sparse products over those neighbour lists;
- the Jaccard numerator Σ_l min(V[q,l], V[g,l]) is summed over the pairs that share a nonzero, found through the
  gallery's column index (the reference's inverted index), in bounded blocks.
Only the inputs are N×N. `k_reciprocal_rerank_features` computes distance rows from features on the fly, so nothing
N×N exists at all. Ties in distance are ordered by index (the reference's quicksort leaves them unspecified).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import scipy.sparse as sp

from spanet.errors import SpanetError

if TYPE_CHECKING:
    import torch

__all__ = ["k_reciprocal_rerank", "k_reciprocal_rerank_features", "k_reciprocal_jaccard"]

# (query, gallery) pairs sharing a nonzero that are expanded at once (~50 bytes each).
_PAIR_BUDGET = 2_000_000


class _RowSource(Protocol):
    num_query: int
    num_gallery: int

    def squared_rows(self, start: int, stop: int) -> np.ndarray:
        """float32 (stop-start, N): row i is column i of D, squared (the reference's order of operations)."""

    def squared_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 D[cols, rows]² elementwise (entry (i, l) of the transposed squared matrix)."""


def k_reciprocal_rerank(
    q_g: np.ndarray,
    q_q: np.ndarray,
    g_g: np.ndarray,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    power: int = 2,
    chunk_size: int = 256,
) -> np.ndarray:
    """Re-ranked (num_query, num_gallery) float32 distances from the three distance blocks (see module docstring).

    `power`: 2 squares the given distances first, as the reference and torchreid do; 1 uses them as given, as the
    official SPANet code's feature re-ranking does with its squared Euclidean distances."""
    q_g, q_q, g_g = np.asarray(q_g), np.asarray(q_q), np.asarray(g_g)
    if q_g.ndim != 2 or q_q.shape != (q_g.shape[0],) * 2 or g_g.shape != (q_g.shape[1],) * 2:
        raise SpanetError(
            f"re-ranking needs q_g (Q, G), q_q (Q, Q), g_g (G, G); got {q_g.shape}, {q_q.shape}, {g_g.shape}"
        )
    for name, block in (("q_g", q_g), ("q_q", q_q), ("g_g", g_g)):
        if block.size and not np.isfinite(block.min() + block.max()):
            raise SpanetError(f"re-ranking: the {name} distances hold NaN or inf; check the features")
    source = _MatrixSource(q_g, q_q, g_g, power=_check_power(power))
    return _rerank(source, k1=k1, k2=k2, lambda_value=lambda_value, chunk_size=chunk_size, progress=False)


def k_reciprocal_rerank_features(
    query_features: np.ndarray | torch.Tensor,
    gallery_features: np.ndarray | torch.Tensor,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    power: int = 2,
    chunk_size: int = 1024,
    progress: bool = False,
) -> np.ndarray:
    """Re-ranking from features: equals `k_reciprocal_rerank` on `pairwise_distances` of the same features (up to
    float rounding), but computes distance rows in chunks (exact k-NN by matrix products) and never holds N×N."""
    import torch  # the matrix entry point works without torch (its import alone costs ~0.5 GiB of RSS)

    query = torch.as_tensor(query_features).detach().cpu().float()
    gallery = torch.as_tensor(gallery_features).detach().cpu().float()
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise SpanetError(
            f"re-ranking needs (Q, D) and (G, D) features, got {tuple(query.shape)} and {tuple(gallery.shape)}"
        )
    if not (torch.isfinite(query).all() and torch.isfinite(gallery).all()):
        raise SpanetError("re-ranking: the features hold NaN or inf; check the model weights")
    source = _FeatureSource(query, gallery, metric=metric, power=_check_power(power))
    return _rerank(source, k1=k1, k2=k2, lambda_value=lambda_value, chunk_size=chunk_size, progress=progress)


def _rerank(
    source: _RowSource, *, k1: int, k2: int, lambda_value: float, chunk_size: int, progress: bool
) -> np.ndarray:
    if k1 < 1 or k2 < 1:
        raise SpanetError(f"re-ranking needs k1 >= 1 and k2 >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise SpanetError(f"re-ranking lambda_value must be in [0, 1], got {lambda_value}")
    num_q, num_g = source.num_query, source.num_gallery
    out = np.empty((num_q, num_g), dtype=np.float32)  # first the normalised distances, at the end the result
    weights = _expanded_weights(source, k1=k1, k2=k2, out=out, chunk_size=chunk_size, progress=progress)
    query_part, gallery_part = weights[:num_q], weights[num_q:].tocsc()
    gallery_part.sort_indices()
    for start, stop in _pair_blocks(query_part, gallery_part, num_g):
        jaccard = _jaccard_block(query_part[start:stop], gallery_part, num_g)
        out[start:stop] = jaccard * (1 - lambda_value) + out[start:stop] * lambda_value
    return out


def k_reciprocal_jaccard(
    features: np.ndarray | torch.Tensor,
    *,
    k1: int = 30,
    k2: int = 6,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    chunk_size: int = 1024,
    progress: bool = False,
) -> np.ndarray:
    """(N, N) float32 Jaccard distances between the k-reciprocal sets of ONE set of features (no query/gallery
    split): what pseudo-label clustering runs DBSCAN on (Cluster Contrast, SpCL: k1=30, k2=6). The sets, weights and
    query expansion are exactly those of re-ranking (module docstring); the diagonal is 0."""
    import torch

    values = torch.as_tensor(features).detach().cpu().float()
    if values.ndim != 2 or len(values) < 2:
        raise SpanetError(
            f"the k-reciprocal Jaccard distance needs (N, D) features with N >= 2, got {tuple(values.shape)}"
        )
    if not torch.isfinite(values).all():
        raise SpanetError("k-reciprocal Jaccard: the features hold NaN or inf; check the model weights")
    if k1 < 1 or k2 < 1:
        raise SpanetError(f"the k-reciprocal Jaccard distance needs k1 >= 1 and k2 >= 1, got k1={k1}, k2={k2}")
    source = _FeatureSource(values, values[:0], metric=metric, power=2)  # every row a "query", no gallery
    n = len(values)
    weights = _expanded_weights(source, k1=k1, k2=k2, out=np.empty((n, 0), dtype=np.float32), chunk_size=chunk_size,
                                progress=progress)  # fmt: skip
    columns = weights.tocsc()
    columns.sort_indices()
    out = np.empty((n, n), dtype=np.float32)
    for start, stop in _pair_blocks(weights, columns, n):
        out[start:stop] = _jaccard_block(weights[start:stop], columns, n)
    np.fill_diagonal(out, 0.0)
    return np.maximum(out, out.T)  # symmetric up to float rounding; DBSCAN wants it exactly


def _expanded_weights(
    source: _RowSource, *, k1: int, k2: int, out: np.ndarray, chunk_size: int, progress: bool
) -> sp.csr_matrix:
    """V after query expansion, (N, N) sparse with sorted indices; `out` receives the query×gallery normalised
    distances of the scan."""
    n = source.num_query + source.num_gallery
    k_full = min(k1 + 1, n)
    k_half = min(int(np.around(k1 / 2.0)) + 1, n)  # numpy rounds halves to even, as the reference does
    k_qe = min(k2, n)
    nearest, col_max = _scan(source, num_nearest=max(k_full, k_qe), out=out, chunk_size=chunk_size, progress=progress)
    recip = _reciprocal_sets(nearest[:, :k_full])
    recip_half = _reciprocal_sets(nearest[:, :k_half])
    expansion = _expanded_sets(recip, recip_half)
    weights = _gaussian_weights(expansion, source, col_max)
    if k2 != 1:
        rows = np.repeat(np.arange(n), k_qe)
        average = sp.csr_matrix((np.ones(n * k_qe, dtype=np.float32), (rows, nearest[:, :k_qe].ravel())), shape=(n, n))
        weights = (average @ weights).tocsr()
        weights.data /= np.float32(k_qe)
    weights.sort_indices()
    return weights


def _jaccard_block(rows: sp.csr_matrix, columns: sp.csc_matrix, num_columns: int) -> np.ndarray:
    """1 − Σ min / Σ max between `rows` and every column set (Σ max = 2 − Σ min: each V row sums to 1)."""
    overlap = _min_overlap(rows, columns, num_columns).astype(np.float32)
    return np.float32(1.0) - overlap / (np.float32(2.0) - overlap)


def _check_power(power: int) -> int:
    if power not in (1, 2):
        raise SpanetError(f"re-ranking power must be 1 (distances as given) or 2 (squared, the reference), got {power}")
    return power


def _row_ranges(source: _RowSource, chunk_size: int) -> Iterator[tuple[int, int]]:
    """Chunks of rows that never straddle the query/gallery boundary."""
    for lo, hi in ((0, source.num_query), (source.num_query, source.num_query + source.num_gallery)):
        for start in range(lo, hi, chunk_size):
            yield start, min(start + chunk_size, hi)


def _scan(
    source: _RowSource, *, num_nearest: int, out: np.ndarray, chunk_size: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over all rows: column maxima, the `num_nearest` nearest per row, query×gallery block into `out`."""
    from tqdm.auto import tqdm

    num_q = source.num_query
    n = num_q + source.num_gallery
    nearest = np.empty((n, num_nearest), dtype=np.int64)
    col_max = np.empty(n, dtype=np.float32)
    ranges = list(_row_ranges(source, chunk_size))
    for start, stop in tqdm(ranges, desc="re-ranking: k-NN", unit="chunk", disable=not progress):
        squared = source.squared_rows(start, stop)  # (B, N)
        col_max[start:stop] = squared.max(axis=1)
        if not col_max[start:stop].all():
            raise SpanetError("re-ranking: an image is at distance 0 from every other image; the features collapsed")
        normalised = squared / col_max[start:stop, None]
        nearest[start:stop] = _smallest(normalised, num_nearest)
        if start < num_q:
            out[start:stop] = normalised[:, num_q:]
    return nearest, col_max


def _smallest(rows: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k smallest entries per row, ascending, ties by index; exact.

    The k-th smallest of every 8th column bounds the row's k-th smallest from above, so the entries at or under it
    (~8k per row) contain the answer; only those are sorted. Cheaper than a partition of the whole row.
    """
    num_rows, n = rows.shape
    if k >= n:
        return np.argsort(rows, axis=1, kind="stable")
    step = max(1, min(8, n // (4 * k)))
    bound = np.partition(rows[:, ::step], k - 1, axis=1)[:, k - 1]
    row, col = np.divmod(np.flatnonzero(rows <= bound[:, None]), n)  # at least k per row (1-D nonzero: 3× faster)
    order = np.lexsort((col, rows[row, col], row))  # by row, then value, then column
    row, col = row[order], col[order]
    first = np.searchsorted(row, np.arange(num_rows))
    return col[first[:, None] + np.arange(k)]


def _reciprocal_sets(nearest: np.ndarray) -> sp.csr_matrix:
    """R[i, j] = 1 when j is among i's nearest and i among j's (both lists include the point itself)."""
    n, k = nearest.shape
    forward = sp.csr_matrix((np.ones(n * k, dtype=np.int32), nearest.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    recip = forward.multiply(forward.T).tocsr()
    recip.eliminate_zeros()
    return recip


def _expanded_sets(recip: sp.csr_matrix, recip_half: sp.csr_matrix) -> sp.csr_matrix:
    """R(i) ∪ R½(c) for every c in R(i) whose half set has more than 2/3 of its members in R(i)."""
    shared = (recip @ recip_half.T).multiply(recip).tocsr()  # |R(i) ∩ R½(c)| at c ∈ R(i)
    shared.eliminate_zeros()
    half_size = np.diff(recip_half.indptr)
    accept = shared.data > (2.0 / 3) * half_size[shared.indices]  # the reference's float comparison
    chosen = sp.csr_matrix((np.ones(int(accept.sum()), dtype=np.int32),
                            (np.repeat(np.arange(shared.shape[0]), np.diff(shared.indptr))[accept],
                             shared.indices[accept])), shape=shared.shape)  # fmt: skip
    expansion = (recip + chosen @ recip_half).tocsr()
    expansion.data[:] = 1
    expansion.sort_indices()
    return expansion


def _gaussian_weights(expansion: sp.csr_matrix, source: _RowSource, col_max: np.ndarray) -> sp.csr_matrix:
    """V[i, j] = exp(−d(i, j)) / Σ_j exp(−d(i, j)) over i's expanded set, d the normalised squared distance."""
    n = expansion.shape[0]
    rows = np.repeat(np.arange(n), np.diff(expansion.indptr))
    distance = source.squared_at(rows, expansion.indices) / col_max[rows]
    weight = np.exp(-distance).astype(np.float32)
    total = np.bincount(rows, weights=weight, minlength=n)
    data = (weight / total[rows]).astype(np.float32)
    return sp.csr_matrix((data, expansion.indices.copy(), expansion.indptr.copy()), shape=expansion.shape)


def _pair_blocks(query_part: sp.csr_matrix, gallery_part: sp.csc_matrix, num_g: int) -> Iterator[tuple[int, int]]:
    """Query row ranges whose shared-nonzero pairs and dense output stay within budget."""
    per_entry = np.diff(gallery_part.indptr)[query_part.indices]
    rows = np.repeat(np.arange(query_part.shape[0]), np.diff(query_part.indptr))
    cost = np.bincount(rows, weights=per_entry, minlength=query_part.shape[0])
    max_rows = max(1, 4_000_000 // max(num_g, 1))  # (rows, G) float64 sums: 32 MB
    start = 0
    while start < query_part.shape[0]:
        running = np.cumsum(cost[start : start + max_rows])
        stop = start + max(1, int(np.searchsorted(running, _PAIR_BUDGET, side="right")))
        yield start, stop
        start = stop


def _min_overlap(query_rows: sp.csr_matrix, gallery_part: sp.csc_matrix, num_g: int) -> np.ndarray:
    """(B, G) float64: Σ_l min(V[q, l], V[g, l]) over the columns l where both are nonzero."""
    num_rows = query_rows.shape[0]
    entry_row = np.repeat(np.arange(num_rows), np.diff(query_rows.indptr))
    g_start = gallery_part.indptr[query_rows.indices]
    g_count = gallery_part.indptr[query_rows.indices + 1] - g_start
    entry = np.repeat(np.arange(len(g_count)), g_count)  # one per (query entry, gallery entry) sharing a column
    within = np.arange(len(entry)) - np.repeat(np.cumsum(g_count) - g_count, g_count)
    position = g_start[entry] + within
    smaller = np.minimum(query_rows.data[entry], gallery_part.data[position])
    key = entry_row[entry] * num_g + gallery_part.indices[position]
    return np.bincount(key, weights=smaller, minlength=num_rows * num_g).reshape(num_rows, num_g)


class _MatrixSource:
    """Rows of the reference's transposed, squared full matrix, read from the three blocks without stacking them."""

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, *, power: int = 2) -> None:
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.power = power
        self.num_query, self.num_gallery = q_g.shape
        self.dtype = np.result_type(q_g, q_q, g_g)

    def squared_rows(self, start: int, stop: int) -> np.ndarray:
        q = self.num_query
        raw = np.empty((stop - start, q + self.num_gallery), dtype=self.dtype)  # C order: rows are contiguous
        if stop <= q:  # column i of [[q_q, q_g], [q_g.T, g_g]] for a query i
            _transpose_into(raw[:, :q], self.q_q[:, start:stop])
            raw[:, q:] = self.q_g[start:stop]
        else:  # a gallery column
            _transpose_into(raw[:, :q], self.q_g[:, start - q : stop - q])
            _transpose_into(raw[:, q:], self.g_g[:, start - q : stop - q])
        if self.power == 2:
            np.square(raw, out=raw)
        return raw.astype(np.float32, copy=False)

    def squared_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        q = self.num_query
        value = np.empty(len(rows), dtype=self.dtype)
        row_q, col_q = rows < q, cols < q
        for mask, block, r, c in (
            (row_q & col_q, self.q_q, cols, rows),
            (~row_q & col_q, self.q_g, cols, rows - q),
            (row_q & ~col_q, self.q_g, rows, cols - q),
            (~row_q & ~col_q, self.g_g, cols - q, rows - q),
        ):
            value[mask] = block[r[mask], c[mask]]
        return np.power(value, self.power).astype(np.float32, copy=False)


def _transpose_into(out: np.ndarray, columns: np.ndarray, tile: int = 512) -> None:
    """out[:] = columns.T, in tiles that fit the cache (a direct strided copy is ~20× slower)."""
    for start in range(0, columns.shape[0], tile):
        out[:, start : start + tile] = columns[start : start + tile].T


class _FeatureSource:
    """Distance rows computed from features on demand (chunked matrix products); symmetric by construction."""

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, *, metric: str, power: int = 2) -> None:
        import torch

        from spanet.evaluation.distance import prepare

        self.metric = metric
        self.power = power
        self.num_query, self.num_gallery = len(query), len(gallery)
        self.prepared = prepare(torch.cat([query, gallery]), metric=metric)

    def _rows(self, index: slice | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        features, norms = self.prepared
        return features[index], (norms[index] if norms.numel() else norms)

    def squared_rows(self, start: int, stop: int) -> np.ndarray:
        import torch

        from spanet.evaluation.distance import distance_rows

        with torch.inference_mode():
            dist = distance_rows(self._rows(slice(start, stop)), self.prepared, metric=self.metric)
            return (dist.square_() if self.power == 2 else dist).numpy()

    def squared_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        import torch

        out = np.empty(len(rows), dtype=np.float32)
        step = 8192
        with torch.inference_mode():
            for start in range(0, len(rows), step):
                r = torch.from_numpy(rows[start : start + step])
                c = torch.from_numpy(np.ascontiguousarray(cols[start : start + step]))
                (fr, nr), (fc, nc) = self._rows(r), self._rows(c)
                dot = (fr * fc).sum(dim=1)
                if self.metric == "euclidean":
                    dist = (nr + nc - 2.0 * dot).clamp_min_(0.0)
                else:
                    dist = 1.0 - dot
                out[start : start + len(r)] = (dist.square_() if self.power == 2 else dist).numpy()
        return out
