"""The training loop as plain functions: build the pieces, run epochs, evaluate, checkpoint, resume.

Three levels a reader can hold one at a time: `train_step` is one optimisation step (the training benchmark times
this very function), `train_one_epoch` one pass over the loader that knows nothing about files, and
`train(config, output_dir=...)` the whole run: epochs, evaluation, checkpoints, resume. Exact resume comes from four
facts: the sampler order depends only on (seed, epoch), each sample's augmentation only on (seed, epoch, index)
(whatever the loader workers), the torch RNG is re-seeded from (seed, epoch, rank) at the start of every epoch, and
a checkpoint holds every other piece of state (weights, optimiser, grad scaler, RNG state, the step reached inside
an interrupted epoch).

`train_step` and `train_one_epoch` live in `spanet.training.step` (re-exported here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from spanet.checkpoint import check_model_config, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from spanet.config import Config, ModelConfig, config_to_dict, save_config
from spanet.training.cluster_memory import ClusterMemory
from spanet.training.distributed import (
    DistInfo,
    barrier,
    broadcast_buffers,
    init_distributed,
    shutdown_distributed,
)
from spanet.errors import SpanetError
from spanet.data.loader import build_train_loader, epoch_seed, set_loader_epoch, shutdown_loader
from spanet.training.optim import build_optimizer, lr_factor
from spanet.data.own import save_split_list
from spanet.training.settings import check_resume_settings
from spanet.run_dir import BEST_CHECKPOINT, CONFIG_FILE, LAST_CHECKPOINT, RunLog, check_output_dir, move_aside
from spanet.run_dir import remove_stale_temp_files
from spanet.runtime import Precision, choose_precision, cpu_info, resolve_device
from spanet.training.step import EpochSpan, StepSettings, TrainingDiverged, train_one_epoch, train_step
from spanet.training.measure import attention_probe, attention_spread, calibrate, final_test, validate
from spanet.training.stopping import StopRequest

__all__ = [
    "TrainingDiverged",
    "build_model",
    "build_train_loader",
    "build_optimizer",
    "lr_factor",
    "StepSettings",
    "EpochSpan",
    "train_step",
    "train_one_epoch",
    "train",
    "train_on_dataset",
]


def build_model(model_config: ModelConfig, *, num_classes: int) -> nn.Module:
    """`SPANet` from the config's model section (its fields are exactly the constructor's keywords)."""
    from spanet.model import SPANet

    return SPANet(num_classes=num_classes, **dataclasses.asdict(model_config))


def train(
    config: Config, *, output_dir: str | Path, resume: bool = False, overwrite: bool = False, allow_changed: bool = False
) -> dict[str, Any]:
    """Run (or continue) a training run into `output_dir`; return a summary with the trained model.

    Writes `config.yaml`, `log.jsonl`, `tb/`, `last.pt` every epoch and, with `data.val_ids > 0`, `best.pt`
    (highest validation mAP) and at the end each one's same-person threshold on the validation identities
    (`calibration.json`, `best.calibration.json`).
    A non-empty `output_dir` is refused unless `resume` (continue it) or `overwrite` (move it aside first).
    A resume with changed settings that change what is learned is refused unless `allow_changed`.
    Under torchrun every process trains its share of each batch; only rank 0 writes files and prints.
    """
    from spanet.data.datasets import load_dataset, require_valid_queries
    from spanet.data.split import hold_out_identities

    output_dir = Path(output_dir)
    if not config.data.root:
        raise SpanetError("data.root is empty; pass --data-root DIR or set data.root in the config file")
    if config.train.amp == "fp16" and not config.train.device.startswith(("cuda", "auto")):
        raise SpanetError("train.amp=fp16 needs CUDA; on a CPU use train.amp=auto, bf16 or none")
    dist_info, device = init_distributed(config.train.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest convolution once
    try:
        if config.train.amp == "fp16" and device.type != "cuda":
            raise SpanetError("train.amp=fp16 needs CUDA, and none is available; use train.amp=auto, bf16 or none")
        precision = choose_precision(config.train.amp, device, channels_last=config.train.channels_last)
        dataset = load_dataset(config.data.dataset, config.data.root, skip_corrupt=config.data.skip_corrupt,
                               progress=config.train.progress and dist_info.is_main,
                               test_fraction=config.data.test_fraction, split_seed=config.data.split_seed)
        if dataset.skipped and dist_info.is_main:
            _printer(dist_info)(f"left out {len(dataset.skipped)} corrupt image(s): " + ", ".join(dataset.skipped[:5])
                                + (" …" if len(dataset.skipped) > 5 else ""))
        if config.train.eval_every > 0:
            require_valid_queries(dataset)  # fail now, not after the first epochs of training
        validation, loaded = None, dataset  # `loaded`: the split as read, written to split.csv for own data
        if config.data.val_ids > 0:
            dataset, validation = hold_out_identities(dataset, num_ids=config.data.val_ids, seed=config.train.seed)
        check_output_dir(output_dir, resume=resume, overwrite=overwrite)  # every rank, before any rank writes
        if resume:
            check_resume_settings(output_dir, config, allow_changed=allow_changed)
        barrier(dist_info)
        run = _Run(config=config, dataset=dataset, output_dir=output_dir, device=device, dist_info=dist_info,
                   precision=precision)  # fmt: skip
        return _run(run, validation=validation, loaded=loaded, resume=resume)
    finally:
        shutdown_distributed(dist_info)


def train_on_dataset(
    config: Config, dataset: Any, *, output_dir: str | Path, initial: dict[str, torch.Tensor] | None = None,
    resume: bool = False, resume_hint: str | None = None, memory: ClusterMemory | None = None,
) -> dict[str, Any]:
    """`train` on a dataset already in memory (a `ReidDataset` whose `train` holds the labels to learn, e.g.
    `spanet adapt`'s pseudo-labels), in this one process, from `initial` weights (a state dict for a model with
    `dataset.num_train_ids` classes; None: the config's initialisation) unless `resume` continues `output_dir`.
    With a cluster `memory` its contrastive term is trained as well (`spanet.training.cluster_memory`); it is
    stored in the run's checkpoints, and a resumed run continues with the stored one.

    Same epochs, checkpoints, stop requests and exact resume as `train`; nothing is evaluated (`train.eval_every`
    is taken as 0). A non-empty `output_dir` is moved aside unless `resume`."""
    output_dir = Path(output_dir)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, eval_every=0))
    device = resolve_device(config.train.device)
    precision = choose_precision(config.train.amp, device, channels_last=config.train.channels_last)
    check_output_dir(output_dir, resume=resume, overwrite=not resume)
    run = _Run(config=config, dataset=dataset, output_dir=output_dir, device=device, dist_info=DistInfo(),
               precision=precision, initial=initial, resume_hint=resume_hint, memory=memory)  # fmt: skip
    return _run(run, validation=None, loaded=dataset, resume=resume)


@dataclass
class _RunState:
    """Everything one run changes as it goes: what a checkpoint stores and what resuming restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    epoch: int = 0
    step_in_epoch: int = 0
    best_map: float | None = None
    best_epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the latest validation metrics
    test_metrics: dict[str, float] = field(default_factory=dict)  # the test split, once, on the final model
    probe: torch.Tensor | None = None  # a fixed batch on which the attention spread is logged every epoch
    validation: Any = None  # the held-out identities (`data.val_ids`) evaluated every `eval_every` epochs
    validation_pending: bool = False  # a stop came at the end of an epoch due for validation: validate on resume
    memory: ClusterMemory | None = None  # `spanet adapt --memory-weight`: the cluster memory trained against


@dataclass
class _Run:
    """What one run does not change as it goes: every helper of `_run` reads it instead of a dozen parameters.

    The loader, its steps per epoch, the log and the stop request are set by `_run` once the folder is ready."""

    config: Config
    dataset: Any
    output_dir: Path
    device: torch.device
    dist_info: DistInfo
    precision: Precision
    loader: Any = None
    steps: int = 0
    run_log: Any = None
    stop: Any = None
    initial: dict[str, torch.Tensor] | None = None  # weights a fresh (not resumed) run starts from
    resume_hint: str | None = None  # the command that resumes, when not `spanet train --resume`
    memory: ClusterMemory | None = None  # a fresh run's cluster memory (a resumed run's comes from its checkpoint)

    def say(self, message: str) -> None:
        _printer(self.dist_info)(message)

    def save(self, name: str, state: _RunState, *, epoch: int, step: int = 0, resumable: bool = True) -> None:
        """Write `state` at (epoch, step in epoch) as the run folder's `name` (last.pt or best.pt), from rank 0."""
        checkpoint = _checkpoint(state, self.config, epoch=epoch, step=step, steps=self.steps, resumable=resumable)
        _save_if_finite(self.output_dir / name, checkpoint, self.dist_info)


def _run(run: _Run, *, validation: Any, loaded: Any, resume: bool) -> dict[str, Any]:
    config, dist_info = run.config, run.dist_info
    checkpoint = _prepare_output(config, run.output_dir, resume=resume, num_classes=run.dataset.num_train_ids,
                                 is_main=dist_info.is_main)  # fmt: skip
    if dist_info.is_main:
        save_split_list(loaded, run.output_dir)  # own data: the split used, readable as --dataset list
    barrier(dist_info)  # rank 0 has checked and created the folder
    state = _build_state(config, num_classes=run.dataset.num_train_ids, device=run.device, checkpoint=checkpoint,
                         precision=run.precision, initial=run.initial)  # fmt: skip
    state.validation = validation
    if checkpoint is not None and checkpoint.get("cluster_memory") is not None:
        state.memory = ClusterMemory.from_state_dict(checkpoint["cluster_memory"]).to(run.device)
    elif run.memory is not None:
        state.memory = run.memory.to(run.device)
    model = _wrap_model(run, state)
    run.loader = build_train_loader(  # one loader for the run: its workers persist across epochs
        run.dataset.train, config.data, seed=config.train.seed, rank=dist_info.rank, world_size=dist_info.world_size
    )
    run.steps = _steps_per_epoch(run.loader, run.dataset, config)
    run.say(run.precision.describe())
    if state.epoch >= config.optim.epochs:
        run.say(f"{run.output_dir / LAST_CHECKPOINT} already holds all {config.optim.epochs} epochs; raise "
                "optim.epochs to train further" + ("; evaluating the test split, which did not finish before"
                                                   if not state.test_metrics and config.train.eval_every > 0 else ""))
    run.stop = StopRequest(announce=run.say)
    run.run_log = RunLog(run.output_dir, enabled=dist_info.is_main)
    run.run_log.write({"type": "run", "precision": run.precision.to_json(), "device": str(run.device),
                       **({"cpu": cpu_info().to_json()} if run.device.type == "cpu" else {}),
                       "threads": torch.get_num_threads(), "torch": torch.__version__},
                      step=state.epoch * run.steps)  # fmt: skip
    started = time.perf_counter()
    with run.stop.installed():
        try:
            interrupted = _train_epochs(run, state, model, rng=checkpoint["rng"] if checkpoint is not None else None)
        finally:
            run.run_log.close()
            shutdown_loader(run.loader)
    if interrupted:
        hint = run.resume_hint or f"spanet train --config {run.output_dir / CONFIG_FILE} --output {run.output_dir} --resume"
        run.say(f"stopped by {run.stop.signal_name}; checkpoint saved to {run.output_dir / LAST_CHECKPOINT}. Resume "
                f"with: {hint}")
    return {
        "output_dir": str(run.output_dir),
        "rank": dist_info.rank,  # under torchrun only rank 0 should report
        "interrupted": interrupted,
        "epochs": config.optim.epochs,
        "last_checkpoint": str(run.output_dir / LAST_CHECKPOINT),
        "best_checkpoint": str(run.output_dir / BEST_CHECKPOINT) if state.best_map is not None else None,
        "best_mAP": state.best_map,
        "best_epoch": state.best_epoch,
        "final_metrics": state.test_metrics,
        "val_metrics": state.metrics,
        "precision": run.precision.to_json(),
        "seconds": time.perf_counter() - started,
        "model": state.model,
    }


def _train_epochs(run: _Run, state: _RunState, model: nn.Module, *, rng: dict[str, Any] | None) -> bool:
    """The pending validation, the remaining epochs, then the test split once; True when a stop interrupted."""
    config = run.config
    if state.validation_pending and state.validation is not None:
        validate(run, state, epoch=state.epoch)
    interrupted, trained = False, False
    for epoch in range(state.epoch, config.optim.epochs):
        trained = True
        interrupted = _run_epoch(run, state, model, epoch=epoch, rng=rng if epoch == state.epoch else None)
        if interrupted:  # agreed by all ranks; a local flag alone could leave a DDP peer waiting
            return True
    finished = trained or state.epoch >= config.optim.epochs
    # also when an earlier call trained every epoch but its final test failed or was killed
    if finished and config.train.eval_every > 0 and not state.test_metrics:
        final_test(run, state)
    if finished and state.validation is not None:
        calibrate(run, state)
    return interrupted


def _wrap_model(run: _Run, state: _RunState) -> nn.Module:
    """What the steps call: the model, under DDP when there are several processes, compiled when asked."""
    if run.dist_info.is_main:
        state.probe = attention_probe(state.model, run.dataset, run.config, device=run.device)
    wrapped = state.model
    if run.dist_info.world_size > 1:
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(state.model, device_ids=device_ids)
    if run.config.train.compile:
        wrapped = torch.compile(wrapped)  # checkpoints keep saving `state.model`, so their keys do not change
    return wrapped


def _build_state(
    config: Config, *, num_classes: int, device: torch.device, checkpoint: dict[str, Any] | None,
    precision: Precision | None = None, initial: dict[str, torch.Tensor] | None = None,
) -> _RunState:
    """Model, optimiser and scaler from the config: fresh (seeded, same weights on every rank), from `initial`
    weights, or from `checkpoint` (which wins over `initial`).

    `precision` defaults to what the config's `train.amp` / `train.channels_last` mean on `device`."""
    precision = precision or choose_precision(config.train.amp, device, channels_last=config.train.channels_last)
    torch.manual_seed(config.train.seed)
    # a resumed model gets the checkpoint's weights: no ImageNet download (an offline node can resume)
    given = checkpoint is not None or initial is not None
    model_config = dataclasses.replace(config.model, pretrained=None) if given else config.model
    model = build_model(model_config, num_classes=num_classes).to(device)
    if checkpoint is None and initial is not None:
        model.load_state_dict(initial)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.amp == "fp16")
    state = _RunState(model=model, optimizer=optimizer, scaler=scaler)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        settings = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group, fresh in zip(optimizer.param_groups, settings):
            group.update(fresh)  # the config's lr, momentum and weight decay apply, e.g. `--resume --set optim.lr=…`
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        state.epoch, state.step_in_epoch = int(checkpoint["epoch"]), int(checkpoint.get("step_in_epoch", 0))
        state.best_map, state.best_epoch = checkpoint.get("best_metric"), checkpoint.get("best_epoch")
        state.metrics = dict(checkpoint.get("metrics") or {})
        state.test_metrics = dict(checkpoint.get("test_metrics") or {})
        state.validation_pending = bool(checkpoint.get("validation_pending", False))
    return state


