"""One training step and one pass over the loader: the part of training that runs on the device.

`train_step` is one optimisation step (the training benchmark times this very function); `train_one_epoch` one pass
over the loader that knows nothing about files. A step never waits for the device: the loss terms stay there and are
read every `StepSettings.read_every` steps (`train.log_every`), one host-device synchronisation per read, which also
checks for a non-finite loss and, under DDP, agrees on stopping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from spanet.config import LossConfig, OptimConfig
from spanet.errors import SpanetError
from spanet.runtime import autocast_dtype
from spanet.training.cluster_memory import ClusterMemory, memory_features
from spanet.training.distributed import DistInfo, any_rank
from spanet.training.optim import set_learning_rate

__all__ = ["TrainingDiverged", "StepSettings", "EpochSpan", "train_step", "train_one_epoch"]


class TrainingDiverged(SpanetError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass(frozen=True)
class StepSettings:
    """How every step of a run computes: the loss composition, the learning-rate schedule, precision and layout."""

    loss: LossConfig
    optim: OptimConfig
    amp: str = "none"  # none | bf16 | fp16 (autocast dtype)
    channels_last: bool = False
    read_every: int = 1  # steps between host reads of the loss (each read is one host-device synchronisation)


@dataclass(frozen=True)
class EpochSpan:
    """Where an epoch's pass starts and ends: epoch index (from 0), steps in a full epoch, first step to run."""

    epoch: int
    steps: int
    start_step: int = 0


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    settings: StepSettings,
    scaler: torch.amp.GradScaler | None = None,
    memory: ClusterMemory | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step: forward, named loss terms, weighted loss, backward, update; detached loss and terms.

    `inputs` (B, 3, H, W) and `targets` (B,) must be on the model's device. The values stay on the device (reading
    them is the caller's choice), so the benchmark times exactly the step training runs. With a cluster `memory`
    (`spanet adapt --memory-weight`) its contrastive term "memory", times its weight, is added to the loss and the
    memory moves towards the batch's features after the update.
    """
    from spanet.losses import classification_terms, weigh_terms

    dtype = autocast_dtype(settings.amp)
    if settings.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=inputs.device.type, dtype=dtype, enabled=dtype is not None):
        output = model(inputs)
        terms = classification_terms(output, targets, label_smoothing=settings.loss.label_smoothing)
        loss = weigh_terms(terms, weighting=settings.loss.weighting)
        if memory is not None:
            features = memory_features(output.part_features)
            terms["memory"] = memory.loss(features, targets)
            loss = loss + memory.weight * terms["memory"]
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    if memory is not None:
        memory.update(features, targets)
    return loss.detach(), {name: term.detach() for name, term in terms.items()}


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    settings: StepSettings,
    span: EpochSpan,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    dist_info: DistInfo = DistInfo(),
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[dict[str, Any]], None] = lambda record: None,
    memory: ClusterMemory | None = None,
) -> dict[str, Any]:
    """Train over `loader` from `span.start_step` up to `span.steps`; return the mean losses and where it stopped.

    Loss terms stay on the device and are read every `settings.read_every` steps, at a stop and at the end: a read
    is the only host-device synchronisation. At a read all ranks agree on whether to stop (a signal on any rank) or
    abort (a non-finite loss since the previous read on any rank), so DDP processes never wait for a peer that has
    left the loop. A non-finite loss raises `TrainingDiverged` before the caller writes any checkpoint.
    """
    from spanet.data.transforms import prepare_batch

    model.train()
    sums: dict[str, torch.Tensor] = {}  # on the device, since the start of this pass
    window = torch.zeros((), device=device)  # loss summed since the last read
    step, images, stopped, read_at, read = span.start_step, 0, False, span.start_step, _Read()
    started = time.perf_counter()
    batches: Iterator = iter(loader)
    while step < span.steps and not stopped:
        batch = _next_batch(batches, should_stop)
        if batch is None:
            stopped = should_stop()
            break
        pixels, boxes, pids, _camids, _indices = batch
        factor = set_learning_rate(optimizer, epoch=span.epoch + step / span.steps, optim_config=settings.optim)
        inputs = prepare_batch(pixels, boxes, device=device, channels_last=settings.channels_last)
        loss, terms = train_step(
            model, optimizer, inputs, pids.to(device, non_blocking=True), settings=settings, scaler=scaler,
            memory=memory,
        )
        current = {"loss": loss, **terms}
        for name, value in current.items():
            sums[name] = sums[name] + value.float() if name in sums else value.float()
        window = window + loss.float()
        step += 1
        images += inputs.shape[0] * dist_info.world_size
        elapsed = time.perf_counter() - started
        record = {"epoch": span.epoch, "epoch_step": step, "lr": factor * settings.optim.lr,
                  "images_per_s": images / elapsed if elapsed > 0 else 0.0}  # fmt: skip
        local_stop = dist_info.world_size == 1 and should_stop()  # under DDP a stop waits for the next read
        if step % max(settings.read_every, 1) == 0 or step == span.steps or local_stop:
            read = _read(current, sums, window, dist_info=dist_info, should_stop=should_stop)
            _stop_if_diverged(read, epoch=span.epoch, steps=(read_at + 1, step), lr=record["lr"])
            window, read_at, stopped = torch.zeros((), device=device), step, read.stopped
            record.update(loss=read.current["loss"], terms={k: v for k, v in read.current.items() if k != "loss"})
        on_step(record)
    if read_at < step:  # the loader ended between reads (a worker died after a stop): read what was trained
        read = _read(current, sums, window, dist_info=dist_info, should_stop=should_stop)
        _stop_if_diverged(read, epoch=span.epoch, steps=(read_at + 1, step), lr=record["lr"])
    done = step - span.start_step
    means = {name: total / max(done, 1) for name, total in read.sums.items()}
    elapsed = time.perf_counter() - started
    return {
        "epoch": span.epoch, "steps_done": done, "step": step, "stopped": stopped,
        "loss": means.pop("loss", float("nan")), "terms": means,
        "images_per_s": images / elapsed if elapsed > 0 else 0.0, "seconds": elapsed,
    }  # fmt: skip


def _stop_if_diverged(read: _Read, *, epoch: int, steps: tuple[int, int], lr: float) -> None:
    """Raise `TrainingDiverged` when the read found a non-finite loss in `steps` (first, last; 1-based)."""
    if read.diverged:
        where = f"step {steps[1]}" if steps[0] == steps[1] else f"steps {steps[0]}-{steps[1]}"
        raise TrainingDiverged(
            f"the loss became nan or inf at epoch {epoch + 1}, {where} (lr {lr:g}); training stopped and the last "
            "checkpoint was left intact; lower optim.lr, add optim.warmup_epochs or use train.amp=none"
        )


def _next_batch(batches: Iterator, should_stop: Callable[[], bool]) -> Any:
    """The next batch; None at the end of the loader, or when a worker died after a stop was requested."""
    try:
        return next(batches)
    except StopIteration:
        return None
    except RuntimeError:
        if should_stop():  # the signal also reached a worker: the main process still checkpoints
            return None
        raise


@dataclass(frozen=True)
class _Read:
    """What one host read of the device-side loss values gives."""

    current: dict[str, float] = field(default_factory=dict)  # this step's loss and terms
    sums: dict[str, float] = field(default_factory=dict)  # summed over the pass so far
    diverged: bool = False  # a non-finite loss since the previous read, on any rank
    stopped: bool = False  # a stop requested on any rank


def _read(
    current: dict[str, torch.Tensor],
    sums: dict[str, torch.Tensor],
    window: torch.Tensor,
    *,
    dist_info: DistInfo,
    should_stop: Callable[[], bool],
) -> _Read:
    """Copy the loss values to the host in ONE transfer (the step's only sync), with all ranks' stop/abort flags."""
    flags = torch.stack([(~torch.isfinite(window)).float(), torch.full((), float(should_stop()), device=window.device)])
    flags = any_rank(flags, info=dist_info)  # (2,) on the device: max over ranks, not read yet
    values = torch.cat([flags, *(v.float().view(1) for v in current.values()), *(v.view(1) for v in sums.values())])
    diverged, stopped, *numbers = values.tolist()
    return _Read(
        current=dict(zip(current, numbers[: len(current)])), sums=dict(zip(sums, numbers[len(current) :])),
        diverged=bool(diverged), stopped=bool(stopped),
    )  # fmt: skip
