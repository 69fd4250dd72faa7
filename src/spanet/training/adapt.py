"""`spanet adapt`: unsupervised domain adaptation of a checkpoint to the operator's own cameras, in rounds.

Each round (the clustering-based UDA recipe: SSG, UDAP, MMT, SpCL, Cluster Contrast): embed every unlabelled crop
with the current model (`spanet.features.extract_features`; by default each camera's crops with batch-norm statistics
of their own, `spanet.training.camera_bn`), turn the crops into pseudo-identities
(`spanet.training.pseudo_labels`: tracklets pooled, k-reciprocal Jaccard distance, DBSCAN, same-camera tracklets that
overlap in time kept apart), then fine-tune with the model's own losses on the clustered crops, through the training
loop itself (`spanet.training.loop.train_on_dataset`) with new classifiers sized to the round's cluster count. The
classifiers start from the clusters' normalised mean features (`init="centroids"`) or at random (`"random"`).

The output is an ordinary run folder (file names in `spanet.run_dir`):

```
RUN/last.pt            the adapted model after the last finished round: loadable by evaluate, extract, serve, …;
                       its "adaptation" entry records the parent checkpoint's fingerprints, the SOURCEs, the
                       settings and every round's clustering statistics
RUN/adapt.json         the same record, written first: a resume is checked against it
RUN/log.jsonl  tb/     one "round" record per finished round
RUN/rounds/NN.json     round NN's pseudo-labels (paths, cameras, labels) and statistics
RUN/rounds/NN/         round NN's fine-tuning, an ordinary training run (config.yaml, log.jsonl; its last.pt is
                       removed once RUN/last.pt holds the round)
```

Ctrl-C / SIGTERM stop the fine-tuning at a step boundary; `resume=True` continues: finished rounds are kept, the
interrupted round re-uses its stored pseudo-labels and resumes its training run exactly. The source checkpoint is
only read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from spanet.checkpoint import checkpoint_input_size, load_checkpoint, load_model, save_checkpoint
from spanet.config import Config, apply_overrides, config_from_dict, upgrade_model_keys
from spanet.data.samples import ReidDataset, Sample
from spanet.data.unlabelled import UnlabelledCrop, describe_sources, read_unlabelled
from spanet.errors import SpanetError
from spanet.outputs import write_json
from spanet.run_dir import ADAPT_FILE, LAST_CHECKPOINT, ROUNDS_DIR, RunLog, move_aside, remove_stale_temp_files
from spanet.training.cluster_memory import ClusterMemory
from spanet.training.pseudo_labels import ClusterSettings, PseudoLabels, pseudo_labels

__all__ = ["AdaptOptions", "adapt", "round_config", "initial_weights"]


@dataclass(frozen=True)
class AdaptOptions:
    """How `adapt` runs: rounds of clustering + fine-tuning, and the fine-tuning's few settings of its own.

    The rest of the fine-tuning config is the parent checkpoint's (its model, input size, loss, augmentation),
    changed by `overrides` (`section.key=value`, as `spanet train --set`)."""

    rounds: int = 3
    epochs: int = 3  # per round
    lr: float = 0.01
    batch_size: int | None = None  # None: the parent's data.batch_size
    init: Literal["centroids", "random"] = "centroids"
    camera_bn: bool = True  # cluster on features with each camera's own batch-norm statistics (`camera_bn`)
    memory_weight: float = 0.0  # > 0: add a cluster-memory contrastive term with this weight (`cluster_memory`)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    device: str = "auto"
    seed: int = 0
    overrides: tuple[str, ...] = ()
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                "init": self.init, "camera_bn": self.camera_bn, "memory_weight": self.memory_weight,
                "cluster": self.cluster.to_json(), "seed": self.seed,
                "overrides": list(self.overrides)}  # fmt: skip


def adapt(
    checkpoint: str | Path,
    sources: Sequence[str | os.PathLike[str]],
    *,
    output_dir: str | Path,
    options: AdaptOptions = AdaptOptions(),
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Adapt `checkpoint` to the crops of `sources` into the run folder `output_dir`; return a summary."""
    from tqdm.auto import tqdm

    output_dir, checkpoint = Path(output_dir), Path(checkpoint)
    if options.rounds < 1 or options.epochs < 1:
        raise SpanetError(f"adaptation needs at least one round of one epoch, got {options.rounds} round(s) of "
                          f"{options.epochs} epoch(s)")  # fmt: skip
    if options.cluster.eps is not None and not options.cluster.eps > 0:
        raise SpanetError(f"--eps is a Jaccard distance radius in (0, 1], got {options.cluster.eps}")
    if options.memory_weight < 0:
        raise SpanetError(f"--memory-weight is a loss weight >= 0 (0: no memory term), got {options.memory_weight}")
    if not 0 < options.cluster.eps_share < 1:
        raise SpanetError(f"--eps-share is a share of the pairwise distances in (0, 1), got {options.cluster.eps_share}")
    parent = load_checkpoint(checkpoint)
    crops = read_unlabelled(sources)
    _check_crops(crops, sources, options.cluster)
    record = _record(checkpoint, parent, sources, options)
    rounds = _prepare_output(output_dir, record, resume=resume, overwrite=overwrite)
    model, state = load_model(output_dir / LAST_CHECKPOINT if rounds else checkpoint)
    config = round_config(parent, options, root=str(sources[0]))
    log = RunLog(output_dir)
    bar = tqdm(total=options.rounds, initial=len(rounds), desc="adapt", unit="round", disable=not options.progress)
    try:
        for number in range(len(rounds) + 1, options.rounds + 1):
            bar.set_postfix_str(f"round {number}: clustering")
            labels = _round_labels(output_dir, number, model, state, crops, options)
            bar.set_postfix_str(f"round {number}: {labels.statistics['clusters']} clusters")
            result = _fine_tune(output_dir, number, model, state, crops, labels, config=config, options=options)
            if result["interrupted"]:
                return {"interrupted": True, "rounds": rounds, "output_dir": str(output_dir)}
            rounds.append({"round": number, **labels.statistics})
            model, state = _finish_round(output_dir, number, result, record, rounds)
            log.write({"type": "round", **rounds[-1]}, step=number)
            bar.update(1)
    finally:
        bar.close()
        log.close()
    return {"interrupted": False, "rounds": rounds, "output_dir": str(output_dir),
            "last_checkpoint": str(output_dir / LAST_CHECKPOINT), "model": model}  # fmt: skip


