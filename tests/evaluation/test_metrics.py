"""rank_metrics against a plain per-query implementation of the Market-1501 protocol, and against torchreid."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spanet.errors import SpanetError
from spanet.evaluation.metrics import rank_metrics


def reference_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """The protocol written out one query at a time (stable sort: ties in gallery order; CMC padded)."""
    cmcs, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        matches = (g_pids[order][keep] == q_pids[i]).astype(np.float64)
        if not matches.any():
            continue
        cmc = np.minimum(np.cumsum(matches), 1.0)
        cmc = np.concatenate([cmc, np.ones(max(0, max_rank - len(cmc)))])[:max_rank]
        cmcs.append(cmc)
        hit_ranks = np.flatnonzero(matches) + 1
        aps.append(np.mean(np.arange(1, len(hit_ranks) + 1) / hit_ranks))
        inps.append(len(hit_ranks) / hit_ranks[-1])
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(cmcs)


def random_problem(rng, num_q, num_g, num_ids, num_cams, *, integer=False):
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_camids = rng.integers(0, num_cams, num_q)
    g_camids = rng.integers(0, num_cams, num_g)
    if integer:
        distmat = rng.integers(0, 5, (num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.random((num_q, num_g), dtype=np.float32)
        distmat -= 0.5 * (q_pids[:, None] == g_pids[None, :])  # some signal, so ranks vary
    return distmat, q_pids, g_pids, q_camids, g_camids


def assert_equal_to_reference(problem, max_rank):
    ours = rank_metrics(*problem, max_rank=max_rank)
    cmc, mAP, mINP, num_valid = reference_metrics(*problem, max_rank)
    assert ours.cmc.shape == (max_rank,)
    np.testing.assert_allclose(ours.cmc, cmc, atol=1e-6)
    assert ours.mAP == pytest.approx(mAP, abs=1e-6)
    assert ours.mINP == pytest.approx(mINP, abs=1e-6)
    assert ours.num_valid_queries == num_valid
    assert ours.num_skipped_queries == problem[0].shape[0] - num_valid


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("integer", [False, True], ids=["distinct", "many-ties"])
def test_matches_reference_on_random_problems(integer: bool, dtype: type) -> None:
    rng = np.random.default_rng(0)
    for num_q, num_g, num_ids, num_cams in [(40, 300, 20, 4), (7, 60, 5, 2), (30, 500, 120, 6)]:
        distmat, *ids = random_problem(rng, num_q, num_g, num_ids, num_cams, integer=integer)
        distmat = (distmat * 1000 if dtype == np.int64 else distmat).astype(dtype)
        assert_equal_to_reference((distmat, *ids), max_rank=50)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_q=st.integers(1, 12),
    num_g=st.integers(1, 40),
    num_ids=st.integers(1, 6),
    num_cams=st.integers(1, 3),
    integer=st.booleans(),
    max_rank=st.integers(1, 60),
)
def test_property_matches_reference(seed, num_q, num_g, num_ids, num_cams, integer, max_rank) -> None:
    problem = random_problem(np.random.default_rng(seed), num_q, num_g, num_ids, num_cams, integer=integer)
    _, q_pids, g_pids, q_camids, g_camids = problem
    has_match = ((q_pids[:, None] == g_pids[None, :]) & (q_camids[:, None] != g_camids[None, :])).any()
    if not has_match:
        with pytest.raises(SpanetError, match="no query has a true match"):
            rank_metrics(*problem, max_rank=max_rank)
    else:
        assert_equal_to_reference(problem, max_rank)


def test_hand_checked_example() -> None:
    # One query (id 1, camera 0). Gallery sorted by distance: id 1 cam 0 (junk), id 2, id 1 cam 1, id 3, id 1 cam 2.
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    g_pids, g_camids = np.array([1, 2, 1, 3, 1]), np.array([0, 1, 1, 0, 2])
    result = rank_metrics(distmat, np.array([1]), g_pids, np.array([0]), g_camids, max_rank=5)
    # kept ranking: 2, 1, 3, 1 -> true matches at ranks 2 and 4; padded to length 5.
    np.testing.assert_allclose(result.cmc, [0, 1, 1, 1, 1])
    assert result.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert result.mINP == pytest.approx(2 / 4)
    assert result.summary() == pytest.approx({"rank1": 0.0, "rank5": 1.0, "mAP": 0.5, "mINP": 0.5})


def test_ties_follow_gallery_order() -> None:
    distmat = np.zeros((1, 3))
    result = rank_metrics(distmat, np.array([1]), np.array([2, 1, 1]), np.array([0]), np.array([1, 1, 2]), max_rank=3)
    np.testing.assert_allclose(result.cmc, [0, 1, 1])  # the impostor at index 0 comes first
    assert result.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_skipped_queries_are_counted() -> None:
    distmat = np.array([[0.1, 0.2], [0.3, 0.4]])
    # query 1 (id 5) has no gallery match at all
    result = rank_metrics(distmat, np.array([1, 5]), np.array([1, 2]), np.array([0, 0]), np.array([1, 1]))
    assert (result.num_valid_queries, result.num_skipped_queries) == (1, 1)
    assert result.cmc[0] == 1.0


def test_bad_inputs_raise_spanet_error() -> None:
    ids = np.array([1])
    with pytest.raises(SpanetError, match="columns"):
        rank_metrics(np.zeros((1, 2)), ids, ids, ids, ids)
    with pytest.raises(SpanetError, match="NaN"):
        rank_metrics(np.full((1, 1), np.nan), ids, ids, ids, np.array([0]))
    with pytest.raises(SpanetError, match="max_rank"):
        rank_metrics(np.zeros((1, 1)), ids, ids, ids, np.array([0]), max_rank=0)


def test_matches_torchreid_when_installed() -> None:
    rank = pytest.importorskip("torchreid.reid.metrics.rank")
    rng = np.random.default_rng(1)
    for num_q, num_g, num_ids, num_cams in [(60, 400, 30, 6), (25, 200, 8, 2)]:
        problem = random_problem(rng, num_q, num_g, num_ids, num_cams)
        problem = (problem[0].astype(np.float64), *problem[1:])  # distinct values: no ties to break
        cmc, mAP = rank.evaluate_rank(*problem, max_rank=20, use_metric_cuhk03=False, use_cython=False)
        ours = rank_metrics(*problem, max_rank=20)
        np.testing.assert_allclose(ours.cmc, cmc, atol=1e-6)
        assert ours.mAP == pytest.approx(mAP, abs=1e-6)


def test_rank_k_beyond_the_gallery_is_undefined_not_100() -> None:
    """Poor: rank-5 / rank-10 on a gallery of fewer images were printed as 100.00 with no note."""
    distmat = np.array([[0.5, 0.1, 0.9, 0.3], [0.2, 0.8, 0.1, 0.7]])
    metrics = rank_metrics(distmat, np.array([1, 2]), np.array([1, 2, 2, 3]), np.array([0, 0]), np.array([1, 1, 1, 1]))
    summary = metrics.summary()
    assert summary["rank5"] is None and summary["rank10"] is None and summary["rank1"] is not None
    assert np.isnan(metrics.rank(5)) and metrics.undefined_ranks() == [5, 10]


def test_evaluation_output_says_what_is_undefined_and_that_k1_was_clipped() -> None:
    from types import SimpleNamespace

    from spanet.evaluation.evaluate import FeatureSet, format_table, score_features

    rng = np.random.default_rng(0)
    query = tuple(SimpleNamespace(pid=p, camid=0, path=f"q{p}.jpg") for p in (1, 2))
    gallery = tuple(SimpleNamespace(pid=p, camid=1, path=f"g{i}.jpg") for i, p in enumerate((1, 2, 2, 3)))
    features = FeatureSet(rng.normal(size=(2, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32),
                          query, gallery)  # fmt: skip
    result = score_features(features, rerank=True, k1=20, k2=2)
    table = format_table(result)
    assert "n/a" in table and "rank-5, rank-10 undefined: the gallery holds 4 image(s)" in table
    assert "k1=20 is not smaller than the gallery (4 images)" in table
    assert result.to_json()["plain"]["rank10"] is None and len(result.to_json()["notes"]) == 2
    assert "100.00" not in table.splitlines()[1][18:36]  # the rank-5 and rank-10 cells of the plain row
