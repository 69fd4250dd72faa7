"""Calibrating a checkpoint's "same person?" threshold on data set aside for it, and using it in a search.

The threshold is chosen on a calibration dataset's query + gallery images (`verification.calibrate_threshold`) and
stored with the model's fingerprints, so it is never applied to another model's distances. The calibration data
must not be the test split the model is reported on: `calibrate_checkpoint` refuses the dataset the checkpoint was
trained on (its test split is the reporting one) — calibrate on a separate folder of identities. Training with
`data.val_ids > 0` does the same on its validation identities at the end of the run (`calibrate_run`).

Where a checkpoint's calibration lives (`default_calibration_path`): `calibration.json` beside it, except a run
folder's `best.pt`, whose weights differ from `last.pt`'s: `best.calibration.json`. One file per checkpoint, so
`--threshold auto`, `serve` and `ingest` find the right one for either checkpoint a user passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spanet.data.protocol import CROSS_CAMERA
from spanet.errors import SpanetError
from spanet.run_dir import BEST_CALIBRATION_FILE, BEST_CHECKPOINT, CALIBRATION_FILE
from spanet.evaluation.verification import calibrate_threshold, load_calibration, save_calibration

__all__ = ["CALIBRATION_NAME", "DEFAULT_TARGET_FPR", "default_calibration_path", "calibrate_checkpoint",
           "calibrate_run", "resolve_threshold"]

CALIBRATION_NAME = CALIBRATION_FILE
# `spanet calibrate` without a target, and training with validation identities: a pairwise false-accept rate of
# 1e-3 (one different-person pair in a thousand called the same person; docs/evaluation.md measures how it carries
# over to unseen people)
DEFAULT_TARGET_FPR = 1e-3


def default_calibration_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's calibration is written and read: `calibration.json` beside it (`best.calibration.json`
    for a run folder's best.pt, which has other weights than last.pt)."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent / (BEST_CALIBRATION_FILE if checkpoint.name == BEST_CHECKPOINT else CALIBRATION_NAME)


def calibrate_checkpoint(
    checkpoint: str | Path, dataset: Any, *, target_fpr: float | None = None, target_fpir: float | None = None,
    gallery_size: int | None = None, kind: str = "parts", device: str = "auto", batch_size: int = 64,
    out: str | Path | None = None, progress: bool = False,
) -> tuple[dict[str, Any], Path]:  # fmt: skip
    """Extract features of `dataset.query + dataset.gallery`, pick the threshold, write and return the record."""
    from spanet.checkpoint import load_checkpoint
    from spanet.features import FeatureExtractor

    _refuse_reporting_data(load_checkpoint(checkpoint, map_location="cpu"), dataset)
    extractor = FeatureExtractor(checkpoint, device=device, batch_size=batch_size, kind=kind)
    record = _calibration_record(extractor, dataset, target_fpr=target_fpr, target_fpir=target_fpir,
                                 gallery_size=gallery_size, progress=progress)  # fmt: skip
    path = save_calibration(out if out is not None else default_calibration_path(checkpoint), record)
    return record, path


def calibrate_run(
    checkpoints: Sequence[str | Path], validation: Any, *, target_fpr: float = DEFAULT_TARGET_FPR,
    device: str = "auto", batch_size: int = 64, progress: bool = False,
) -> list[tuple[dict[str, Any], Path]]:  # fmt: skip
    """Training with validation identities: each checkpoint's threshold on them ("parts" features, pairwise FPR
    `target_fpr`), written to its `default_calibration_path`. Checkpoints with the same weights (best.pt saved at the
    last epoch) share one extraction; each file names its own checkpoint."""
    from spanet.features import FeatureExtractor

    written: list[tuple[dict[str, Any], Path]] = []
    for checkpoint in checkpoints:
        extractor = FeatureExtractor(checkpoint, device=device, batch_size=batch_size, kind="parts")
        fingerprint = extractor.info["weights_fingerprint"]
        record = next((dict(r) for r, _ in written if r["weights_fingerprint"] == fingerprint), None)
        if record is None:
            record = _calibration_record(extractor, validation, target_fpr=target_fpr, progress=progress)
        record["checkpoint"] = str(checkpoint)
        written.append((record, save_calibration(default_calibration_path(checkpoint), record)))
    return written


def _calibration_record(
    extractor: Any, dataset: Any, *, target_fpr: float | None = None, target_fpir: float | None = None,
    gallery_size: int | None = None, progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The calibration file's record: the threshold chosen on `dataset`'s query + gallery images with `extractor`."""
    samples = list(dataset.query) + list(dataset.gallery)
    features = extractor([s.path for s in samples], progress=progress)
    pids = np.array([s.pid for s in samples])
    camids = np.array([s.camid for s in samples])
    chosen = calibrate_threshold(
        features, pids, camids, target_fpr=target_fpr, target_fpir=target_fpir, gallery_size=gallery_size,
        cross_camera=getattr(dataset, "protocol", CROSS_CAMERA) == CROSS_CAMERA,
    )  # fmt: skip
    info = extractor.info
    return {
        "threshold": chosen["threshold"], "metric": "euclidean",
        "weights_fingerprint": info["weights_fingerprint"], "args_fingerprint": info["args_fingerprint"],
        "feature_kind": info["kind"], "checkpoint": str(info.get("checkpoint")), "target": chosen["target"],
        "calibration_data": {
            "dataset": dataset.name, "root": str(dataset.root), "images": len(samples),
            "identities": int(np.unique(pids).size), "protocol": getattr(dataset, "protocol", CROSS_CAMERA),
            "resolved": chosen["resolved"], "achieved": chosen["achieved"],
            **{k: v for k, v in chosen.items() if k.endswith(("_pairs", "_searches"))},
        },
    }  # fmt: skip


def resolve_threshold(
    value: str | None, *, checkpoint: str | Path, info: dict[str, Any], calibration: str | Path | None = None
) -> float | None:
    """`--threshold`: None, a number, or "auto" (the calibration file, checked against the model's fingerprints)."""
    if value is None:
        return None
    if value == "auto":
        path = calibration if calibration is not None else default_calibration_path(checkpoint)
        return float(load_calibration(path, info=info)["threshold"])
    try:
        threshold = float(value)
    except ValueError:
        raise SpanetError(f"--threshold must be a number or auto, got {value!r}") from None
    if not np.isfinite(threshold) or threshold < 0:
        raise SpanetError(f"--threshold must be a finite distance >= 0, got {value}")
    return threshold


def _refuse_reporting_data(checkpoint: dict[str, Any], dataset: Any) -> None:
    data = (checkpoint.get("config") or {}).get("data") or {}
    trained_on, root = checkpoint.get("dataset") or data.get("dataset"), data.get("root")
    folder = Path(dataset.root).resolve()
    # the run may name the dataset folder itself or its parent (load_dataset finds the usual folder name inside)
    if trained_on == dataset.name and root and Path(root).expanduser().resolve() in (folder, folder.parent):
        raise SpanetError(
            f"{dataset.root} is the dataset this checkpoint was trained and is reported on; calibrating on its test "
            "split would tune the threshold to the numbers you report: calibrate on a separate set of identities"
        )
