"""Seeded, distributed-aware samplers: a plain shuffle and identity-balanced P×K batches.

Every epoch's order comes from a local numpy Generator seeded with (seed, epoch), never from a global RNG, so a
run repeats exactly, a resumed run continues with the same orders, and all ranks of a distributed job agree on the
global order and only take different shares of it. Call `set_epoch(epoch)` before each epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from spanet.errors import SpanetError

__all__ = ["ShuffleSampler", "IdentitySampler"]


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    # SeedSequence mixes (seed, epoch) properly: seed 1 epoch 0 and seed 0 epoch 1 give unrelated streams.
    return np.random.default_rng([seed, epoch])


def _check_rank(seed: int, rank: int, world_size: int) -> None:
    if seed < 0:
        raise SpanetError(f"sampler seed must be a non-negative integer, got {seed}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise SpanetError(
            f"rank must be in [0, world_size) and world_size >= 1, got rank={rank}, world_size={world_size}"
        )


class ShuffleSampler(Sampler[int]):
    """A fresh permutation of range(num_samples) each epoch; rank r takes every world_size-th index from r.

    With `drop_last` (the default) the permutation is cut to a multiple of world_size, so the ranks' shares are
    disjoint and of equal length (at most world_size-1 random samples sit out each epoch; on one process nothing
    is dropped). Without it the permutation is padded by repeating its start, so every sample is seen but a few
    appear on two ranks.
    """

    def __init__(
        self, num_samples: int, *, seed: int, rank: int = 0, world_size: int = 1, drop_last: bool = True
    ) -> None:
        _check_rank(seed, rank, world_size)
        if num_samples < world_size:
            raise SpanetError(f"cannot share {num_samples} samples among {world_size} processes")
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.world_size
        return -(-self.num_samples // self.world_size)  # ceil

    def __iter__(self) -> Iterator[int]:
        order = _epoch_rng(self.seed, self.epoch).permutation(self.num_samples)
        total = len(self) * self.world_size
        if total > self.num_samples:  # pad (drop_last=False)
            order = np.concatenate([order, order[: total - self.num_samples]])
        return iter(order[:total][self.rank :: self.world_size].tolist())


class IdentitySampler(Sampler[int]):
    """Indices in batches of P = batch_size / num_instances identities × K = num_instances images each.

    Per epoch, each identity's images are shuffled and cut into chunks of K (an identity with fewer than K images
    gives one chunk, topped up by drawing its images again with replacement; leftovers < K sit out this epoch).
    Each batch takes P distinct identities, drawn with probability proportional to their remaining chunks so that
    large identities do not pile up at the end; if fewer than P identities still have chunks, fresh chunks of other
    identities fill the batch. The epoch has exactly floor(total chunks / P) batches, a number that depends on the
    image counts only, so `len()` is exact and equal for every epoch.

    Distributed: all ranks build the same batches; rank r takes batches r, r + world_size, ... (the count is cut
    to a multiple of world_size), so every rank's batches stay P×K. The DataLoader's batch_size must equal
    `batch_size` (the per-process batch), with shuffle off.
    """

    def __init__(
        self,
        pids: Sequence[int],
        *,
        batch_size: int,
        num_instances: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_rank(seed, rank, world_size)
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise SpanetError(
                f"batch_size ({batch_size}) must be a positive multiple of num_instances ({num_instances})"
            )
        by_pid: dict[int, list[int]] = {}
        for index, pid in enumerate(pids):
            by_pid.setdefault(int(pid), []).append(index)
        self.num_identities_per_batch = batch_size // num_instances
        if len(by_pid) < self.num_identities_per_batch:
            raise SpanetError(
                f"a batch needs {self.num_identities_per_batch} identities (batch_size {batch_size} / "
                f"num_instances {num_instances}) but the data has only {len(by_pid)}; lower batch_size"
            )
        self.pid_indices = [np.asarray(by_pid[pid]) for pid in sorted(by_pid)]
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        chunks = sum(max(1, len(idx) // num_instances) for idx in self.pid_indices)
        self.batches_per_rank = chunks // self.num_identities_per_batch // world_size
        if self.batches_per_rank == 0:
            raise SpanetError(
                f"too few images for one {batch_size}-image batch per process ({world_size} processes); "
                "lower batch_size"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size

    def __iter__(self) -> Iterator[int]:
        batches = self._epoch_batches()
        mine = batches[self.rank : self.batches_per_rank * self.world_size : self.world_size]
        return iter(np.concatenate(mine).tolist())

    def _chunk(self, rng: np.random.Generator, indices: np.ndarray) -> list[np.ndarray]:
        k = self.num_instances
        if len(indices) < k:
            extra = rng.choice(indices, size=k - len(indices), replace=True)
            return [rng.permutation(np.concatenate([indices, extra]))]
        shuffled = rng.permutation(indices)
        return [shuffled[i * k : (i + 1) * k] for i in range(len(indices) // k)]

    def _epoch_batches(self) -> list[np.ndarray]:
        """Every rank's batches for this epoch, identical on all ranks."""
        rng = _epoch_rng(self.seed, self.epoch)
        chunks = [self._chunk(rng, indices) for indices in self.pid_indices]
        p = self.num_identities_per_batch
        batches = []
        for _ in range(self.batches_per_rank * self.world_size):
            remaining = np.array([len(c) for c in chunks], dtype=float)
            available = np.flatnonzero(remaining)
            take = min(p, len(available))
            chosen = list(rng.choice(available, size=take, replace=False, p=remaining[available] / remaining.sum()))
            if take < p:  # top up with fresh chunks of identities not yet in this batch
                others = np.setdiff1d(np.arange(len(chunks)), chosen)
                chosen += list(rng.choice(others, size=p - take, replace=False))
            batch = []
            for pid in chosen:
                batch.append(chunks[pid].pop() if chunks[pid] else self._chunk(rng, self.pid_indices[pid])[0])
            batches.append(np.concatenate(batch))
        return batches