def _check_crops(crops: list[UnlabelledCrop], sources: Sequence[Any], settings: ClusterSettings) -> None:
    cameras = sorted({crop.camera for crop in crops})
    where = ", ".join(str(s) for s in sources)
    if len(cameras) < 2:
        raise SpanetError(
            f"{where}: every crop is from camera {cameras[0]}; adaptation learns who is who across cameras and needs "
            "crops from two or more cameras"
        )
    minimum = max(settings.k1 + 1, 2 * settings.min_samples)
    if len(crops) < minimum:
        raise SpanetError(
            f"{where}: {len(crops)} crops; adaptation needs at least {minimum} (more than --k1 {settings.k1} "
            f"neighbours, two clusters of --min-samples {settings.min_samples}) from two or more cameras; add crops"
        )


def _record(checkpoint: Path, parent: dict[str, Any], sources: Sequence[Any], options: AdaptOptions) -> dict[str, Any]:
    """What the adapted checkpoint says about where it came from (also `adapt.json`, checked on resume)."""
    from spanet.features import model_fingerprints

    return {
        "parent": {"checkpoint": str(checkpoint.resolve()),
                   **model_fingerprints(parent["model_args"], parent["model"])},  # fmt: skip
        "sources": describe_sources(sources),
        "settings": options.to_json(),
    }


