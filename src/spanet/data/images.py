"""Finding and reading image files, and a torch `Dataset` over re-ID samples.

A corrupt or missing image is a user problem (a bad download, a full disk), so it raises `SpanetError` naming the
file instead of a PIL traceback deep inside a DataLoader worker. Likewise a folder or pattern given on the command
line that holds no image raises, naming it, rather than silently shrinking a gallery.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spanet.errors import SpanetError

__all__ = [
    "IMAGE_EXTENSIONS", "collect_images", "read_image", "as_rgb_image", "image_problem", "split_readable",
    "drop_corrupt", "ImageDataset",
]

# File suffixes (lower case) that count as images wherever spanet lists a folder: datasets, CLI image arguments.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_GLOB_CHARS = frozenset("*?[")

# Everything PIL raises for a file it cannot decode: truncated data (OSError), unknown format
# (UnidentifiedImageError, an OSError), broken headers (SyntaxError, ValueError), absurd sizes (DecompressionBombError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def collect_images(items: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, folders (recursively, image extensions only) and glob patterns into image paths.

    Order: items in the order given, each item's files sorted; a file reached twice (also as `./a.jpg` and
    `a.jpg`) keeps its first position. Paths are returned as given (with `~` expanded), not made absolute, so
    files written from them (features, index) stay relative when the user's paths were. An item that matches
    nothing raises `SpanetError` naming it (a typo should not silently shrink a gallery).
    """
    found: dict[Path, Path] = {}
    for item in items:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            matches = _images_under(path)
            if not matches:
                raise SpanetError(f"folder {text} holds no images ({', '.join(IMAGE_EXTENSIONS)}); check the path")
        elif path.is_file():
            matches = [path]
        elif _GLOB_CHARS & set(text):
            matches = []
            for hit in sorted(Path(p) for p in glob.glob(str(path), recursive=True)):
                if hit.is_dir():
                    matches.extend(_images_under(hit))
                elif hit.is_file() and hit.suffix.lower() in IMAGE_EXTENSIONS:
                    matches.append(hit)
            if not matches:
                raise SpanetError(f"pattern {text} matches no image files; check the pattern (quote it for the shell)")
        else:
            raise SpanetError(f"{text} is not a file, folder or glob pattern that exists; check the path")
        for match in matches:
            found.setdefault(match.resolve(), match)
    return list(found.values())


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


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
            "replace it, or leave such files out with --skip-corrupt (train, evaluate, cam, check-data; extract and "
            "search skip them always) / load_dataset(skip_corrupt=True)"
        ) from None


def as_rgb_image(image: Any) -> Image.Image:
    """A path, `Sample`, PIL image, numpy array (H, W, 3) uint8 RGB or (H, W), or tensor picture (3, H, W) (float in
    [0, 1] or uint8) as an RGB PIL image, so every kind of input meets the same evaluation transform."""
    if isinstance(image, (str, os.PathLike)) or hasattr(image, "path"):
        return read_image(image.path if hasattr(image, "path") else image)
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    torch = sys.modules.get("torch")  # an object can only be a tensor once torch is loaded; never import it here
    if torch is not None and isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
            raise SpanetError(f"an image tensor must be (3, H, W) or (1, H, W), got shape {tuple(tensor.shape)}")
        if tensor.is_floating_point():
            if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
                raise SpanetError(
                    "a float image tensor must hold values in [0, 1] (ToTensor output); for an already normalised "
                    "batch call FeatureExtractor.embed_tensor"
                )
            tensor = (tensor * 255).round().to(torch.uint8)
        elif tensor.dtype != torch.uint8:
            raise SpanetError(f"an image tensor must be float in [0, 1] or uint8, got {tensor.dtype}")
        return as_rgb_image(tensor.permute(1, 2, 0).numpy())  # (C, H, W) -> (H, W, C)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise SpanetError(f"a numpy image must be uint8 (H, W, 3) RGB, got dtype {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise SpanetError(f"a numpy image must be (H, W, 3) RGB or (H, W), got shape {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    raise SpanetError(f"cannot use {type(image).__name__} as an image; pass paths, PIL images, arrays or tensors")


def split_readable(paths: Sequence[str | os.PathLike[str]]) -> tuple[list, list]:
    """(the paths that decode, the ones that do not), each in the given order: `--skip-corrupt` for image lists."""
    problems = [image_problem(path) for path in paths]
    readable = [path for path, problem in zip(paths, problems) if problem is None]
    return readable, [path for path, problem in zip(paths, problems) if problem is not None]


def image_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot be decoded, or None when it decodes. Used to verify a dataset before training."""
    try:
        read_image(path)
    except SpanetError as exc:
        return str(exc)
    return None


class ImageDataset:
    """Samples (anything with `path`, `pid`, `camid`) as `(image_tensor, pid, camid, index)`.

    A map-style dataset for `torch.utils.data.DataLoader` (which needs only `__len__` and `__getitem__`); it does not
    subclass torch's `Dataset`, so reading a dataset's file list never imports torch. The index lets feature
    extraction put results back in dataset order whatever the sampler did.
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


def drop_corrupt(
    splits: dict[str, list[Any]], *, skip: bool, progress: bool
) -> tuple[dict[str, list[Any]], list[str]]:
    """Decode every sample's image; raise naming the corrupt ones, or (with `skip`) leave them out and return
    their paths. `splits` maps a split name to samples with a `path`."""
    from tqdm import tqdm

    total = sum(len(samples) for samples in splits.values())
    # disable=None lets tqdm hide the bar when stderr is not a terminal.
    bar = tqdm(total=total, desc="verifying images", unit="img", disable=None if progress else True)
    kept: dict[str, list[Any]] = {}
    reasons: list[str] = []
    bad: list[str] = []
    for split, samples in splits.items():
        kept[split] = []
        for sample in samples:
            problem = image_problem(sample.path)
            if problem is None:
                kept[split].append(sample)
            else:
                bad.append(sample.path)
                reasons.append(problem)
            bar.update(1)
    bar.close()
    if len(bad) == 1 and not skip:
        raise SpanetError(reasons[0])
    if bad and not skip:
        shown = ", ".join(bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        raise SpanetError(f"{len(bad)} corrupt images: {shown}; the first: {reasons[0]}")
    return kept, bad
