"""Image transforms for training (the paper's augmentation) and evaluation (none).

The input size is the caller's choice (the config's default is the paper's 384×128), so the same function serves
the tiny test images and real training.

Training splits the augmentation in two halves so that the loader keeps up with a GPU and resuming is exact:
`TrainAugmentation` runs in the loader workers (decode, resize, flip: uint8 out, 4× less to move between processes
than float32) and `prepare_batch` runs on the training device (float, ImageNet normalisation, random erasing).
Every random choice of a sample comes from a generator seeded with (seed, epoch, sample index), drawn in the worker,
so the augmentation of a sample never depends on which worker read it or how many batches came before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from spanet.errors import SpanetError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ERASING_SCALE",
    "ERASING_RATIO",
    "build_transforms",
    "eval_transform",
    "TrainAugmentation",
    "prepare_batch",
]

# The backbone is ImageNet-pretrained, so inputs are normalised with ImageNet's channel statistics.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# Random erasing (Zhong et al. 2017, "Random Erasing Data Augmentation"): erased area 2%-40% of the image,
# aspect ratio between 0.3 and 1/0.3 ≈ 3.3.
ERASING_SCALE: tuple[float, float] = (0.02, 0.4)
ERASING_RATIO: tuple[float, float] = (0.3, 3.3)


def build_transforms(
    *,
    height: int,
    width: int,
    train: bool,
    flip_p: float = 0.5,
    erasing_p: float = 0.5,
    erasing_value: float | str = 0.0,
) -> Callable:
    """PIL image -> normalised (3, height, width) float tensor.

    train: resize, horizontal flip (`flip_p`), to tensor, ImageNet normalisation, random erasing (`erasing_p`).
    eval:  resize, to tensor, ImageNet normalisation.

    Erasing runs after normalisation with fill value 0 by default, i.e. the erased box takes the ImageNet mean
    colour, the "RE-M" variant of Zhong et al. that their re-ID code uses; it keeps the erased box at the input
    statistics the pretrained backbone expects. Pass `erasing_value="random"` for per-pixel noise ("RE-R"). We use
    torchvision's `RandomErasing`, which samples the aspect ratio log-uniformly in [0.3, 3.3] (the paper samples
    it uniformly in [r1, 1/r1]) and gives up after 10 attempts; both only change which boxes are likely.
    """
    if height <= 0 or width <= 0:
        raise SpanetError(f"image size must be positive, got height={height}, width={width}")
    for key, p in (("flip_p", flip_p), ("erasing_p", erasing_p)):
        if not 0.0 <= p <= 1.0:
            raise SpanetError(f"{key} must be a probability in [0, 1], got {p}")
    steps: list[Callable] = [T.Resize((height, width))]
    if train and flip_p > 0:
        steps.append(T.RandomHorizontalFlip(p=flip_p))
    steps += [T.ToTensor(), T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    if train and erasing_p > 0:
        steps.append(T.RandomErasing(p=erasing_p, scale=ERASING_SCALE, ratio=ERASING_RATIO, value=erasing_value))
    return T.Compose(steps)


def eval_transform(input_size: Sequence[int]) -> Callable:
    """The evaluation transform for a checkpoint's `input_size` (height, width): every embedding path uses this one."""
    height, width = (int(v) for v in input_size)
    return build_transforms(height=height, width=width, train=False)


@dataclass(frozen=True)
class TrainAugmentation:
    """The worker half of training augmentation: PIL image -> ((H, W, 3) uint8 array, erasing box).

    Resize (bilinear, as `T.Resize` on PIL images) and horizontal flip happen here; the erasing box
    (top, left, height, width; all -1 for "no erasing") is drawn here too, from the same per-sample generator,
    and applied later by `prepare_batch` on the training device. The random-erasing draw follows Zhong et al.:
    area uniform in `ERASING_SCALE`, aspect ratio log-uniform in `ERASING_RATIO`, up to 10 attempts.
    """

    height: int
    width: int
    flip_p: float = 0.5
    erasing_p: float = 0.5

    def __post_init__(self) -> None:
        build_transforms(height=self.height, width=self.width, train=True, flip_p=self.flip_p, erasing_p=self.erasing_p)

    def __call__(self, image: Image.Image, *, seed: int, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, epoch, index])  # (seed, epoch, sample): independent of worker and batch
        image = image.resize((self.width, self.height), Image.BILINEAR)
        if rng.random() < self.flip_p:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return np.array(image, dtype=np.uint8), self._erasing_box(rng)

    def _erasing_box(self, rng: np.random.Generator) -> np.ndarray:
        box = np.full(4, -1, dtype=np.int64)
        if not rng.random() < self.erasing_p:
            return box
        area = self.height * self.width
        log_ratio = (math.log(ERASING_RATIO[0]), math.log(ERASING_RATIO[1]))
        for _ in range(10):
            target = area * rng.uniform(*ERASING_SCALE)
            aspect = math.exp(rng.uniform(*log_ratio))
            h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < h < self.height and 0 < w < self.width:
                top, left = int(rng.integers(0, self.height - h + 1)), int(rng.integers(0, self.width - w + 1))
                box[:] = (top, left, h, w)
                break
        return box


def prepare_batch(images: torch.Tensor, boxes: torch.Tensor, *, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """The device half: (B, H, W, 3) uint8 + (B, 4) erasing boxes -> normalised (B, 3, H, W) float32 on `device`.

    Erased boxes are 0 after normalisation (the ImageNet mean colour, "RE-M", as `build_transforms`). No value is
    read back to the host and no host tensor is copied in, so the step can be queued ahead on a GPU. With
    `channels_last` the batch is normalised in its NHWC layout and comes out channels_last without a copy.
    """
    images = images.to(device, non_blocking=True)
    _, height, width, _ = images.shape
    keep = _outside_boxes(boxes.to(device, non_blocking=True), height=height, width=width)  # (B, H, W)
    if channels_last:
        mean = torch.stack([torch.full((), value, device=device) for value in IMAGENET_MEAN])  # (3,), no host copy
        std = torch.stack([torch.full((), value, device=device) for value in IMAGENET_STD])
        batch = images.float().div_(255).sub_(mean).div_(std).mul_(keep.unsqueeze(-1))  # (B, H, W, 3)
        return batch.permute(0, 3, 1, 2)  # (B, 3, H, W) view with channels_last strides
    batch = images.permute(0, 3, 1, 2).contiguous().float()  # uint8 transpose first: 4x fewer bytes to move
    for channel, (mean_c, std_c) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD)):
        batch[:, channel].div_(255).sub_(mean_c).div_(std_c)
    return batch.mul_(keep.unsqueeze(1))


def _outside_boxes(boxes: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """(B, H, W) float mask: 0 inside each sample's box (top, left, h, w), 1 elsewhere; -1 boxes erase nothing."""
    top, left, h, w = (boxes[:, i : i + 1] for i in range(4))  # (B, 1) each
    rows = torch.arange(height, device=boxes.device).view(1, -1)
    cols = torch.arange(width, device=boxes.device).view(1, -1)
    in_rows = (rows >= top) & (rows < top + h)  # (B, H)
    in_cols = (cols >= left) & (cols < left + w)  # (B, W)
    return (~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))).float()
