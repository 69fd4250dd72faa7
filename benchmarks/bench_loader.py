"""Training-loader throughput (images/s) with 0/1/2 workers, and the CPU cost of one image, on synthetic JPEGs.

Two image sizes stand for the benchmark datasets: Market-1501's 64×128 crops and larger MSMT17-like 160×384 crops,
both resized to the paper's 384×128. A batch counts as delivered once it is a normalised float batch ready for the
model: when the loader yields uint8 (`spanet.data.transforms.prepare_batch` exists), the float conversion,
normalisation and erasing run in the main process here, as they run on the training device in `spanet train`.
Works against any spanet checkout (run it with PYTHONPATH=OLD/src for a before/after comparison in one session):
    PYTHONPATH=src python benchmarks/bench_loader.py --label after
Writes benchmarks/results/loader_<label>.json; `--compare before after` writes loader.md from two of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
SOURCES = {"market (64x128 JPEG)": (64, 128), "msmt17-like (160x384 JPEG)": (160, 384)}


def write_jpegs(folder: Path, *, width: int, height: int, count: int) -> list:
    from spanet.data.datasets import Sample

    rng = np.random.default_rng(0)
    samples = []
    for index in range(count):
        pixels = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)  # blocky, JPEG-like content
        image = Image.fromarray(pixels).resize((width, height), Image.BILINEAR)
        path = folder / f"{index:04d}.jpg"
        image.save(path, quality=90)
        samples.append(Sample(str(path), index % 16, index % 6))
    return samples


def loader_speed(samples: list, *, workers: int, batch: int, epochs: int) -> float:
    from spanet.config import DataConfig
    from spanet.data import loader as loader_module
    from spanet.data import transforms

    prepare = getattr(transforms, "prepare_batch", None)
    config = DataConfig(root="x", batch_size=batch, num_workers=workers)
    build = loader_module.build_train_loader
    images, started = 0, None
    persistent = build(samples, config, seed=0, epoch=0) if hasattr(loader_module, "set_loader_epoch") else None
    for epoch in range(epochs + 1):  # epoch 0 warms up (worker start, page cache)
        if persistent is not None:
            loader_module.set_loader_epoch(persistent, epoch=epoch)
            loader = persistent
        else:
            loader = build(samples, config, seed=0, epoch=epoch)
        if epoch == 1:
            started = time.perf_counter()
        for batch_items in loader:
            if prepare is not None:
                prepare(batch_items[0], batch_items[1], device=torch.device("cpu"))
            if epoch >= 1:
                images += batch_items[0].shape[0]
    return images / (time.perf_counter() - started)


def cpu_cost_per_image(samples: list, *, repeats: int, batch: int) -> dict[str, float]:
    """Milliseconds of one CPU core per image: the worker half (one image at a time) and the batch half, if any."""
    from spanet.config import DataConfig
    from spanet.data import loader as loader_module
    from spanet.data import transforms

    prepare = getattr(transforms, "prepare_batch", None)
    loader = loader_module.build_train_loader(samples, DataConfig(root="x", batch_size=batch, num_workers=0), seed=0, epoch=0)
    dataset = loader.dataset
    keys = list(loader.sampler)
    worker, device = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        items = [dataset[key] for key in keys]
        worker.append((time.perf_counter() - started) / len(keys) * 1000)
        if prepare is not None:
            batches = [torch.utils.data.default_collate(items[i : i + batch]) for i in range(0, len(items) - batch + 1, batch)]
            started = time.perf_counter()
            for pixels, boxes, *_ in batches:
                prepare(pixels, boxes, device=torch.device("cpu"))
            device.append((time.perf_counter() - started) / (len(batches) * batch) * 1000)
    cost = {"worker_ms": statistics.median(worker), "batch_ms": statistics.median(device) if device else 0.0}
    cost["total_ms"] = cost["worker_ms"] + cost["batch_ms"]
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="current", help="name of this measurement (default current; before/after)")
    parser.add_argument("--compare", nargs="+", metavar="LABEL", help="write loader.md from earlier loader_LABEL.json")
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if args.compare:
        (RESULTS / "loader.md").write_text(_markdown([json.loads((RESULTS / f"loader_{n}.json").read_text()) for n in args.compare]))
        return
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (width, height) in SOURCES.items():
            folder = Path(tmp) / name.split()[0]
            folder.mkdir()
            samples = write_jpegs(folder, width=width, height=height, count=args.images)
            row = {"source": name, **cpu_cost_per_image(samples, repeats=3, batch=args.batch)}
            for workers in (0, 1, 2):
                row[f"images_per_s_{workers}_workers"] = loader_speed(
                    samples, workers=workers, batch=args.batch, epochs=args.epochs
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"label": args.label, "torch": torch.__version__, "batch": args.batch, "images": args.images, "rows": rows}
    (RESULTS / f"loader_{args.label}.json").write_text(json.dumps(result, indent=2) + "\n")


def _markdown(results: list[dict]) -> str:
    lines = [
        f"Training loader on synthetic JPEGs resized to 384x128, batch {results[0]['batch']}, one torch thread; "
        "images/s until a normalised float batch is ready (0 workers: everything in the main process).",
        "",
        "| code | source | CPU ms/image (worker + batch half) | 0 workers | 1 worker | 2 workers |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            lines.append(
                f"| {result['label']} | {row['source']} | {row['total_ms']:.3f} ({row['worker_ms']:.3f} + "
                f"{row['batch_ms']:.3f}) | {row['images_per_s_0_workers']:.0f} | {row['images_per_s_1_workers']:.0f} "
                f"| {row['images_per_s_2_workers']:.0f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
