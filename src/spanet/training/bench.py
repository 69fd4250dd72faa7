"""`spanet bench`: how fast this machine trains and embeds a config's model, before any dataset is downloaded.

Everything is synthetic (random tensors, random JPEGs in a temporary folder) and measured with the functions that
`spanet train` and `spanet evaluate` run: `train_step` per precision the device supports (eager and, when asked,
`torch.compile`d), `spanet.features.extract_features` for embedding, `build_train_loader` + `prepare_batch` for the
loader with 0..N workers. The estimated epoch time of each benchmark dataset is its training-set size over the
rate of the fastest training mode with the best loader setting measured (workers load beside the step; without
workers, loading adds to it).
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spanet.config import Config, LossConfig, OptimConfig
from spanet.runtime import choose_precision, cpu_info

__all__ = ["BenchSettings", "TINY", "run_bench", "format_bench", "supported_precisions"]

NUM_CLASSES = 751  # Market-1501's training identities: the classifier size of a real run
TRAIN_IMAGES = {"market1501": 12936, "dukemtmc": 16522, "cuhk03_labeled": 7368, "msmt17": 32621}


@dataclass(frozen=True)
class BenchSettings:
    """How much to measure. `None` sizes come from the config (its input size, batch and backbone)."""

    warmup: int = 2  # untimed steps per case
    steps: int = 5  # timed steps per case (median of per-step rates)
    compile: bool = True  # also time torch.compile'd steps (60-80 s of compilation per precision on a CPU)
    workers: tuple[int, ...] = (0, 1, 2)
    loader_images: int = 384
    embed_images: int = 256
    batch: int | None = None
    input_size: tuple[int, int] | None = None
    backbone: str | None = None


TINY = BenchSettings(warmup=1, steps=2, compile=False, workers=(0, 1), loader_images=16, embed_images=8, batch=4,
                     input_size=(64, 32), backbone="resnet18")  # fmt: skip


def supported_precisions(device: torch.device) -> list[str]:
    """The autocast modes that run here: fp32 always, bf16 where PyTorch offers it (on a CPU also where it is only
    emulated, so the bench shows what that costs), fp16 on CUDA."""
    if device.type == "cuda":
        return ["fp32", "bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]
    return ["fp32", "bf16"] if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else ["fp32"]


def run_bench(config: Config, *, device: torch.device, settings: BenchSettings = BenchSettings()) -> dict[str, Any]:
    """Measure training, embedding and loading speed of `config`'s model on `device`; return the numbers."""
    height, width = settings.input_size or (config.data.height, config.data.width)
    batch = settings.batch or config.data.batch_size
    model_config = dataclasses.replace(config.model, pretrained=None, backbone=settings.backbone or config.model.backbone)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    shape = {"batch": batch, "height": height, "width": width}
    train_rows = []
    modes = [(precision, layout) for precision in supported_precisions(device) for layout in (False, True)]
    for precision, layout in modes:
        for compiled in (False, True) if settings.compile else (False,):
            train_rows.append(_train_speed(model_config, device=device, precision=precision, channels_last=layout,
                                           compiled=compiled, settings=settings, **shape))  # fmt: skip
    embed_rows = [_embed_speed(model_config, device=device, precision=p, channels_last=layout, settings=settings,
                               **shape) for p, layout in modes]  # fmt: skip
    loader_rows = _loader_speed(config, device=device, settings=settings, **shape)
    fastest = max(row["images_per_s"] for row in train_rows)
    overall = max(_overall_rate(fastest, row) for row in loader_rows)
    bound = "loader" if overall < 0.95 * fastest else "model"
    epochs = {name: {"seconds": images / overall, "bound": bound} for name, images in TRAIN_IMAGES.items()}
    auto = choose_precision("auto", device)
    return {
        "device": str(device), "torch": torch.__version__, "backbone": model_config.backbone, **shape,
        "cpu": cpu_info().to_json(), "auto_precision": auto.to_json(),
        "threads": torch.get_num_threads(), "train": train_rows, "embed": embed_rows, "loader": loader_rows,
        "epoch_estimate": epochs, "host_peak_rss_mb": _host_peak_mb(),
    }  # fmt: skip


def _train_speed(model_config: Any, *, device: torch.device, precision: str, channels_last: bool, compiled: bool,
                 settings: BenchSettings, batch: int, height: int, width: int) -> dict[str, Any]:  # fmt: skip
    from spanet.training.loop import StepSettings, build_model, train_step
    from spanet.training.optim import build_optimizer

    torch.manual_seed(0)
    model = build_model(model_config, num_classes=NUM_CLASSES).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, OptimConfig())
    runner = torch.compile(model) if compiled else model
    step_settings = StepSettings(loss=LossConfig(), optim=OptimConfig(), amp="none" if precision == "fp32" else precision,
                                 channels_last=channels_last)  # fmt: skip
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    inputs = torch.randn(batch, 3, height, width, device=device)
    targets = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    _reset_device_peak(device)
    started = time.perf_counter()
    for _ in range(settings.warmup):
        train_step(runner, optimizer, inputs, targets, settings=step_settings, scaler=scaler)
    _sync(device)
    warmup_s = time.perf_counter() - started
    rates = _timed(lambda: train_step(runner, optimizer, inputs, targets, settings=step_settings, scaler=scaler),
                   device=device, steps=settings.steps, batch=batch)  # fmt: skip
    return {"precision": precision, "channels_last": channels_last, "compiled": compiled, "images_per_s": rates,
            "warmup_s": warmup_s, "device_peak_mb": _device_peak_mb(device)}  # fmt: skip


