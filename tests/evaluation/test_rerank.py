"""k-reciprocal re-ranking: a hand-checked case, a dense re-implementation of the reference, torchreid, invariants."""

from __future__ import annotations

import numpy as np
import pytest

from spanet.errors import SpanetError
from spanet.evaluation.distance import pairwise_distances
from spanet.evaluation.rerank import k_reciprocal_rerank, k_reciprocal_rerank_features


def dense_rerank(q_g, q_q, g_g, k1, k2, lambda_value, power=2):
    """The reference algorithm written densely and plainly (fine for small N; ties ordered by index)."""
    num_q = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    squared = np.power(full, power).astype(np.float32)
    original = (squared / squared.max(axis=0)).T  # row i: column i over its maximum
    n = len(original)
    rank = np.argsort(original, axis=1, kind="stable")

    def reciprocal(i, k):
        forward = rank[i, : k + 1]
        return np.array([j for j in forward if i in rank[j, : k + 1]], dtype=np.int64)

    V = np.zeros((n, n), dtype=np.float32)
    half = int(np.around(k1 / 2.0))
    for i in range(n):
        base = reciprocal(i, k1)
        members = set(base.tolist())
        for c in base:
            candidate = reciprocal(c, half)
            if len(np.intersect1d(candidate, base)) > 2.0 / 3 * len(candidate):
                members |= set(candidate.tolist())
        idx = np.array(sorted(members), dtype=np.int64)
        weight = np.exp(-original[i, idx])
        V[i, idx] = weight / weight.sum()
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.ones((num_q, n), dtype=np.float32)
    for i in range(num_q):
        overlap = np.minimum(V[i][None, :], V).sum(axis=1)
        jaccard[i] = 1 - overlap / (2 - overlap)
    final = jaccard * (1 - lambda_value) + original[:num_q] * lambda_value
    return final[:, num_q:]


def clustered_features(rng, num_q, num_g, num_ids, dim=16, noise=0.6):
    centers = rng.standard_normal((num_ids, dim))
    qf = centers[rng.integers(0, num_ids, num_q)] + noise * rng.standard_normal((num_q, dim))
    gf = centers[rng.integers(0, num_ids, num_g)] + noise * rng.standard_normal((num_g, dim))
    return qf.astype(np.float32), gf.astype(np.float32)


def blocks(qf, gf):
    return pairwise_distances(qf, gf), pairwise_distances(qf, qf), pairwise_distances(gf, gf)


def test_hand_checked_three_points() -> None:
    # Points on a line: query at 0, gallery at 1 and 3. Squared distances [[0,1,9],[1,0,4],[9,4,0]], column maxima
    # 9, 4, 9. With k1=1 the reciprocal sets are {0,1}, {0,1}, {2}; the half sets are singletons, so nothing is added.
    q_q, q_g, g_g = np.array([[0.0]]), np.array([[1.0, 3.0]]), np.array([[0.0, 2.0], [2.0, 0.0]])
    a, b = np.exp(-1 / 9), np.exp(-1 / 4)
    v0 = np.array([1, a]) / (1 + a)  # query's weights over points 0 and 1
    v1 = np.array([b, 1]) / (1 + b)  # gallery point 1: its own distances are column 1 over 4
    overlap = np.minimum(v0, v1).sum()
    expected_jaccard = np.array([1 - overlap / (2 - overlap), 1.0])
    out = k_reciprocal_rerank(q_g, q_q, g_g, k1=1, k2=1, lambda_value=0.0)
    np.testing.assert_allclose(out, [expected_jaccard], atol=1e-6)
    out = k_reciprocal_rerank(q_g, q_q, g_g, k1=1, k2=1, lambda_value=0.5)
    np.testing.assert_allclose(out, [0.5 * expected_jaccard + 0.5 * np.array([1 / 9, 1.0])], atol=1e-6)


@pytest.mark.parametrize(
    ("k1", "k2", "lambda_value"), [(20, 6, 0.3), (5, 3, 0.0), (7, 1, 0.5), (3, 2, 1.0), (40, 6, 0.3)]
)
def test_matches_dense_reference(k1: int, k2: int, lambda_value: float) -> None:
    rng = np.random.default_rng(k1 * 10 + k2)
    qf, gf = clustered_features(rng, 23, 61, num_ids=9)
    q_g, q_q, g_g = blocks(qf, gf)
    expected = dense_rerank(q_g, q_q, g_g, k1, k2, lambda_value)
    out = k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value, chunk_size=16)
    assert out.shape == (23, 61) and out.dtype == np.float32
    assert np.abs(out - expected).max() <= 1e-5


@pytest.mark.parametrize(("num_q", "num_g", "k1", "k2"), [(2, 5, 20, 6), (4, 12, 2, 6), (3, 9, 5, 30)])
def test_small_galleries_and_large_k_follow_the_reference(num_q: int, num_g: int, k1: int, k2: int) -> None:
    # k1 + 1 or k2 beyond the number of images: the reference's slices simply take every image.
    q_g, q_q, g_g = blocks(*clustered_features(np.random.default_rng(num_g), num_q, num_g, num_ids=3))
    expected = dense_rerank(q_g, q_q, g_g, k1, k2, 0.3)
    assert np.abs(k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2) - expected).max() <= 1e-5


