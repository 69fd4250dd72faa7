"""Crops/s of `spanet.ReID.get_features` — what a tracker pays per frame — at 1, 8, 32 and 128 boxes per frame.

    .venv/bin/python benchmarks/bench_tracker.py            # 3 interleaved rounds
    .venv/bin/python benchmarks/bench_tracker.py --quick    # 1 round, resnet18 only

Models (random weights: speed does not depend on their values): the demo model (ResNet-18 SPANet, 96×48 input,
`configs/cpu_demo.yaml`) and the paper model (ResNet-50 SPANet, 384×128). Precisions: fp32, and bf16 autocast with
channels_last weights (`ReID(..., amp=True, channels_last=True)`). Each call crops N boxes (about 60×150 pixels)
from a 640×360 BGR frame, converts, resizes, normalises and embeds them in batches of 32 through the one embedding
loop, so the time includes cropping and preprocessing, not only the network. Rounds are interleaved over settings so
load from other jobs on the shared cores hits all alike; the table gives the median round.
Results: benchmarks/results/tracker.json and tracker.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spanet.checkpoint import save_checkpoint
from spanet.deploy.reid import ReID
from spanet.model import SPANet
from spanet.runtime import retain_freed_memory

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {
    "demo: resnet18 96×48": ({"backbone": "resnet18", "num_classes": 751, "pretrained": None}, (96, 48)),
    "paper: resnet50 384×128": ({"backbone": "resnet50", "num_classes": 751, "pretrained": None}, (384, 128)),
}
BOXES = (1, 8, 32, 128)


def write_checkpoint(folder: Path, name: str, model_args: dict, input_size: tuple[int, int]) -> Path:
    torch.manual_seed(0)
    model = SPANet(**model_args)
    path = folder / f"{name.split(':')[0]}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "model_args": model_args, "input_size": list(input_size),
                           "config": {}})  # fmt: skip
    return path


def frame_and_boxes(count: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    x0, y0 = rng.uniform(0, 570, count), rng.uniform(0, 200, count)
    boxes = np.stack([x0, y0, x0 + rng.uniform(40, 70, count), y0 + rng.uniform(120, 160, count)], axis=1)
    return frame, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, the demo model only")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    retain_freed_memory()
    load_before = os.getloadavg()[0]
    models = dict(list(MODELS.items())[:1]) if args.quick else MODELS
    rounds = 1 if args.quick else args.rounds
    times: dict[tuple[str, str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        reids = {}
        for name, (model_args, size) in models.items():
            path = write_checkpoint(Path(tmp), name, model_args, size)
            reids[(name, "fp32")] = ReID(path, device="cpu", batch_size=32)
            reids[(name, "bf16 + channels_last")] = ReID(path, device="cpu", batch_size=32, amp=True, channels_last=True)
        warm_frame, warm_boxes = frame_and_boxes(8)
        for reid in reids.values():  # warm-up: first calls allocate and pick kernels
            reid.get_features(warm_boxes, warm_frame)
        for _ in range(rounds):
            for (name, precision), reid in reids.items():
                for count in BOXES:
                    frame, boxes = frame_and_boxes(count)
                    began = time.perf_counter()
                    reid.get_features(boxes, frame)
                    times.setdefault((name, precision, count), []).append(time.perf_counter() - began)
    rows = [{"model": n, "precision": p, "boxes": c, "median_s": statistics.median(t), "crops_per_s": c / statistics.median(t)}
            for (n, p, c), t in times.items()]  # fmt: skip
    write(rows, rounds=rounds, load=(load_before, os.getloadavg()[0]))


def write(rows: list[dict], *, rounds: int, load: tuple[float, float]) -> None:
    RESULTS.mkdir(exist_ok=True)
    env = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "rounds": rounds, "load_average_before_after": load}  # fmt: skip
    (RESULTS / "tracker.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
    lines = [
        f"# ReID.get_features throughput (crops/s, median of {rounds} interleaved rounds)",
        "",
        f"CPU: {env['cores']} cores ({env['cpu']}), 1-minute load average before / after {load[0]:.2f} / {load[1]:.2f}, "
        f"torch {env['torch']} ({env['threads']} threads); 640×360 BGR frame, boxes ~60×150 px, batch 32; time "
        "includes cropping and preprocessing.",
        "",
        "| model | precision | " + " | ".join(f"{c} boxes" for c in BOXES) + " |",
        "|---|---|" + "---:|" * len(BOXES),
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        for precision in dict.fromkeys(r["precision"] for r in rows):
            cells = [f"{r['crops_per_s']:.0f}" for c in BOXES for r in rows
                     if r["model"] == model and r["precision"] == precision and r["boxes"] == c]  # fmt: skip
            lines.append(f"| {model} | {precision} | " + " | ".join(cells) + " |")
    (RESULTS / "tracker.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