def _prepare_output(output_dir: Path, record: dict[str, Any], *, resume: bool, overwrite: bool) -> list[dict]:
    """Check or create the run folder; return the rounds already finished (resume)."""
    adapt_file = output_dir / ADAPT_FILE
    if resume and overwrite:
        raise SpanetError("--resume and --overwrite exclude each other: resume continues the run, overwrite starts "
                          "anew")  # fmt: skip
    if resume:
        if not adapt_file.is_file():
            raise SpanetError(f"--resume: {adapt_file} does not exist; start a new adaptation without --resume")
        before = json.loads(adapt_file.read_text(encoding="utf-8"))
        for key in ("parent", "sources", "settings"):
            if before.get(key) != record[key]:
                raise SpanetError(
                    f"--resume: {output_dir} was adapted with other {key} ({before.get(key)}); resume with the same "
                    "--checkpoint, SOURCEs and settings, or start a new --output"
                )
        remove_stale_temp_files(output_dir)
        last = output_dir / LAST_CHECKPOINT
        return list(load_checkpoint(last)["adaptation"]["rounds"]) if last.is_file() else []
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite and not _nothing_trained(output_dir):
            raise SpanetError(f"{output_dir} is not empty; pass --resume to continue the adaptation in it, --overwrite "
                              "to move it aside and start anew, or choose a new --output")  # fmt: skip
        move_aside(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(adapt_file, record)
    return []


def _nothing_trained(output_dir: Path) -> bool:
    """An adaptation folder that holds no trained weights (its first clustering failed, e.g. on --eps): a new start
    may replace it (moved aside), as `spanet train` does with a failed first run."""
    return (output_dir / ADAPT_FILE).is_file() and not (output_dir / LAST_CHECKPOINT).exists() and not any(
        (output_dir / ROUNDS_DIR).glob(f"*/{LAST_CHECKPOINT}")
    )


def round_config(parent: dict[str, Any], options: AdaptOptions, *, root: str) -> Config:
    """The fine-tuning config: the parent's (or defaults) with its model and input size, the options' schedule."""
    values = json.loads(json.dumps(parent.get("config") or {}))
    model_args = upgrade_model_keys(dict(parent["model_args"]), source="checkpoint")
    values["model"] = {key: value for key, value in model_args.items() if key != "num_classes"} | {"pretrained": None}
    height, width = checkpoint_input_size(parent, path="the parent checkpoint")
    data = values.setdefault("data", {})
    data.update(dataset="adapt", root=root, height=height, width=width, val_ids=0)
    if options.batch_size is not None:
        data["batch_size"] = options.batch_size
    values.setdefault("optim", {}).update(lr=options.lr, epochs=options.epochs, milestones=[options.epochs],
                                          warmup_epochs=0.0)  # fmt: skip
    values.setdefault("train", {}).update(device=options.device, eval_every=0, seed=options.seed,
                                          progress=options.progress, max_steps_per_epoch=None)  # fmt: skip
    values = apply_overrides(values, list(options.overrides), source="--set")
    return config_from_dict(values, source="adaptation settings")


def _round_labels(output_dir: Path, number: int, model: torch.nn.Module, state: dict[str, Any],
                  crops: list[UnlabelledCrop], options: AdaptOptions) -> PseudoLabels:  # fmt: skip
    """This round's pseudo-labels: read back when an interrupted round stored them, else clustered and stored."""
    path = output_dir / ROUNDS_DIR / f"{number:02d}.json"
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        return PseudoLabels(labels=np.asarray(stored["labels"], dtype=np.int64), eps=stored["statistics"]["eps"],
                            statistics=stored["statistics"])  # fmt: skip
    features = _features(model, state, crops, options, kind="parts")
    labels = pseudo_labels(features, crops, settings=options.cluster)
    write_json(path, {"statistics": labels.statistics, "paths": [c.path for c in crops],
                      "cameras": [c.camera for c in crops], "labels": labels.labels.tolist()})  # fmt: skip
    return labels


def _features(model: torch.nn.Module, state: dict[str, Any], crops: list[UnlabelledCrop], options: AdaptOptions,
              *, kind: str) -> np.ndarray:  # fmt: skip
    from spanet.features import ExtractionOptions, extract_features
    from spanet.runtime import resolve_device

    device = resolve_device(options.device)
    model.to(device)
    extraction = ExtractionOptions(batch_size=128, device=device, kind=kind,  # type: ignore[arg-type]
                                   progress=options.progress)  # fmt: skip
    input_size = checkpoint_input_size(state, path="model")
    paths = [c.path for c in crops]

    def embed(net: torch.nn.Module, images: list[str]) -> np.ndarray:
        return extract_features(net, images, input_size=input_size, options=extraction, desc=f"features ({kind})").features

    if options.camera_bn:
        from spanet.training.camera_bn import camera_bn_features

        return camera_bn_features(model, paths, [c.camera for c in crops], input_size=input_size, embed=embed)
    return embed(model, paths)


def _fine_tune(output_dir: Path, number: int, model: torch.nn.Module, state: dict[str, Any],
               crops: list[UnlabelledCrop], labels: PseudoLabels, *, config: Config,
               options: AdaptOptions) -> dict[str, Any]:  # fmt: skip
    """Train the round on its clustered crops (resuming the round's run when it holds a checkpoint)."""
    from spanet.training.loop import train_on_dataset

    kept = np.flatnonzero(labels.labels >= 0)
    train = tuple(Sample(crops[i].path, int(labels.labels[i]), crops[i].camera - 1) for i in kept)
    dataset = ReidDataset(name="adapt", root=output_dir, train=train, query=(), gallery=(),
                          split_source="pseudo-labels of `spanet adapt`")  # fmt: skip
    round_dir = output_dir / ROUNDS_DIR / f"{number:02d}"
    resume = (round_dir / LAST_CHECKPOINT).is_file()
    initial, memory = None, None
    if not resume:
        reduced = _features(model, state, [crops[i] for i in kept], options, kind="reduced") \
            if options.init == "centroids" else None  # fmt: skip
        initial = initial_weights(model, state["model_args"], labels.labels[kept], reduced=reduced,
                                  seed=options.seed + number)  # fmt: skip
        if options.memory_weight > 0:
            parts = _features(model, state, [crops[i] for i in kept], options, kind="parts")
            memory = ClusterMemory(_centroids(parts, labels.labels[kept]), weight=options.memory_weight)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=options.seed + number))
    hint = "spanet adapt --resume with the same --checkpoint, --output and SOURCEs"
    return train_on_dataset(config, dataset, output_dir=round_dir, initial=initial, resume=resume, resume_hint=hint,
                            memory=memory)  # fmt: skip


