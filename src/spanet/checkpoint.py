"""Checkpoints: written atomically, read with `weights_only=True`, and checked before they are trusted.

A checkpoint is a dict of tensors and plain containers only (config as a dict, RNG states as tensors), so loading
it never runs pickled code. Writing goes to a temporary file in the same folder and is renamed over the target, so
an interrupted or crashed write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import glob
import hashlib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from spanet.config import upgrade_model_keys
from spanet.errors import SpanetError
from spanet.outputs import atomic_path

if TYPE_CHECKING:
    from spanet.model import SPANet

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "checkpoint_input_size",
    "check_model_config",
    "tensor_checksum",
    "rng_state",
    "restore_rng_state",
]

CHECKPOINT_FORMAT = "spanet-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (plus the format marker and version) to `path` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    payload["checksum"] = tensor_checksum(payload)
    with atomic_path(path, temp_suffix=".tmp") as tmp, open(tmp, "wb") as handle:  # .NAME.*.tmp: see below
        torch.save(payload, handle)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a writer that was killed (kill -9)
        stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a spanet checkpoint with `weights_only=True`; anything else raises `SpanetError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SpanetError(f"checkpoint {path} does not exist; pass the path of a .pt file written by `spanet train`")
    if not zipfile.is_zipfile(path):
        raise SpanetError(
            f"checkpoint {path} is not a PyTorch checkpoint archive (truncated, or another kind of file); "
            "use a .pt file written by `spanet train`"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged, foreign or unsafe files
        # torch's text for a refused pickle advises weights_only=False, which spanet never does: don't echo it.
        reason = (
            "it holds Python objects other than tensors and plain values, which spanet does not load"
            if "Weights only load failed" in str(exc)
            else (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        )
        raise SpanetError(f"checkpoint {path} could not be read: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SpanetError(f"{path} is not a spanet checkpoint (no '{CHECKPOINT_FORMAT}' marker); use a file from `spanet train`")
    version = state.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise SpanetError(f"checkpoint {path} has version {version!r}; this spanet reads up to {CHECKPOINT_VERSION}, upgrade spanet")
    stored = state.pop("checksum", None)  # checkpoints from before checksums have none: nothing to verify
    if stored is not None and stored != tensor_checksum(state):
        raise SpanetError(
            f"checkpoint {path} is damaged: its tensors do not match the checksum written with them (a disk, copy or "
            "download error); copy it again or use another checkpoint"
        )
    missing = [key for key in ("model", "model_args") if key not in state]
    if missing:
        raise SpanetError(f"checkpoint {path} lacks {', '.join(missing)}; it cannot rebuild a model")
    return state


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[SPANet, dict[str, Any]]:
    """Rebuild `SPANet(**model_args)` from a checkpoint, load its weights, return it in eval mode with the dict."""
    from spanet.model import SPANet

    state = load_checkpoint(path, map_location=map_location)
    model_args = _with_defaults_of_their_time(upgrade_model_keys(state["model_args"], source=str(path)))
    model_args["pretrained"] = None  # the checkpoint holds the weights; never download to rebuild
    try:
        model = SPANet(**model_args)
        model.load_state_dict(state["model"])
    except (TypeError, RuntimeError, KeyError, ValueError) as exc:
        raise SpanetError(f"checkpoint {path}: weights do not fit SPANet({model_args}): {_summary(exc)}") from None
    model.to(map_location)
    model.eval()
    return model, state


def tensor_checksum(value: Any) -> str:
    """sha256 over every tensor in a nested dict/list (in key order, with names, shapes and dtypes): a flipped byte
    anywhere in the weights or optimiser state changes it."""
    digest = hashlib.sha256()

    def walk(item: Any, name: str) -> None:
        if isinstance(item, torch.Tensor):
            tensor = item.detach().to("cpu").contiguous()
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            if tensor.numel():
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(item, dict):
            for key in sorted(item, key=str):
                walk(item[key], f"{name}.{key}")
        elif isinstance(item, (list, tuple)):
            for index, element in enumerate(item):
                walk(element, f"{name}[{index}]")

    walk({key: v for key, v in value.items() if key != "checksum"}, "")
    return "sha256:" + digest.hexdigest()


def checkpoint_input_size(state: dict[str, Any], *, path: str | Path) -> tuple[int, int]:
    """The (height, width) a checkpoint's model was trained at: its evaluation transform resizes to it."""
    size = state.get("input_size")
    if not size or len(size) != 2:
        raise SpanetError(f"checkpoint {path} has no input_size [H, W]; re-save it with `spanet train`")
    return int(size[0]), int(size[1])


def check_model_config(checkpoint_model: dict[str, Any], config_model: dict[str, Any], *, path: str | Path) -> None:
    """Raise `SpanetError` naming every model key whose value differs between a checkpoint and a config."""
    checkpoint_model = upgrade_model_keys(checkpoint_model, source=str(path))
    if "sa_pooling" in config_model:
        checkpoint_model = _with_defaults_of_their_time(checkpoint_model)
    keys = sorted((set(checkpoint_model) | set(config_model)) - {"pretrained"})  # initial weights only: replaced
    mismatched = [key for key in keys if _normalise(checkpoint_model.get(key)) != _normalise(config_model.get(key))]
    if mismatched:
        details = "; ".join(
            f"model.{key}: checkpoint {checkpoint_model.get(key)!r} vs config {config_model.get(key)!r}" for key in mismatched
        )
        raise SpanetError(
            f"checkpoint {path} was trained with a different model ({details}); "
            "use the run's config.yaml or start a new --output folder"
        )


def _with_defaults_of_their_time(model_args: dict[str, Any]) -> dict[str, Any]:
    """Model args of a checkpoint with the behaviour it was trained with where a later switch changed the default:
    checkpoints written before `sa_pooling` and `head_init` existed pooled with the weighted sum and initialised the
    heads the spanet way. (The stored args stay as written, so fingerprints made from them still match.)"""
    return {"sa_pooling": "sum", "head_init": "spanet", **model_args}


def _summary(exc: Exception, *, limit: int = 400) -> str:
    """torch's load_state_dict error on one line, key names included (they follow its first line), cut at `limit`."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    text = text.replace("Error(s) in loading state_dict for SPANet: ", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def rng_state() -> dict[str, Any]:
    """The torch (and CUDA) generator states as tensors, which `weights_only` loading accepts."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo `rng_state` (the CUDA part only when the device count matches)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
