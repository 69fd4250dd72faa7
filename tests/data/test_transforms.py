"""Transforms: output size and normalisation, no randomness at eval, flip and random erasing at train."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from spanet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from spanet.errors import SpanetError


def _gradient_image(width: int = 20, height: int = 40) -> Image.Image:
    """Left-to-right ramp, so a horizontal flip is visible."""
    image = Image.new("RGB", (width, height))
    image.putdata([(12 * x % 256, 5 * y % 256, 90) for y in range(height) for x in range(width)])
    return image


def test_eval_resizes_normalises_and_is_deterministic() -> None:
    transform = build_transforms(height=32, width=16, train=False)
    torch.manual_seed(0)
    a = transform(_gradient_image())
    torch.manual_seed(1)
    b = transform(_gradient_image())
    assert a.shape == (3, 32, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    mean_colour = Image.new("RGB", (8, 8), tuple(round(255 * m) for m in IMAGENET_MEAN))
    assert transform(mean_colour).abs().max() < 0.01  # the ImageNet mean maps to ~0
    white = transform(Image.new("RGB", (8, 8), (255, 255, 255)))
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(white[:, 0, 0], expected, atol=1e-5)


def test_train_flip_mirrors_the_image() -> None:
    plain = build_transforms(height=40, width=20, train=False)(_gradient_image())
    flipped = build_transforms(height=40, width=20, train=True, flip_p=1.0, erasing_p=0.0)(_gradient_image())
    assert torch.allclose(flipped, plain.flip(-1))
    same = build_transforms(height=40, width=20, train=True, flip_p=0.0, erasing_p=0.0)(_gradient_image())
    assert torch.equal(same, plain)


def test_train_erasing_box_area_and_fill() -> None:
    torch.manual_seed(0)
    plain = build_transforms(height=64, width=32, train=False)(_gradient_image(32, 64))
    transform = build_transforms(height=64, width=32, train=True, flip_p=0.0, erasing_p=1.0)
    fractions = []
    for _ in range(40):
        erased = transform(_gradient_image(32, 64))
        changed = (erased != plain).any(dim=0)
        rows, cols = changed.nonzero(as_tuple=True)
        if len(rows) == 0:  # torchvision gives up after 10 failed box draws; rare
            continue
        box = erased[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert torch.all(box == 0)  # fill 0 after normalisation = the ImageNet mean colour
        fractions.append(box[0].numel() / (64 * 32))
    assert len(fractions) >= 30
    assert min(fractions) >= 0.02 - 1e-3 and max(fractions) <= 0.4 + 1e-3


def test_train_augmentation_is_random() -> None:
    transform = build_transforms(height=32, width=16, train=True)
    torch.manual_seed(0)
    outputs = [transform(_gradient_image()) for _ in range(8)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_bad_arguments() -> None:
    with pytest.raises(SpanetError, match="erasing_p"):
        build_transforms(height=32, width=16, train=True, erasing_p=1.5)
    with pytest.raises(SpanetError, match="positive"):
        build_transforms(height=0, width=16, train=False)
