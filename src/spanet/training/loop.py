"""The training loop as plain functions: build the pieces, run epochs, evaluate, checkpoint, resume.

`train(config, output_dir=...)` is the whole run; `train_one_epoch` is one pass over the loader and knows nothing
about files. Exact resume comes from three facts: the sampler order depends only on (seed, epoch), the torch RNG is
re-seeded from (seed, epoch, rank) at the start of every epoch, and a checkpoint holds every other piece of state
(weights, optimiser, grad scaler, RNG state, the step reached inside an interrupted epoch).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from spanet.checkpoint import check_model_config, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from spanet.config import Config, LossConfig, ModelConfig, OptimConfig, config_to_dict, save_config
from spanet.training.distributed import (
    DistInfo,
    any_flag,
    barrier,
    broadcast_buffers,
    init_distributed,
    shutdown_distributed,
)
from spanet.errors import SpanetError
from spanet.data.loader import build_train_loader, epoch_seed
from spanet.training.optim import build_optimizer, lr_factor, set_learning_rate
from spanet.run_dir import RunLog
from spanet.training.stopping import StopRequest

__all__ = [
    "TrainingDiverged",
    "build_model",
    "build_train_loader",
    "build_optimizer",
    "lr_factor",
    "train_one_epoch",
    "train",
]


class TrainingDiverged(SpanetError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


def build_model(model_config: ModelConfig, *, num_classes: int) -> nn.Module:
    """`SPANet` from the config's model section (its fields are exactly the constructor's keywords)."""
    from spanet.model import SPANet

    return SPANet(num_classes=num_classes, **dataclasses.asdict(model_config))


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    epoch: int,
    steps: int,
    start_step: int = 0,
    device: torch.device,
    loss_config: LossConfig,
    optim_config: OptimConfig,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    dist_info: DistInfo = DistInfo(),
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[dict[str, Any]], None] = lambda record: None,
) -> dict[str, Any]:
    """Train over `loader` from `start_step` up to `steps`; return the epoch's mean losses and where it stopped.

    All ranks agree each step on whether to stop (a signal on any rank) or abort (a non-finite loss on any rank),
    so DDP processes never wait for a peer that has left the loop.
    """
    from spanet.losses import classification_terms, weigh_terms

    model.train()
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    sums: dict[str, float] = {}
    step = start_step
    images = 0
    stopped = False
    started = time.perf_counter()
    batches: Iterator = iter(loader)
    while step < steps:
        try:
            inputs, pids, _camids, _indices = next(batches)
        except StopIteration:
            break
        factor = set_learning_rate(optimizer, epoch=epoch + step / steps, optim_config=optim_config)
        inputs = inputs.to(device, non_blocking=True)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        pids = pids.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            output = model(inputs)
            terms = classification_terms(output, pids, label_smoothing=loss_config.label_smoothing)
            loss = weigh_terms(terms, weighting=loss_config.weighting)
        loss_value = float(loss.detach().float().item())
        diverged, stopped = any_flag([not math.isfinite(loss_value), should_stop()], info=dist_info, device=device)
        if diverged:
            raise TrainingDiverged(
                f"the loss became {loss_value} at epoch {epoch + 1}, step {step + 1} (lr {factor * optim_config.lr:g}); "
                "training stopped and the last checkpoint was left intact; lower optim.lr, add optim.warmup_epochs "
                "or use train.amp=none"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        step += 1
        images += inputs.shape[0] * dist_info.world_size
        values = {"loss": loss_value, **{name: float(term.detach().float().item()) for name, term in terms.items()}}
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        elapsed = time.perf_counter() - started
        on_step(
            {
                "epoch": epoch,
                "epoch_step": step,
                "loss": loss_value,
                "terms": {name: value for name, value in values.items() if name != "loss"},
                "lr": factor * optim_config.lr,
                "images_per_s": images / elapsed if elapsed > 0 else 0.0,
            }
        )
        if stopped:
            break
    done = step - start_step
    means = {name: total / max(done, 1) for name, total in sums.items()}
    elapsed = time.perf_counter() - started
    return {
        "epoch": epoch,
        "steps_done": done,
        "step": step,
        "stopped": stopped,
        "loss": means.pop("loss", float("nan")),
        "terms": means,
        "images_per_s": images / elapsed if elapsed > 0 else 0.0,
        "seconds": elapsed,
    }


def train(config: Config, *, output_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Run (or continue) a training run into `output_dir`; return a summary with the trained model.

    Writes `config.yaml`, `log.jsonl`, `tb/`, `last.pt` every epoch and `best.pt` (highest mAP) on evaluation.
    Under torchrun every process trains its share of each batch; only rank 0 writes files and prints.
    """
    from spanet.data.datasets import load_dataset

    output_dir = Path(output_dir)
    if not config.data.root:
        raise SpanetError("data.root is empty; pass --data-root DIR or set data.root in the config file")
    if config.train.amp == "fp16" and not config.train.device.startswith(("cuda", "auto")):
        raise SpanetError("train.amp=fp16 needs CUDA; on a CPU use train.amp=bf16 or none")
    dist_info, device = init_distributed(config.train.device)
    try:
        if config.train.amp == "fp16" and device.type != "cuda":
            raise SpanetError("train.amp=fp16 needs CUDA, and none is available; use train.amp=bf16 or none")
        dataset = load_dataset(config.data.dataset, config.data.root)
        return _run(config, dataset, output_dir=output_dir, resume=resume, dist_info=dist_info, device=device)
    finally:
        shutdown_distributed(dist_info)