def test_float64_and_asymmetric_inputs_follow_the_reference() -> None:
    # The reference reads columns of the stacked matrix; inputs need not be symmetric or float32.
    rng = np.random.default_rng(3)
    q_g, q_q, g_g = rng.random((9, 30)), rng.random((9, 9)), rng.random((30, 30))
    expected = dense_rerank(q_g, q_q, g_g, 6, 3, 0.3)
    out = k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=3, lambda_value=0.3, chunk_size=7)
    assert np.abs(out - expected).max() <= 1e-5


def test_feature_version_equals_matrix_version() -> None:
    rng = np.random.default_rng(5)
    qf, gf = clustered_features(rng, 30, 90, num_ids=12)
    for metric in ("euclidean", "cosine"):
        q_g, q_q, g_g = (pairwise_distances(x, y, metric=metric) for x, y in ((qf, gf), (qf, qf), (gf, gf)))
        expected = k_reciprocal_rerank(q_g, q_q, g_g)
        out = k_reciprocal_rerank_features(qf, gf, metric=metric, chunk_size=17)
        assert np.abs(out - expected).max() <= 1e-4


def test_power_one_uses_the_distances_as_given_like_the_official_code() -> None:
    rng = np.random.default_rng(11)
    qf, gf = clustered_features(rng, 12, 40, num_ids=6)
    q_g, q_q, g_g = blocks(qf, gf)
    expected = dense_rerank(q_g, q_q, g_g, k1=6, k2=3, lambda_value=0.3, power=1)
    out = k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=3, lambda_value=0.3, power=1)
    assert np.abs(out - expected).max() <= 1e-5
    assert np.abs(out - k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=3, lambda_value=0.3)).max() > 1e-3
    from_features = k_reciprocal_rerank_features(qf, gf, k1=6, k2=3, lambda_value=0.3, power=1, chunk_size=5)
    assert np.abs(from_features - out).max() <= 1e-4
    with pytest.raises(SpanetError, match="power"):
        k_reciprocal_rerank(q_g, q_q, g_g, power=3)


def test_inputs_are_not_modified_and_lambda_one_is_the_normalised_distance() -> None:
    rng = np.random.default_rng(7)
    q_g, q_q, g_g = blocks(*clustered_features(rng, 10, 40, num_ids=5))
    copies = [x.copy() for x in (q_g, q_q, g_g)]
    out = k_reciprocal_rerank(q_g, q_q, g_g, lambda_value=1.0)
    for before, after in zip(copies, (q_g, q_q, g_g)):
        np.testing.assert_array_equal(before, after)
    column_max = np.maximum((q_q**2).max(axis=0), (q_g**2).max(axis=1))  # max of column i of the stacked matrix
    np.testing.assert_allclose(out, q_g**2 / column_max[:, None], rtol=1e-6)


def test_reranking_helps_on_clustered_data() -> None:
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((15, 8))
    q_ids, g_ids = rng.integers(0, 15, 40), rng.integers(0, 15, 200)
    qf = centers[q_ids] + 0.9 * rng.standard_normal((40, 8))
    gf = centers[g_ids] + 0.9 * rng.standard_normal((200, 8))
    q_g, q_q, g_g = blocks(qf, gf)

    def mean_ap(distmat):
        aps = []
        for i in range(len(q_ids)):
            hits = (g_ids[np.argsort(distmat[i], kind="stable")] == q_ids[i]).astype(float)
            aps.append((np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits > 0].mean())
        return np.mean(aps)

    assert mean_ap(k_reciprocal_rerank(q_g, q_q, g_g)) > mean_ap(q_g)


def test_bad_inputs_raise_spanet_error() -> None:
    with pytest.raises(SpanetError, match="q_g"):
        k_reciprocal_rerank(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(SpanetError, match="NaN"):
        k_reciprocal_rerank(np.full((1, 1), np.nan), np.zeros((1, 1)), np.zeros((1, 1)))
    with pytest.raises(SpanetError, match="k1"):
        k_reciprocal_rerank(np.ones((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), k1=0)
    with pytest.raises(SpanetError, match="features"):
        k_reciprocal_rerank_features(np.zeros((2, 3)), np.zeros((2, 4)))


def test_matches_torchreid_when_installed() -> None:
    pytest.importorskip("torchreid")
    from torchreid.reid.utils.rerank import re_ranking

    rng = np.random.default_rng(13)
    for k1, k2, lambda_value in [(20, 6, 0.3), (6, 3, 0.1)]:
        q_g, q_q, g_g = blocks(*clustered_features(rng, 40, 150, num_ids=20))
        expected = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value)
        out = k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value)
        assert np.abs(out - expected).max() <= 1e-4


def test_jaccard_of_one_set_is_the_lambda_zero_rerank_block() -> None:
    """The all-pairs Jaccard distance pseudo-labels cluster on equals re-ranking's Jaccard term (λ=0) between any
    split of the same pool into query and gallery, and is symmetric with a zero diagonal."""
    from spanet.evaluation.rerank import k_reciprocal_jaccard, k_reciprocal_rerank_features

    features = np.random.default_rng(3).normal(size=(90, 12)).astype(np.float32)
    jaccard = k_reciprocal_jaccard(features, k1=8, k2=3)
    block = k_reciprocal_rerank_features(features[:30], features[30:], k1=8, k2=3, lambda_value=0.0)
    np.testing.assert_allclose(jaccard[:30, 30:], block, atol=1e-6)
    np.testing.assert_array_equal(jaccard, jaccard.T)
    assert np.all(np.diag(jaccard) == 0) and jaccard.min() >= 0.0 and jaccard.max() <= 1.0 and (jaccard < 1).any()