def _run_epoch(run: _Run, state: _RunState, model: nn.Module, *, epoch: int, rng: dict[str, Any] | None) -> bool:
    """Train one epoch (or its rest), log it, evaluate when due, checkpoint; True when a stop interrupted the run.

    `rng` is the resumed checkpoint's RNG state when this epoch continues an interrupted one.
    """
    config, dist_info = run.config, run.dist_info
    torch.manual_seed(epoch_seed(config.train.seed, epoch, dist_info.rank))
    skip = state.step_in_epoch if epoch == state.epoch else 0
    if skip and rng is not None and dist_info.world_size == 1:
        restore_rng_state(rng)
    set_loader_epoch(run.loader, epoch=epoch, skip_batches=skip)
    result = _epoch_with_progress(run, state, model, span=EpochSpan(epoch=epoch, steps=run.steps, start_step=skip))
    global_step = epoch * run.steps + result["step"]
    broadcast_buffers(state.model, info=dist_info)
    if result["step"] < run.steps and result["stopped"]:
        run.save(LAST_CHECKPOINT, state, epoch=epoch, step=result["step"])
        return True
    record = {key: result[key] for key in ("loss", "terms", "images_per_s", "seconds")}
    if state.probe is not None and dist_info.is_main:
        record["attention"] = attention_spread(state)
    run.run_log.write({"type": "epoch", "epoch": epoch + 1, "step": global_step, **record}, step=global_step)
    last_epoch = epoch + 1 == config.optim.epochs
    due = state.validation is not None and _eval_due(epoch, config.optim.epochs, config.train.eval_every)
    state.validation_pending = due and result["stopped"] and not last_epoch  # stop now; the resume validates first
    # the trained epoch is saved before evaluating it, so a failing evaluation cannot cost the epoch
    run.save(LAST_CHECKPOINT, state, epoch=epoch + 1)
    if due and not state.validation_pending:
        validate(run, state, epoch=epoch + 1)
    return result["stopped"] and not last_epoch







