"""Features with each camera's own batch-norm statistics: a per-camera colour cast is normalised away."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spanet.training.camera_bn import camera_bn_features, with_statistics_of


def _images(folder: Path, gain: tuple[float, float, float], *, seed: int = 0) -> list[str]:
    """Eight random pictures, the same for every `gain` (a camera's colour cast: RGB multipliers)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(8):
        pixels = rng.integers(20, 200, size=(16, 8, 3)).astype(np.float64) * np.array(gain)
        path = folder / f"{i}.png"
        Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_a_cameras_colour_cast_is_normalised_away(tmp_path: Path) -> None:
    from spanet.data.transforms import eval_transform

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Conv2d(3, 3, 1), torch.nn.Flatten()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain_cam = _images(tmp_path / "c1", (1.0, 1.0, 1.0))
    amber_cam = _images(tmp_path / "c2", (1.2, 1.0, 0.7))  # the same scenes under an amber cast
    transform = eval_transform((16, 8))

    def embed(net: torch.nn.Module, paths: list[str]) -> np.ndarray:
        with torch.no_grad():
            return net(torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])).numpy()

    paths, cameras = plain_cam + amber_cam, [1] * 8 + [2] * 8
    plain = embed(model, paths)
    per_camera = camera_bn_features(model, paths, cameras, input_size=(16, 8), embed=embed)
    gap_plain = np.abs(plain[:8] - plain[8:]).mean()
    gap_cbn = np.abs(per_camera[:8] - per_camera[8:]).mean()
    assert gap_cbn < 0.05 * gap_plain, (gap_cbn, gap_plain)  # only pixel rounding is left
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model itself is untouched
    copy = with_statistics_of(model, plain_cam, input_size=(16, 8), device=torch.device("cpu"))
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in plain_cam])
    torch.testing.assert_close(copy[0].running_mean, batch.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not copy.training and copy[0].momentum is None