def _run(
    config: Config, dataset: Any, *, output_dir: Path, resume: bool, dist_info: DistInfo, device: torch.device
) -> dict[str, Any]:
    last_path, best_path = output_dir / "last.pt", output_dir / "best.pt"
    checkpoint = _prepare_output(config, output_dir, resume=resume, num_classes=dataset.num_train_ids)
    barrier(dist_info)  # rank 0 has checked and created the folder
    torch.manual_seed(config.train.seed)  # identical initial weights on every rank
    model = build_model(config.model, num_classes=dataset.num_train_ids).to(device)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=config.train.amp == "fp16")
    start_epoch, start_step, best_map, best_epoch, metrics = 0, 0, None, None, {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, start_step = int(checkpoint["epoch"]), int(checkpoint.get("step_in_epoch", 0))
        best_map, best_epoch = checkpoint.get("best_metric"), checkpoint.get("best_epoch")
        metrics = dict(checkpoint.get("metrics") or {})
    wrapped = model
    if dist_info.world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    run_log = RunLog(output_dir, enabled=dist_info.is_main)
    epochs = config.optim.epochs
    steps_per_epoch = _steps_per_epoch(dataset, config, dist_info)
    say = _printer(dist_info)
    if start_epoch >= epochs:
        say(f"{last_path} already holds all {epochs} epochs; raise --epochs to train further")
    stop = StopRequest(announce=say)
    interrupted = False
    started = time.perf_counter()

    def state(epoch: int, step_in_epoch: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "model_args": {"num_classes": dataset.num_train_ids, **dataclasses.asdict(config.model)},
            "input_size": [config.data.height, config.data.width],
            "config": config_to_dict(config),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": {"kind": "multistep", "epoch": epoch + step_in_epoch / steps_per_epoch},
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "metrics": metrics,
            "best_metric": best_map,
            "best_epoch": best_epoch,
            "dataset": config.data.dataset,
        }

    with stop.installed():
        try:
            for epoch in range(start_epoch, epochs):
                torch.manual_seed(epoch_seed(config.train.seed, epoch, dist_info.rank))
                skip = start_step if epoch == start_epoch else 0
                if skip and checkpoint is not None and dist_info.world_size == 1:
                    restore_rng_state(checkpoint["rng"])
                loader = build_train_loader(
                    dataset.train, config.data, seed=config.train.seed, epoch=epoch,
                    rank=dist_info.rank, world_size=dist_info.world_size, skip_batches=skip,
                )  # fmt: skip
                result = _epoch_with_progress(
                    wrapped, optimizer, loader, config=config, epoch=epoch, steps=steps_per_epoch, start_step=skip,
                    device=device, scaler=scaler, dist_info=dist_info, stop=stop, run_log=run_log,
                )  # fmt: skip
                global_step = epoch * steps_per_epoch + result["step"]
                broadcast_buffers(model, info=dist_info)
                finished_epoch = result["step"] >= steps_per_epoch or not result["stopped"]
                if not finished_epoch:
                    interrupted = True
                    _save_if_finite(model, last_path, state(epoch, result["step"]), dist_info)
                    break
                record = {key: result[key] for key in ("loss", "terms", "images_per_s", "seconds")}
                run_log.write({"type": "epoch", "epoch": epoch + 1, "step": global_step, **record}, step=global_step)
                last_epoch = epoch + 1 == epochs
                if (last_epoch or not result["stopped"]) and _eval_due(epoch, epochs, config.train.eval_every):
                    metrics = _evaluate(model, dataset, config, device=device, dist_info=dist_info)
                    if dist_info.is_main:
                        run_log.write({"type": "eval", "epoch": epoch + 1, "step": global_step, **metrics}, step=global_step)
                        say(f"epoch {epoch + 1}: rank-1 {metrics['rank1']:.2%}  mAP {metrics['mAP']:.2%}")
                        if best_map is None or metrics["mAP"] > best_map:
                            best_map, best_epoch = metrics["mAP"], epoch + 1
                            _save_if_finite(model, best_path, state(epoch + 1, 0), dist_info)
                _save_if_finite(model, last_path, state(epoch + 1, 0), dist_info)
                if result["stopped"]:
                    interrupted = not last_epoch
                    break
        finally:
            run_log.close()
    if interrupted:
        say(
            f"stopped by {stop.signal_name}; checkpoint saved to {last_path}. Resume with: "
            f"spanet train --config {output_dir / 'config.yaml'} --output {output_dir} --resume"
        )
    return {
        "output_dir": str(output_dir),
        "rank": dist_info.rank,  # under torchrun only rank 0 should report
        "interrupted": interrupted,
        "epochs": epochs,
        "last_checkpoint": str(last_path),
        "best_checkpoint": str(best_path) if best_map is not None else None,
        "best_mAP": best_map,
        "best_epoch": best_epoch,
        "final_metrics": metrics,
        "seconds": time.perf_counter() - started,
        "model": model,
    }


def _prepare_output(config: Config, output_dir: Path, *, resume: bool, num_classes: int) -> dict[str, Any] | None:
    """Check the folder against `resume`, write the resolved config; return the checkpoint to resume from."""
    last_path = output_dir / "last.pt"
    checkpoint = None
    if resume:
        if not last_path.is_file():
            raise SpanetError(f"--resume: {last_path} does not exist; drop --resume to start a new run in {output_dir}")
        checkpoint = load_checkpoint(last_path)
        check_model_config(checkpoint["config"]["model"], config_to_dict(config)["model"], path=last_path)
        if checkpoint["model_args"].get("num_classes") != num_classes:
            raise SpanetError(
                f"--resume: {last_path} was trained on {checkpoint['model_args'].get('num_classes')} identities but "
                f"{config.data.dataset} at {config.data.root} has {num_classes}; resume with the same dataset"
            )
    elif last_path.exists():
        raise SpanetError(f"{output_dir} already holds a run (last.pt); pass --resume to continue it or choose a new --output")
    if _is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")
    return checkpoint


def _epoch_with_progress(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    config: Config,
    epoch: int,
    steps: int,
    start_step: int,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    dist_info: DistInfo,
    stop: StopRequest,
    run_log: RunLog,
) -> dict[str, Any]:
    """`train_one_epoch` with a tqdm bar and a step record every `log_every` steps."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{config.optim.epochs}", unit="step",
        disable=not (dist_info.is_main and config.train.progress), dynamic_ncols=True, leave=False,
    )  # fmt: skip

    def on_step(record: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2g}", img_s=f"{record['images_per_s']:.1f}")
        step_in_epoch = record.pop("epoch_step")
        if step_in_epoch % max(config.train.log_every, 1) == 0 or step_in_epoch == steps:
            global_step = epoch * steps + step_in_epoch
            run_log.write({"type": "step", **record, "epoch": epoch + 1, "step": global_step}, step=global_step)

    try:
        return train_one_epoch(
            model, optimizer, loader, epoch=epoch, steps=steps, start_step=start_step, device=device,
            loss_config=config.loss, optim_config=config.optim, amp=config.train.amp, scaler=scaler,
            channels_last=config.train.channels_last, dist_info=dist_info, should_stop=stop.requested, on_step=on_step,
        )  # fmt: skip
    finally:
        bar.close()


def _evaluate(model: nn.Module, dataset: Any, config: Config, *, device: torch.device, dist_info: DistInfo) -> dict:
    """Rank-1/mAP on query/gallery (`spanet.evaluation.evaluate`), computed by rank 0 while the other ranks wait."""
    metrics: dict[str, float] = {}
    if dist_info.is_main:
        from spanet.evaluation.evaluate import evaluate_model

        result = evaluate_model(
            model, dataset, input_size=(config.data.height, config.data.width), batch_size=config.train.eval_batch_size,
            device=device, flip=config.train.eval_flip, progress=config.train.progress,
            num_workers=config.data.num_workers, amp=None if config.train.amp == "none" else True,
        )  # fmt: skip
        metrics = {key: float(getattr(result, key)) for key in ("rank1", "rank5", "rank10", "mAP", "mINP")}
    barrier(dist_info)
    return metrics


def _save_if_finite(model: nn.Module, path: Path, state: dict[str, Any], dist_info: DistInfo) -> None:
    """Write a checkpoint from rank 0, refusing weights that hold NaN/inf (so the previous one stays good)."""
    if not dist_info.is_main:
        return
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise TrainingDiverged(f"the weights hold NaN/inf; {path} was not overwritten; lower optim.lr and restart")
    save_checkpoint(path, state)


def _steps_per_epoch(dataset: Any, config: Config, dist_info: DistInfo) -> int:
    loader = build_train_loader(
        dataset.train, config.data, seed=config.train.seed, epoch=0, rank=dist_info.rank, world_size=dist_info.world_size
    )
    steps = len(loader)
    if config.train.max_steps_per_epoch is not None:
        steps = min(steps, config.train.max_steps_per_epoch)
    if steps < 1:
        raise SpanetError(
            f"{config.data.dataset} at {config.data.root} has {len(dataset.train)} training images, fewer than one "
            f"batch of {config.data.batch_size}; lower data.batch_size"
        )
    return steps


def _eval_due(epoch: int, epochs: int, every: int) -> bool:
    return every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == epochs)


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def _printer(dist_info: DistInfo) -> Callable[[str], None]:
    def say(message: str) -> None:
        if dist_info.is_main:
            print(message, file=sys.stderr, flush=True)

    return say
