"""The training DataLoader of one epoch: samples, augmentation and order depend only on (seed, epoch, rank).

Built fresh for every epoch so that a resumed run gets the same batches, and a run resumed inside an epoch skips the
batches it already trained on.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from spanet.config import DataConfig
from spanet.errors import SpanetError

__all__ = ["build_train_loader", "epoch_seed", "SkipSampler"]


def build_train_loader(
    samples: tuple,
    data_config: DataConfig,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    skip_batches: int = 0,
) -> DataLoader:
    """The loader of one epoch; its order and augmentation depend only on (seed, epoch, rank)."""
    from spanet.data.images import ImageDataset
    from spanet.data.samplers import IdentitySampler, ShuffleSampler
    from spanet.data.transforms import build_transforms

    if data_config.batch_size % world_size:
        raise SpanetError(
            f"data.batch_size={data_config.batch_size} is not divisible by the {world_size} processes; "
            "choose a multiple of the number of processes"
        )
    batch_size = data_config.batch_size // world_size
    transform = build_transforms(
        height=data_config.height,
        width=data_config.width,
        train=True,
        flip_p=data_config.flip_p,
        erasing_p=data_config.erasing_p,
    )
    dataset = ImageDataset(samples, transform)
    if data_config.num_instances > 0:
        if batch_size % data_config.num_instances:
            raise SpanetError(
                f"data.num_instances={data_config.num_instances} must divide the per-process batch {batch_size}"
            )
        sampler: Sampler = IdentitySampler(
            [sample.pid for sample in samples],
            batch_size=batch_size,
            num_instances=data_config.num_instances,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
    else:
        sampler = ShuffleSampler(len(samples), seed=seed, rank=rank, world_size=world_size)
    sampler.set_epoch(epoch)
    if skip_batches:
        sampler = SkipSampler(sampler, skip=skip_batches * batch_size)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch, rank))  # seeds the loader's workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=data_config.num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        generator=generator,
    )


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one process in one epoch (torch RNG and loader workers)."""
    return (seed * 1_000_003 + epoch * 1009 + rank) % (2**63)


class SkipSampler(Sampler):
    """A sampler without its first `skip` indices: resuming inside an epoch skips the batches already trained."""

    def __init__(self, sampler: Sampler, *, skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)
