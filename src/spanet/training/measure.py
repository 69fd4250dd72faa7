"""What a training run measures besides its loss: the validation identities (best.pt on their mAP), the test split
once at the end, the same-person threshold of each checkpoint, and how spread out the spatial attention is.

Functions of the training loop's run (`spanet.training.loop._Run`, `_RunState`), split out of loop.py to keep one
concern per module; the loop calls them at epoch ends and after the last epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from spanet.config import Config
from spanet.errors import SpanetError
from spanet.run_dir import BEST_CHECKPOINT, LAST_CHECKPOINT
from spanet.training.distributed import barrier

if TYPE_CHECKING:
    from spanet.training.loop import _Run, _RunState

__all__ = ["validate", "final_test", "calibrate", "attention_probe", "attention_spread", "evaluate_run"]


def validate(run: _Run, state: _RunState, *, epoch: int) -> None:
    """Evaluate the held-out identities after `epoch` epochs, keep best.pt on validation mAP, save last.pt."""
    step = epoch * run.steps
    state.metrics = evaluate_run(run, state.model, state.validation)
    state.validation_pending = False
    if run.dist_info.is_main:
        run.run_log.write({"type": "val", "epoch": epoch, "step": step, **state.metrics}, step=step)
        run.say(f"epoch {epoch}: validation rank-1 {state.metrics['rank1']:.2%}  mAP {state.metrics['mAP']:.2%}")
        if state.best_map is None or state.metrics["mAP"] > state.best_map:
            state.best_map, state.best_epoch = state.metrics["mAP"], epoch
            run.save(BEST_CHECKPOINT, state, epoch=epoch, resumable=False)
    run.save(LAST_CHECKPOINT, state, epoch=epoch)


def final_test(run: _Run, state: _RunState) -> None:
    """The test split, evaluated once on the final model (never used to pick a checkpoint); kept in last.pt."""
    state.test_metrics = evaluate_run(run, state.model, run.dataset)
    if run.dist_info.is_main:
        epoch = run.config.optim.epochs
        step = epoch * run.steps
        run.run_log.write({"type": "test", "epoch": epoch, "step": step, **state.test_metrics}, step=step)
        run.save(LAST_CHECKPOINT, state, epoch=epoch)


def calibrate(run: _Run, state: _RunState) -> None:
    """The same-person threshold of last.pt (and best.pt) on the validation identities, written beside each
    (`evaluation.calibration.calibrate_run`) and logged; a validation set it cannot be chosen on is said, not fatal."""
    from spanet.evaluation.calibration import calibrate_run

    if run.dist_info.is_main:
        names = [LAST_CHECKPOINT, *([BEST_CHECKPOINT] if state.best_map is not None else [])]
        step = run.config.optim.epochs * run.steps
        try:
            written = calibrate_run([run.output_dir / name for name in names], state.validation,
                                    device=str(run.device), batch_size=run.config.train.eval_batch_size,
                                    progress=run.config.train.progress)  # fmt: skip
        except SpanetError as exc:
            run.run_log.write({"type": "calibration", "error": str(exc)}, step=step)
            run.say(f"no same-person threshold written: {exc}")
            written = []
        for record, path in written:
            achieved = record["calibration_data"]["achieved"]
            run.run_log.write({"type": "calibration", "checkpoint": Path(record["checkpoint"]).name, "file": path.name,
                               "threshold": record["threshold"], "target": record["target"], "achieved": achieved,
                               "resolved": record["calibration_data"]["resolved"]}, step=step)  # fmt: skip
            run.say(f"{path.name}: same-person threshold {record['threshold']:.4g} for {Path(record['checkpoint']).name}"
                    f" at FPR {achieved['fpr']:.2g} on the validation identities (TPR {achieved['tpr']:.1%})")
    barrier(run.dist_info)


def attention_probe(model: nn.Module, dataset: Any, config: Config, *, device: torch.device) -> torch.Tensor | None:
    """The first 16 training images (evaluation transform): the fixed batch for `SPANet.attention_spread`; None
    when the model has no SA layer."""
    if not any(head.sa_ds is not None for head in model.ds_heads) and model.sa_parts is None:
        return None
    from spanet.data.images import read_image
    from spanet.data.transforms import eval_transform

    transform = eval_transform((config.data.height, config.data.width))
    return torch.stack([transform(read_image(s.path)) for s in dataset.train[:16]]).to(device)  # (16, 3, H, W)


def attention_spread(state: _RunState) -> dict[str, dict[str, float]]:
    """Effective number of attended positions per SA layer on the fixed batch (logged with every epoch record, so
    attention collapse shows as it happens)."""
    state.model.eval()
    try:
        return state.model.attention_spread(state.probe)
    finally:
        state.model.train()


def evaluate_run(run: _Run, model: nn.Module, dataset: Any) -> dict:
    """Rank-1/mAP on query/gallery (`spanet.evaluation.evaluate`), computed by rank 0 while the other ranks wait."""
    metrics: dict[str, float] = {}
    config = run.config
    if run.dist_info.is_main:
        from spanet.evaluation.evaluate import evaluate_model
        from spanet.features import ExtractionOptions

        options = ExtractionOptions(batch_size=config.train.eval_batch_size, device=run.device,
                                    flip=config.train.eval_flip, amp=run.precision,  # the training precision
                                    num_workers=config.data.num_workers, progress=config.train.progress)  # fmt: skip
        result = evaluate_model(model, dataset, input_size=(config.data.height, config.data.width), options=options)
        metrics = {key: float(getattr(result, key)) for key in ("rank1", "rank5", "rank10", "mAP", "mINP")}
    barrier(run.dist_info)
    return metrics
