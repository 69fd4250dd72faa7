"""Features from a trained checkpoint for any images: the "how do I run it on my own pictures" entry point.

`FeatureExtractor` loads a checkpoint (`weights_only=True`), rebuilds the checkpoint's own evaluation transform
(resize to its `input_size`, ImageNet normalisation) and returns float32 (N, D) numpy features, so the caller never
has to know the input size or normalisation a model was trained with.

Inputs it accepts, in one list or mixed:
- paths (str or `os.PathLike`), PIL images (any mode; converted to RGB),
- numpy arrays (H, W, 3) uint8 RGB (or (H, W) grayscale),
- tensors (3, H, W) as images: float in [0, 1] (what `torchvision.transforms.ToTensor` gives) or uint8.
Tensors are treated as *pictures*, not as model inputs: they are resized and normalised like every other input.
A batch that is already resized and normalised goes to `embed_tensor` instead (the same input the ONNX export
takes).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from spanet.device import resolve_device
from spanet.errors import SpanetError

__all__ = [
    "ImageInput",
    "ExtractionResult",
    "FeatureExtractor",
    "save_features",
    "load_features",
    "model_fingerprints",
]


ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class ExtractionResult:
    """Features of the files that could be read, their paths (same order), and (path, reason) for the others."""

    features: np.ndarray
    paths: tuple[str, ...]
    failures: tuple[tuple[str, str], ...]


def model_fingerprints(model_args: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
    """Short hashes of the architecture (model_args) and of the weights, to tell two models' features apart."""
    args_hash = hashlib.sha256(json.dumps(_plain(model_args), sort_keys=True).encode()).hexdigest()[:16]
    weights_hash = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        weights_hash.update(name.encode())
        weights_hash.update(str(tuple(tensor.shape)).encode())
        weights_hash.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return {"args_fingerprint": args_hash, "weights_fingerprint": weights_hash.hexdigest()[:16]}


class FeatureExtractor:
    """Turn images into re-ID feature vectors with a trained SPANet.

    >>> extractor = FeatureExtractor("runs/market/best.pt")
    >>> features = extractor(["a.jpg", "b.jpg"])        # (2, 12288) float32 for a resnet50 SPANet
    >>> distance = ((features[0] - features[1]) ** 2).sum()

    `checkpoint` is a path to a `spanet train` checkpoint, or an already built SPANet (then `input_size` is
    required). `kind` is passed to `SPANet.embed` ("parts": the paper's test feature, six L2-normalised stripe
    vectors concatenated). Compare features with (squared) Euclidean distance.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | torch.nn.Module,
        *,
        device: str | torch.device = "auto",
        batch_size: int = 64,
        kind: str = "parts",
        input_size: Sequence[int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise SpanetError(f"batch_size must be at least 1, got {batch_size}")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.kind = kind
        if isinstance(checkpoint, torch.nn.Module):
            if input_size is None:
                raise SpanetError("FeatureExtractor(model, ...) needs input_size=(height, width) when given a model")
            self.model = checkpoint
            self.checkpoint_path: str | None = None
            self._model_args: dict[str, Any] = {}
        else:
            from spanet.checkpoint import load_model

            self.model, state = load_model(checkpoint, map_location="cpu")
            self.checkpoint_path = str(checkpoint)
            self._model_args = dict(state["model_args"])
            if input_size is None:
                input_size = state.get("input_size")
                if input_size is None:
                    raise SpanetError(f"checkpoint {checkpoint} has no input_size; pass input_size=(height, width)")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.model.to(self.device).eval()
        self.transform = _eval_transform(self.input_size)
        self._fingerprints: dict[str, str] | None = None

    # -- information about the features ------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        """Length of one feature vector."""
        return int(self.model.embedding_dim(self.kind))

    @property
    def info(self) -> dict[str, Any]:
        """What made these features: stored with extracted features and indexes, checked before searching."""
        if self._fingerprints is None:
            args = self._model_args or {"class": type(self.model).__name__}
            self._fingerprints = model_fingerprints(args, self.model.state_dict())
        return {
            "checkpoint": self.checkpoint_path,
            "model_args": _plain(self._model_args),
            "input_size": list(self.input_size),
            "kind": self.kind,
            "feature_dim": self.feature_dim,
            **self._fingerprints,
        }

    # -- extraction ----------------------------------------------------------------------------------------------
    def __call__(self, images: Sequence[ImageInput], *, progress: bool = False) -> np.ndarray:
        """Features (N, D) float32 of `images`, in order; an unreadable file raises `SpanetError` naming it."""
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)) or (
            isinstance(images, torch.Tensor) and images.dim() == 3
        ):
            raise SpanetError("FeatureExtractor expects a list of images; wrap a single image in a list")
        images = list(images)
        batches = []
        for start in _progress_range(len(images), self.batch_size, enabled=progress):
            chunk = images[start : start + self.batch_size]
            batch = torch.stack([self.transform(_to_pil(image)) for image in chunk])  # (B, 3, H, W)
            batches.append(self.embed_tensor(batch))
        if not batches:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(batches)

    def extract_files(self, paths: Sequence[str | os.PathLike[str]], *, progress: bool = False) -> ExtractionResult:
        """Like calling on paths, but files that cannot be decoded are skipped and reported, never fatal."""
        from spanet.data.images import read_image

        kept: list[str] = []
        failures: list[tuple[str, str]] = []
        batches: list[np.ndarray] = []
        pending: list[torch.Tensor] = []

        def flush() -> None:
            if pending:
                batches.append(self.embed_tensor(torch.stack(pending)))
                pending.clear()

        for path in _progress_iter(paths, enabled=progress):
            try:
                pending.append(self.transform(read_image(path)))
            except SpanetError as exc:
                failures.append((str(path), str(exc)))
                continue
            kept.append(str(path))
            if len(pending) == self.batch_size:
                flush()
        flush()
        features = np.concatenate(batches) if batches else np.zeros((0, self.feature_dim), dtype=np.float32)
        return ExtractionResult(features=features, paths=tuple(kept), failures=tuple(failures))

    @torch.inference_mode()
    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Features of an already resized and normalised batch (B, 3, H, W) — the ONNX model's input."""
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise SpanetError(f"embed_tensor expects a (B, 3, H, W) batch, got shape {tuple(batch.shape)}")
        features = self.model.embed(batch.to(self.device, torch.float32), kind=self.kind)  # (B, D)
        return features.float().cpu().numpy().astype(np.float32, copy=False)