def _checkpoint(
    state: _RunState, config: Config, *, epoch: int, step: int, steps: int, resumable: bool = True
) -> dict[str, Any]:
    """The checkpoint dict of `state` at (epoch, step in epoch): what `load_model` and `--resume` read back.

    `resumable=False` (best.pt) leaves out the optimiser, scaler and RNG state: only last.pt is resumed from, and
    the optimiser's momentum alone is as large as the weights."""
    checkpoint = {
        "model": state.model.state_dict(),
        "model_args": {"num_classes": state.model.num_classes, **dataclasses.asdict(config.model)},
        "input_size": [config.data.height, config.data.width],
        "config": config_to_dict(config),
        "epoch": epoch,
        "step_in_epoch": step,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": {"kind": "multistep", "epoch": epoch + step / steps},
        "scaler": state.scaler.state_dict(),
        "rng": rng_state(),
        "metrics": state.metrics,
        "test_metrics": state.test_metrics,
        "validation_pending": state.validation_pending,
        "best_metric": state.best_map,
        "best_epoch": state.best_epoch,
        "dataset": config.data.dataset,
    }
    if state.memory is not None:
        checkpoint["cluster_memory"] = state.memory.state_dict()
    if not resumable:
        for key in ("optimizer", "scaler", "rng", "step_in_epoch"):
            checkpoint.pop(key)
    return checkpoint