def _centroids(features: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """(C, D) mean of each cluster's `features` (N, D), for the cluster memory (which makes them unit length)."""
    sums = np.zeros((int(labels.max()) + 1, features.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, features)
    return torch.from_numpy(sums).float()


def initial_weights(model: torch.nn.Module, model_args: dict[str, Any], labels: np.ndarray, *,
                    reduced: np.ndarray | None, seed: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """A state dict for `SPANet(**model_args)` with classifiers for `labels.max() + 1` classes: every other weight as
    `model` has it; the part and global classifiers from the clusters' normalised mean `reduced` features (N, P·256)
    when given, else (and always for the deep-supervision classifiers) N(0, 0.001) as a fresh SPANet's."""
    from spanet.model import SPANet

    num_classes = int(labels.max()) + 1
    torch.manual_seed(seed)
    fresh = SPANet(**{**upgrade_model_keys(model_args, source="checkpoint"), "pretrained": None,
                      "num_classes": num_classes})  # fmt: skip
    weights = {k: v for k, v in model.state_dict().items() if "classifier" not in k}
    weights.update({k: v for k, v in fresh.state_dict().items() if "classifier" in k})
    if reduced is not None:
        parts = reduced.reshape(len(reduced), max(len(fresh.part_classifiers), 1), -1)  # (N, P·256) -> (N, P, 256)
        centroids = np.zeros((num_classes, *parts.shape[1:]), dtype=np.float64)
        np.add.at(centroids, labels, parts)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=2, keepdims=True), 1e-12)  # (C, P, 256), unit rows
        for i in range(len(fresh.part_classifiers)):
            weights[f"part_classifiers.{i}.weight"] = torch.from_numpy(centroids[:, i]).float()
        overall = centroids.mean(axis=1)  # (C, 256)
        overall /= np.maximum(np.linalg.norm(overall, axis=1, keepdims=True), 1e-12)
        weights["global_classifier.weight"] = torch.from_numpy(overall).float()
    return weights


def _finish_round(output_dir: Path, number: int, result: dict[str, Any], record: dict[str, Any],
                  rounds: list[dict]) -> tuple[torch.nn.Module, dict[str, Any]]:  # fmt: skip
    """RUN/last.pt = the round's model + the adaptation record; the round's own (resumable) last.pt is removed."""
    round_last = output_dir / ROUNDS_DIR / f"{number:02d}" / LAST_CHECKPOINT
    state = load_checkpoint(round_last)
    for key in ("optimizer", "scaler", "rng", "step_in_epoch", "cluster_memory"):
        state.pop(key, None)
    state["adaptation"] = {**record, "rounds": rounds}
    state.pop("format", None), state.pop("version", None)
    save_checkpoint(output_dir / LAST_CHECKPOINT, state)
    round_last.unlink()
    return load_model(output_dir / LAST_CHECKPOINT)
