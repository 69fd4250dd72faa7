"""The training loader: per-sample augmentation independent of workers and batch history, the device half."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spanet.config import DataConfig
from spanet.data.loader import build_train_loader, set_loader_epoch
from spanet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainAugmentation, prepare_batch


def _samples(tiny_market: Path) -> tuple:
    from spanet.data.datasets import load_dataset

    return load_dataset("synthetic", tiny_market).train


def _epoch(loader: torch.utils.data.DataLoader) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """index -> (uint8 image, erasing box) over one pass."""
    seen = {}
    for pixels, boxes, _pids, _camids, indices in loader:
        for image, box, index in zip(pixels, boxes, indices.tolist()):
            seen[index] = (image, box)
    return seen


def test_augmentation_depends_on_seed_epoch_and_index_only(tiny_market: Path) -> None:
    samples = _samples(tiny_market)
    config = DataConfig(root="x", height=32, width=16, batch_size=4, num_workers=0, flip_p=0.5, erasing_p=0.5)
    plain = _epoch(build_train_loader(samples, config, seed=3, epoch=1))
    with_workers = build_train_loader(samples, DataConfig(**{**config.__dict__, "num_workers": 2}), seed=3, epoch=0)
    _epoch(with_workers)  # an epoch of history in persistent workers must not change the next one
    set_loader_epoch(with_workers, epoch=1, skip_batches=2)
    skipped = _epoch(with_workers)
    assert skipped and set(skipped) < set(plain)
    for index, (image, box) in skipped.items():
        assert torch.equal(image, plain[index][0]) and torch.equal(box, plain[index][1])
    other_epoch = _epoch(build_train_loader(samples, config, seed=3, epoch=2))
    assert any(not torch.equal(other_epoch[i][1], plain[i][1]) for i in set(other_epoch) & set(plain))


def test_worker_half_resizes_flips_and_returns_uint8() -> None:
    ramp = Image.fromarray(np.tile(np.arange(20, dtype=np.uint8)[None, :, None] * 12, (40, 1, 3)))
    plain, box = TrainAugmentation(height=40, width=20, flip_p=0.0, erasing_p=0.0)(ramp, seed=0, epoch=0, index=0)
    flipped, _ = TrainAugmentation(height=40, width=20, flip_p=1.0, erasing_p=0.0)(ramp, seed=0, epoch=0, index=0)
    assert plain.shape == (40, 20, 3) and plain.dtype == np.uint8 and (box == -1).all()
    assert np.array_equal(flipped, plain[:, ::-1])
    small, _ = TrainAugmentation(height=10, width=5, flip_p=0.0, erasing_p=0.0)(ramp, seed=0, epoch=0, index=0)
    assert small.shape == (10, 5, 3)


def test_erasing_boxes_follow_zhong_et_al() -> None:
    augmentation = TrainAugmentation(height=64, width=32, flip_p=0.0, erasing_p=1.0)
    image = Image.new("RGB", (32, 64))
    boxes = np.stack([augmentation(image, seed=0, epoch=0, index=i)[1] for i in range(60)])
    drawn = boxes[boxes[:, 0] >= 0]
    assert len(drawn) >= 50
    fractions = drawn[:, 2] * drawn[:, 3] / (64 * 32)
    assert fractions.min() >= 0.015 and fractions.max() <= 0.42
    assert (drawn[:, 0] + drawn[:, 2] <= 64).all() and (drawn[:, 1] + drawn[:, 3] <= 32).all()


@pytest.mark.parametrize("channels_last", [False, True])
def test_device_half_normalises_and_erases_the_box(channels_last: bool) -> None:
    pixels = torch.full((2, 8, 6, 3), 255, dtype=torch.uint8)
    boxes = torch.tensor([[2, 1, 3, 2], [-1, -1, -1, -1]])
    batch = prepare_batch(pixels, boxes, device=torch.device("cpu"), channels_last=channels_last)
    assert batch.shape == (2, 3, 8, 6) and batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    white = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(batch[1], white.view(3, 1, 1).expand(3, 8, 6))
    erased = batch[0] == 0
    assert erased[:, 2:5, 1:3].all() and erased.sum() == 3 * 3 * 2
