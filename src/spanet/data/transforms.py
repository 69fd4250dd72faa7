"""Image transforms for training (the paper's augmentation) and evaluation (none).

The input size is the caller's choice (the config's default is the paper's 384×128), so the same function serves
the tiny test images and real training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torchvision import transforms as T

from spanet.errors import SpanetError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ERASING_SCALE", "ERASING_RATIO", "build_transforms", "eval_transform"]

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