def _embed_speed(model_config: Any, *, device: torch.device, precision: str, channels_last: bool,
                 settings: BenchSettings, batch: int, height: int, width: int) -> dict[str, Any]:  # fmt: skip
    from spanet.features import ExtractionOptions, extract_features
    from spanet.training.loop import build_model

    torch.manual_seed(0)
    model = build_model(model_config, num_classes=NUM_CLASSES).to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(settings.embed_images)]
    options = ExtractionOptions(batch_size=batch, device=device, amp="none" if precision == "fp32" else precision,
                                channels_last=channels_last, progress=False)  # fmt: skip
    with warnings.catch_warnings():  # emulated bf16 is timed on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        extract_features(model, images[:batch], input_size=(height, width), options=options)  # warm-up
        _reset_device_peak(device)
        started = time.perf_counter()
        extract_features(model, images, input_size=(height, width), options=options)
    _sync(device)
    return {"precision": precision, "channels_last": channels_last,
            "images_per_s": len(images) / (time.perf_counter() - started), "device_peak_mb": _device_peak_mb(device)}


def _loader_speed(config: Config, *, device: torch.device, settings: BenchSettings,
                  batch: int, height: int, width: int) -> list[dict[str, Any]]:  # fmt: skip
    """Images/s of the training loader on synthetic 64×128 JPEGs (Market-1501's size), ready on `device`."""
    from PIL import Image

    from spanet.data.datasets import Sample
    from spanet.data.loader import build_train_loader, set_loader_epoch
    from spanet.data.transforms import prepare_batch

    rows = []
    with tempfile.TemporaryDirectory(prefix="spanet-bench-") as folder:
        rng = np.random.default_rng(0)
        samples = []
        for index in range(max(settings.loader_images, 2 * batch)):
            path = Path(folder) / f"{index:05d}.jpg"
            blocks = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)  # smooth-ish content compresses like photos
            Image.fromarray(blocks).resize((64, 128), Image.BILINEAR).save(path, quality=90)
            samples.append(Sample(str(path), index % 32, index % 6))
        for workers in settings.workers:
            data = dataclasses.replace(config.data, height=height, width=width, batch_size=batch, num_workers=workers,
                                       num_instances=0)  # fmt: skip
            loader = build_train_loader(samples, data, seed=0)
            rates = []
            for epoch in range(2):  # the first pass starts the (persistent) workers
                set_loader_epoch(loader, epoch=epoch)
                started, images = time.perf_counter(), 0
                for pixels, boxes, *_ in loader:
                    prepare_batch(pixels, boxes, device=device)
                    images += pixels.shape[0]
                _sync(device)
                rates.append(images / (time.perf_counter() - started))
            del loader
            rows.append({"workers": workers, "images_per_s": rates[-1]})
    return rows


def _overall_rate(model_rate: float, loader_row: dict[str, Any]) -> float:
    """Training images/s with this loader: workers run beside the step, without workers loading adds to it."""
    rate = loader_row["images_per_s"]
    return min(model_rate, rate) if loader_row["workers"] else 1 / (1 / model_rate + 1 / rate)


def _timed(step: Callable[[], Any], *, device: torch.device, steps: int, batch: int) -> float:
    rates = []
    for _ in range(max(steps, 1)):
        started = time.perf_counter()
        step()
        _sync(device)
        rates.append(batch / (time.perf_counter() - started))
    return statistics.median(rates)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_device_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _device_peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _host_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def format_bench(result: dict[str, Any]) -> str:
    """The human table: one line per measurement, then the epoch estimates."""
    lines = [f"spanet bench: {result['backbone']} at {result['height']}x{result['width']}, batch {result['batch']}, "
             f"{result['device']}, torch {result['torch']}, {result['threads']} threads"]  # fmt: skip
    if result["device"].startswith("cpu"):
        cpu = result["cpu"]
        lines.append(f"CPU kernels {cpu['capability']}, AMX {'yes' if cpu['amx'] else 'no'}, AVX512-BF16 "
                     f"{'yes' if cpu['avx512_bf16'] else 'no'}: bf16 is {'native' if cpu['native_bf16'] else 'emulated'}")
    auto = result["auto_precision"]
    lines += [f"amp auto chooses here: {_mode(auto['amp'], auto['channels_last'])} ({auto['reason']})", "",
              f"{'what':<34}{'images/s':>10}{'device peak MB':>16}"]  # fmt: skip

    def peak(row: dict[str, Any]) -> str:
        return f"{row['device_peak_mb']:>16.0f}" if row.get("device_peak_mb") is not None else f"{'-':>16}"

    for row in result["train"]:
        name = f"train {_mode(row['precision'], row['channels_last'])} {'compiled' if row['compiled'] else 'eager'}"
        lines.append(f"{name:<34}{row['images_per_s']:>10.1f}{peak(row)}")
    for row in result["embed"]:
        name = f"embed {_mode(row['precision'], row['channels_last'])}"
        lines.append(f"{name:<34}{row['images_per_s']:>10.1f}{peak(row)}")
    for row in result["loader"]:
        lines.append(f"{'loader, ' + str(row['workers']) + ' workers (64x128 JPEG)':<34}{row['images_per_s']:>10.1f}{'-':>16}")
    lines += ["", f"host peak resident memory: {result['host_peak_rss_mb']:.0f} MB", "estimated epoch time "
              "(fastest training mode with the best loader setting measured):"]  # fmt: skip
    for name, estimate in result["epoch_estimate"].items():
        lines.append(f"  {name:<16}{TRAIN_IMAGES[name]:>7} images  {estimate['seconds'] / 60:8.1f} min  ({estimate['bound']}-bound)")
    return "\n".join(lines)


def _mode(precision: str, channels_last: bool) -> str:
    return {"none": "fp32"}.get(precision, precision) + ("+channels_last" if channels_last else "")
