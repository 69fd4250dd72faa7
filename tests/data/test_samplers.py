"""Samplers: exact repeats for a seed, fresh orders per epoch, disjoint equal rank shares, P×K batch structure."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from spanet.data.samplers import IdentitySampler, ShuffleSampler
from spanet.errors import SpanetError

# Uneven identities: one with a single image (needs replacement), one large, a few in between.
PIDS = [0] * 1 + [1] * 3 + [2] * 4 + [3] * 9 + [4] * 22 + [5] * 5 + [6] * 8 + [7] * 2 + [8] * 6 + [9] * 4


def test_shuffle_same_seed_repeats_exactly() -> None:
    assert list(ShuffleSampler(50, seed=3)) == list(ShuffleSampler(50, seed=3))
    assert list(ShuffleSampler(50, seed=3)) != list(ShuffleSampler(50, seed=4))


def test_shuffle_epochs_differ_and_each_is_a_permutation() -> None:
    sampler = ShuffleSampler(50, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second
    assert sorted(first) == sorted(second) == list(range(50))
    assert len(sampler) == 50


def test_shuffle_does_not_touch_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(ShuffleSampler(20, seed=1))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("num_samples", [40, 43])
def test_shuffle_ranks_disjoint_equal_and_cover(num_samples: int) -> None:
    shares = [list(ShuffleSampler(num_samples, seed=5, rank=r, world_size=4)) for r in range(4)]
    assert all(len(share) == len(ShuffleSampler(num_samples, seed=5, rank=0, world_size=4)) for share in shares)
    union = [i for share in shares for i in share]
    assert len(union) == len(set(union)) == num_samples // 4 * 4  # disjoint; at most 3 sit out
    single = list(ShuffleSampler(num_samples, seed=5))
    assert set(union) <= set(single) == set(range(num_samples))


def test_shuffle_without_drop_last_covers_everything() -> None:
    shares = [list(ShuffleSampler(43, seed=5, rank=r, world_size=4, drop_last=False)) for r in range(4)]
    assert {len(share) for share in shares} == {11}
    assert {i for share in shares for i in share} == set(range(43))


def _batches(sampler: IdentitySampler) -> list[list[int]]:
    indices = list(sampler)
    assert len(indices) == len(sampler) and len(indices) % sampler.batch_size == 0
    return [indices[i : i + sampler.batch_size] for i in range(0, len(indices), sampler.batch_size)]


def test_identity_batches_are_p_by_k() -> None:
    sampler = IdentitySampler(PIDS, batch_size=12, num_instances=4, seed=0)
    batches = _batches(sampler)
    assert len(batches) > 3
    for batch in batches:
        per_id = Counter(PIDS[i] for i in batch)
        assert len(per_id) == 3 and set(per_id.values()) == {4}
        # An identity with >= K images contributes K distinct images; otherwise all of its images.
        for pid, count in per_id.items():
            distinct = len({i for i in batch if PIDS[i] == pid})
            assert distinct == min(4, PIDS.count(pid))


def test_identity_same_seed_repeats_and_epochs_differ() -> None:
    a = IdentitySampler(PIDS, batch_size=8, num_instances=2, seed=11)
    b = IdentitySampler(PIDS, batch_size=8, num_instances=2, seed=11)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert len(a) == len(b)  # the length depends on the image counts only
    assert list(IdentitySampler(PIDS, batch_size=8, num_instances=2, seed=12)) != list(a)


def test_identity_length_is_exact_over_many_epochs() -> None:
    sampler = IdentitySampler(PIDS, batch_size=8, num_instances=4, seed=0)
    for epoch in range(20):
        sampler.set_epoch(epoch)
        _batches(sampler)  # asserts the length


def test_identity_ranks_split_whole_batches() -> None:
    full = _batches(IdentitySampler(PIDS, batch_size=8, num_instances=4, seed=2))
    ranks = [IdentitySampler(PIDS, batch_size=8, num_instances=4, seed=2, rank=r, world_size=3) for r in range(3)]
    per_rank = [_batches(s) for s in ranks]
    assert len({len(s) for s in ranks}) == 1
    assert len(per_rank[0]) == len(full) // 3
    for batches in per_rank:
        for batch in batches:
            assert set(Counter(PIDS[i] for i in batch).values()) == {4} and len(batch) == 8
    # Rank r gets global batches r, r+3, ...: disjoint positions of the single-process order that cover it.
    interleaved = [batch for group in zip(*per_rank) for batch in group]
    assert interleaved == full[: len(interleaved)]


def test_identity_sampler_in_a_dataloader() -> None:
    sampler = IdentitySampler(PIDS, batch_size=8, num_instances=4, seed=0)
    loader = DataLoader(torch.tensor(PIDS), batch_size=8, sampler=sampler, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(sampler) // 8
    assert all(len(set(batch.tolist())) == 2 for batch in batches)


def test_identity_large_identity_needs_no_dominance() -> None:
    # One identity has more chunks than there are batches: batches still hold distinct identities.
    pids = [0] * 40 + [1] * 4 + [2] * 4
    batches = _batches(IdentitySampler(pids, batch_size=4, num_instances=2, seed=0))
    assert all(len({pids[i] for i in batch}) == 2 for batch in batches)


def test_sampler_argument_errors() -> None:
    with pytest.raises(SpanetError, match="multiple of num_instances"):
        IdentitySampler(PIDS, batch_size=10, num_instances=4, seed=0)
    with pytest.raises(SpanetError, match="only 10"):
        IdentitySampler(PIDS, batch_size=48, num_instances=4, seed=0)
    with pytest.raises(SpanetError, match="rank"):
        ShuffleSampler(10, seed=0, rank=2, world_size=2)
    with pytest.raises(SpanetError, match="too few images"):
        IdentitySampler(np.arange(4), batch_size=4, num_instances=1, seed=0, world_size=2)