def save_features(path: str | os.PathLike[str], result: ExtractionResult, info: dict[str, Any]) -> Path:
    """Write features, paths, failed paths and the model `info` (as JSON) to an `.npz` (no pickled objects)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise SpanetError(f"--out {path} must end in .npz (numpy archive of paths and features)")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        features=result.features.astype(np.float32, copy=False),
        paths=np.array(result.paths, dtype=str),
        failed=np.array([p for p, _ in result.failures], dtype=str),
        model_info=np.array(json.dumps(_plain(info))),
        checkpoint=np.array(str(info.get("checkpoint") or "")),
        feature_dim=np.array(int(result.features.shape[1]) if result.features.ndim == 2 else 0),
        kind=np.array(str(info.get("kind", ""))),
    )
    return path


def load_features(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Read an `.npz` from `save_features` (or any npz with `features` and `paths`): features, paths, model info."""
    path = Path(path)
    if not path.is_file():
        raise SpanetError(f"features file {path} does not exist; write one with `spanet extract ... --out {path}`")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "features" not in data or "paths" not in data:
                raise SpanetError(f"{path} lacks 'features' or 'paths'; write it with `spanet extract`")
            features = np.asarray(data["features"], dtype=np.float32)
            paths = [str(p) for p in data["paths"]]
            info = json.loads(str(data["model_info"])) if "model_info" in data else {}
    except (OSError, ValueError, EOFError) as exc:
        raise SpanetError(f"features file {path} could not be read ({exc}); write it again with `spanet extract`") from None
    if features.ndim != 2 or features.shape[0] != len(paths):
        raise SpanetError(f"{path}: features of shape {features.shape} do not match {len(paths)} paths")
    return features, paths, info


def _eval_transform(input_size: tuple[int, int]) -> Callable[[Image.Image], torch.Tensor]:
    from spanet.data.transforms import build_transforms

    return build_transforms(height=input_size[0], width=input_size[1], train=False)


def _to_pil(image: ImageInput) -> Image.Image:
    """Any accepted input as an RGB PIL image, so every input goes through the same evaluation transform."""
    if isinstance(image, (str, os.PathLike)):
        from spanet.data.images import read_image

        return read_image(image)
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
            raise SpanetError(f"an image tensor must be (3, H, W) or (1, H, W), got shape {tuple(tensor.shape)}")
        if tensor.is_floating_point():
            if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
                raise SpanetError(
                    "a float image tensor must hold values in [0, 1] (ToTensor output); for an already normalised "
                    "batch call FeatureExtractor.embed_tensor"
                )
            tensor = (tensor * 255).round().to(torch.uint8)
        elif tensor.dtype != torch.uint8:
            raise SpanetError(f"an image tensor must be float in [0, 1] or uint8, got {tensor.dtype}")
        return _to_pil(tensor.permute(1, 2, 0).numpy())  # (C, H, W) -> (H, W, C)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise SpanetError(f"a numpy image must be uint8 (H, W, 3) RGB, got dtype {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise SpanetError(f"a numpy image must be (H, W, 3) RGB or (H, W), got shape {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    raise SpanetError(f"cannot use {type(image).__name__} as an image; pass paths, PIL images, arrays or tensors")


def _progress_range(total: int, step: int, *, enabled: bool) -> Any:
    starts = range(0, total, step)
    if not enabled:
        return starts
    from tqdm import tqdm

    return tqdm(starts, desc="extract", unit="batch", total=len(starts))


def _progress_iter(items: Sequence[Any], *, enabled: bool) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="extract", unit="img")


def _plain(value: Any) -> Any:
    """Tuples as lists and paths as strings, so model_args compare equal after a JSON round trip."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
