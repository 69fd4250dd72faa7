"""The training DataLoader: samples, augmentation and order depend only on (seed, epoch, rank).

One loader serves a whole run (its workers persist across epochs); `set_loader_epoch` points it at an epoch and,
when resuming inside one, skips the batches already trained. The sampler hands each worker `(epoch, index)` keys,
and a sample's augmentation is seeded from (seed, epoch, index) (`spanet.data.transforms.TrainAugmentation`), so a
resumed run sees exactly the batches a straight run sees, whatever the number of workers.

Workers return uint8 images plus erasing boxes; `spanet.data.transforms.prepare_batch` finishes the batch on the
training device. Workers ignore SIGINT/SIGTERM: a signal sent to the whole process group (Ctrl-C, `timeout`,
Slurm, `kill -TERM -PGID`) reaches only the main process's handler, which finishes the step and checkpoints.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from spanet.config import DataConfig
from spanet.errors import SpanetError

__all__ = [
    "build_train_loader", "set_loader_epoch", "shutdown_loader", "epoch_seed", "EpochSampler", "TrainImages",
    "ignore_stop_signals",
]

PREFETCH_FACTOR = 4  # batches each worker keeps ready: covers the jitter of a GPU step without much memory


def build_train_loader(
    samples: tuple,
    data_config: DataConfig,
    *,
    seed: int,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    skip_batches: int = 0,
) -> DataLoader:
    """The training loader, positioned at `epoch` (after `skip_batches` batches); move it with `set_loader_epoch`.

    Batches are `(images (B, H, W, 3) uint8, erasing boxes (B, 4), pids, camids, indices)`.
    """
    from spanet.data.samplers import IdentitySampler, ShuffleSampler
    from spanet.data.transforms import TrainAugmentation

    if data_config.batch_size % world_size:
        raise SpanetError(
            f"data.batch_size={data_config.batch_size} is not divisible by the {world_size} processes; "
            "choose a multiple of the number of processes"
        )
    batch_size = data_config.batch_size // world_size
    augmentation = TrainAugmentation(
        height=data_config.height, width=data_config.width, flip_p=data_config.flip_p, erasing_p=data_config.erasing_p
    )
    if data_config.num_instances > 0:
        if batch_size % data_config.num_instances:
            raise SpanetError(
                f"data.num_instances={data_config.num_instances} must divide the per-process batch {batch_size}"
            )
        sampler: Sampler = IdentitySampler(
            [sample.pid for sample in samples], batch_size=batch_size, num_instances=data_config.num_instances,
            seed=seed, rank=rank, world_size=world_size,
        )  # fmt: skip
    else:
        sampler = ShuffleSampler(len(samples), seed=seed, rank=rank, world_size=world_size)
    workers = data_config.num_workers
    loader = DataLoader(
        TrainImages(samples, augmentation, seed=seed),
        batch_size=batch_size,
        sampler=EpochSampler(sampler, batch_size=batch_size),
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        worker_init_fn=ignore_stop_signals if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=PREFETCH_FACTOR if workers else None,
        generator=torch.Generator().manual_seed(epoch_seed(seed, 0, rank)),  # keeps the global torch RNG untouched
    )
    set_loader_epoch(loader, epoch=epoch, skip_batches=skip_batches)
    return loader


def set_loader_epoch(loader: DataLoader, *, epoch: int, skip_batches: int = 0) -> None:
    """Point `loader` (from `build_train_loader`) at `epoch`, skipping its first `skip_batches` batches."""
    loader.sampler.set_epoch(epoch, skip_batches=skip_batches)


def shutdown_loader(loader: DataLoader) -> None:
    """Stop the persistent workers of `loader` now. They ignore SIGTERM, so when an exception ends a run they must
    not be left to the interpreter's exit, which terminates them with SIGTERM and then waits for them forever."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()  # torch's own shutdown: tells each worker to stop, joins it
    loader._iterator = None


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one process's torch RNG in one epoch (dropout)."""
    return (seed * 1_000_003 + epoch * 1009 + rank) % (2**63)


def ignore_stop_signals(_worker_id: int) -> None:
    """Worker start: leave SIGINT/SIGTERM to the main process (it stops after the step and checkpoints)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class EpochSampler(Sampler):
    """Yields `(epoch, index)` keys of one epoch of `sampler`, without the batches a resumed run already trained."""

    def __init__(self, sampler: Any, *, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, *, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches * self.batch_size
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield self.epoch, index

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


class TrainImages:
    """Map-style dataset over `(epoch, index)` keys: `(uint8 image (H, W, 3), erasing box (4,), pid, camid, index)`."""

    def __init__(self, samples: Sequence[Any], augmentation: Any, *, seed: int) -> None:
        self.samples = tuple(samples)
        self.augmentation = augmentation
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
        from spanet.data.images import read_image

        epoch, index = key
        sample = self.samples[index]
        pixels, box = self.augmentation(read_image(sample.path), seed=self.seed, epoch=epoch, index=index)
        return torch.from_numpy(np.ascontiguousarray(pixels)), torch.from_numpy(box), sample.pid, sample.camid, index