def _prepare_output(
    config: Config, output_dir: Path, *, resume: bool, num_classes: int, is_main: bool
) -> dict[str, Any] | None:
    """Check the folder against `resume`, write the resolved config; return the checkpoint to resume from."""
    last_path = output_dir / LAST_CHECKPOINT
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(last_path)
        check_model_config(checkpoint["config"]["model"], config_to_dict(config)["model"], path=last_path)
        if checkpoint["model_args"].get("num_classes") != num_classes:
            raise SpanetError(
                f"--resume: {last_path} was trained on {checkpoint['model_args'].get('num_classes')} identities but "
                f"{config.data.dataset} at {config.data.root} has {num_classes}; resume with the same dataset"
            )
    if is_main:
        moved = None if resume else move_aside(output_dir)
        if moved is not None:
            print(f"moved the previous content of {output_dir} to {moved}", file=sys.stderr, flush=True)
        for stale in remove_stale_temp_files(output_dir) if resume else ():  # best.pt's may never be saved again
            print(f"removed {stale.name}, left by a checkpoint write that was killed", file=sys.stderr, flush=True)
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / CONFIG_FILE)
    return checkpoint


def _epoch_with_progress(run: _Run, state: _RunState, model: nn.Module, *, span: EpochSpan) -> dict[str, Any]:
    """`train_one_epoch` with a tqdm bar and a step record every `log_every` steps."""
    from tqdm.auto import tqdm

    config = run.config
    bar = tqdm(
        total=span.steps, initial=span.start_step, desc=f"epoch {span.epoch + 1}/{config.optim.epochs}", unit="step",
        disable=not (run.dist_info.is_main and config.train.progress), dynamic_ncols=True, leave=False,
    )  # fmt: skip

    def on_step(record: dict[str, Any]) -> None:
        bar.update(1)
        step_in_epoch = record.pop("epoch_step")
        if "loss" not in record:  # the loss is read every `log_every` steps (`train_one_epoch`)
            return
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2g}", img_s=f"{record['images_per_s']:.1f}")
        if step_in_epoch % max(config.train.log_every, 1) == 0 or step_in_epoch == span.steps:
            global_step = span.epoch * span.steps + step_in_epoch
            run.run_log.write({"type": "step", **record, "epoch": span.epoch + 1, "step": global_step}, step=global_step)

    settings = StepSettings(
        loss=config.loss, optim=config.optim, amp=run.precision.amp, channels_last=run.precision.channels_last,
        read_every=config.train.log_every,
    )
    try:
        return train_one_epoch(
            model, state.optimizer, run.loader, settings=settings, span=span, device=run.device, scaler=state.scaler,
            dist_info=run.dist_info, should_stop=run.stop.requested, on_step=on_step, memory=state.memory,
        )  # fmt: skip
    finally:
        bar.close()



def _save_if_finite(path: Path, checkpoint: dict[str, Any], dist_info: DistInfo) -> None:
    """Write a checkpoint from rank 0, refusing weights that hold NaN/inf (so the previous one stays good)."""
    if not dist_info.is_main:
        return
    if not all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point()):
        raise TrainingDiverged(f"the weights hold NaN/inf; {path} was not overwritten; lower optim.lr and restart")
    save_checkpoint(path, checkpoint)


def _steps_per_epoch(loader: DataLoader, dataset: Any, config: Config) -> int:
    set_loader_epoch(loader, epoch=0)
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


def _printer(dist_info: DistInfo) -> Callable[[str], None]:
    def say(message: str) -> None:
        if dist_info.is_main:
            print(message, file=sys.stderr, flush=True)

    return say
