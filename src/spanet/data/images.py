"""Reading image files, and a torch `Dataset` over re-ID samples.

A corrupt or missing image is a user problem (a bad download, a full disk), so it raises `SpanetError` naming the
file instead of a PIL traceback deep inside a DataLoader worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from spanet.errors import SpanetError

__all__ = ["read_image", "image_problem", "ImageDataset"]

# Everything PIL raises for a file it cannot decode: truncated data (OSError), unknown format
# (UnidentifiedImageError, an OSError), broken headers (SyntaxError, ValueError), absurd sizes (DecompressionBombError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode `path` fully into an RGB image (grayscale and palette files are converted)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() decodes everything, so truncation shows up here
    except FileNotFoundError:
        raise SpanetError(f"image not found: {path}; was the dataset folder moved or partly deleted?") from None
    except _DECODE_ERRORS as exc:
        raise SpanetError(
            f"cannot read image {path} ({type(exc).__name__}: {exc}); the file is corrupt or not an image: "
            "replace it, or skip such files with `spanet check-data --skip-corrupt` / load_dataset(skip_corrupt=True)"
        ) from None


def image_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot be decoded, or None when it decodes. Used to verify a dataset before training."""
    try:
        read_image(path)
    except SpanetError as exc:
        return str(exc)
    return None


class ImageDataset(Dataset):
    """Samples (anything with `path`, `pid`, `camid`) as `(image_tensor, pid, camid, index)`.

    The index lets feature extraction put results back in dataset order whatever the sampler did.
    """

    def __init__(self, samples: Sequence[Any], transform: Callable[[Image.Image], Any]) -> None:
        self.samples = tuple(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int, int, int]:
        sample = self.samples[index]
        image = read_image(sample.path)
        return self.transform(image), sample.pid, sample.camid, index
