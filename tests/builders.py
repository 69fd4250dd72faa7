"""Small builders shared by the tests: a tiny checkpoint saved like `spanet train` does, images, a Market layout."""

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


MARKET_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
# train ids 7, 3, 12 (relabelled 1, 0, 2); query ids 21, 22; gallery ids 21, 22, distractor 0 and junk -1.
MARKET_FILES = {
    "train": ["0007_c1s1_000001_00.jpg", "0007_c2s1_000002_00.jpg", "0003_c1s1_000003_00.jpg",
              "0003_c3s1_000004_00.jpg", "0012_c2s1_000005_00.jpg"],
    "query": ["0021_c1s1_000010_00.jpg", "0022_c2s1_000011_00.jpg"],
    "gallery": ["0021_c2s1_000012_00.jpg", "0022_c1s1_000013_00.jpg", "0022_c3s1_000014_00.jpg",
                "0000_c1s1_000015_00.jpg", "-1_c1s1_000016_00.jpg", "-1_c2s1_000017_00.jpg"],
}


def write_image(path: Path, *, shade: int = 128, size: tuple[int, int] = (16, 32)) -> None:
    """A tiny solid-colour image (width, height) at `path`, format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade, 255 - shade, 64)).save(path)


def write_market(root: Path, files: dict[str, list[str]] | None = None) -> Path:
    """A Market-1501-layout folder with the given file names per split; returns `root`."""
    for split, names in (files or MARKET_FILES).items():
        (root / MARKET_DIRS[split]).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            write_image(root / MARKET_DIRS[split] / name, shade=(37 * i) % 256)
    return root


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(gallery: Path, checkpoint: Path, *, extra: tuple[str, ...] = (), timeout: float = 90.0):
    """`spanet serve` in a subprocess on a free 127.0.0.1 port, once /health answers; returns (process, base URL)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "spanet", "serve", "--gallery", str(gallery), "--checkpoint", str(checkpoint),
         "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"spanet serve exited: {process.stdout.read().decode(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"spanet serve did not answer on {url} within {timeout} s")


def write_own_data(market: Path, out: Path, *, layout: str, cameras: bool) -> Path:
    """Own-data fixture from a synthetic Market-layout folder: `folders` (out/<identity>/*.jpg) or `list` (a CSV).

    Distractors and junk are left out. `cameras=False` renames files without the `_cN` camera tag (folders) or
    leaves the CSV without a camid column. Returns the --data-root to pass (the folder or the CSV file).
    """
    import re
    import shutil

    rows = []
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
        for path in sorted((market / sub).glob("*.jpg")):
            pid = path.name.split("_")[0]
            if pid in ("-1", "0000"):
                continue
            name = path.name if cameras else re.sub(r"_c\d+", "", path.name)
            target = out / ("images" if layout == "list" else "") / pid / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
            rows.append((target.relative_to(out).as_posix(), int(pid), int(re.search(r"_c(\d+)", path.name)[1]) - 1))
    if layout == "folders":
        return out
    csv_path = out / "crops.csv"
    header = "path,pid,camid" if cameras else "path,pid"
    lines = [f"{p},{pid},{cam}" if cameras else f"{p},{pid}" for p, pid, cam in rows]
    csv_path.write_text("\n".join([header, *lines]) + "\n")
    return csv_path


FOOTAGE_START = "2024-05-01T08:00:00+00:00"


def ingest_args(foot: Path, gallery: Path, checkpoint: Path, *extra: str, cameras: tuple[int, ...] = (1, 2, 3)) -> list[str]:
    """`spanet ingest` of `synth-video` footage with each camera's ground-truth boxes as its detections."""
    args = ["ingest", "--gallery", str(gallery), "--checkpoint", str(checkpoint), "--device", "cpu",
            "--start-time", FOOTAGE_START, "--quiet", *extra]  # fmt: skip
    for cam in cameras:
        seq = foot / f"cam{cam}"
        args += ["--camera", str(cam), str(seq), "--detections", str(cam), str(seq / "gt" / "gt.txt")]
    return args


def ingest_synthetic_footage(root: Path, *, seed: int = 2) -> dict[str, Path]:
    """3 cameras, 4 people, 8 s of `synth-video` footage ingested into `root/people` with a random-weight model."""
    from spanet.cli import main

    assert main(["synth-video", str(root / "foot"), "--cameras", "3", "--people", "4", "--seconds", "8", "--fps", "10",
                 "--size", "256x144", "--seed", str(seed)]) == 0  # fmt: skip
    checkpoint = make_checkpoint(root / "model" / "last.pt")
    assert main(ingest_args(root / "foot", root / "people", checkpoint)) == 0
    return {"root": root, "foot": root / "foot", "gallery": root / "people", "checkpoint": checkpoint}



def write_calibration(path: Path, checkpoint: Path, threshold: float) -> Path:
    """A `spanet calibrate` file for `checkpoint` (its fingerprints and feature kind) holding `threshold`."""
    from spanet.evaluation.verification import save_calibration
    from spanet.features import FeatureExtractor

    info = FeatureExtractor(checkpoint, device="cpu").info
    return save_calibration(path, {"threshold": threshold, "metric": "euclidean", "feature_kind": info["kind"],
                                   "weights_fingerprint": info["weights_fingerprint"],
                                   "args_fingerprint": info["args_fingerprint"], "target": {"fpr": 1e-3},
                                   "calibration_data": {}})  # fmt: skip


def serve_app(gallery: Path, checkpoint: Path, monkeypatch, *extra: str) -> dict:
    """`spanet serve` with uvicorn replaced by a stub that starts nothing; {"app": the app it would have run}."""
    import sys
    import types

    from spanet.cli import main

    seen: dict = {}
    monkeypatch.setitem(sys.modules, "uvicorn", types.SimpleNamespace(run=lambda app, **_: seen.setdefault("app", app)))
    assert main(["serve", "--gallery", str(gallery), "--checkpoint", str(checkpoint), "--device", "cpu", *extra]) == 0
    return seen
