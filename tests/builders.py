"""Small builders shared by the tests: a tiny checkpoint saved like `spanet train` does, and a few images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

INPUT_SIZE = (64, 32)
MODEL_ARGS = {"num_classes": 4, "backbone": "resnet18", "pretrained": None}


def make_checkpoint(path: Path, *, seed: int = 0, num_classes: int = MODEL_ARGS["num_classes"]) -> Path:
    """A resnet18 SPANet with random weights (and non-trivial BN statistics) saved like `spanet train` does."""
    import torch

    from spanet.checkpoint import save_checkpoint
    from spanet.model import SPANet

    torch.manual_seed(seed)
    model_args = {**MODEL_ARGS, "num_classes": num_classes}
    model = SPANet(**model_args)
    model.train()
    with torch.no_grad():  # a few forward passes give BN running statistics that differ from the defaults
        for _ in range(2):
            model(torch.rand(4, 3, *INPUT_SIZE))
    save_checkpoint(
        path,
        {"model": model.state_dict(), "model_args": model_args, "input_size": list(INPUT_SIZE), "config": {}},
    )
    return path


def make_images(folder: Path, *, count: int = 5, seed: int = 0, size: tuple[int, int] = (40, 90)) -> list[Path]:
    """`count` distinct random-coloured RGB JPEGs (width × height = `size`), in a nested folder layout."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        sub = folder / ("a" if i % 2 == 0 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        pixels[: size[1] // 2] = rng.integers(0, 256, size=3, dtype=np.uint8)  # a flat "shirt" block per image
        path = sub / f"{i:04d}_c1s1_{i:06d}_00.jpg"
        Image.fromarray(pixels).save(path, quality=95)
        paths.append(path)
    return paths


def write_images(folder: Path, names: list[str]) -> list[Path]:
    """Random 64×32 RGB images saved under the given file names (e.g. Market-style names carrying a person id)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name in names:
        Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(folder / name)
        paths.append(folder / name)
    return paths
