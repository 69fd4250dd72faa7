"""Features of images: ONE batched embedding loop, `FeatureExtractor` as a thin layer on it, ONE `.npz` format.

Everything that turns pictures into retrieval vectors calls `extract_features`: evaluation (query and gallery),
`spanet extract` / `spanet search` through `FeatureExtractor`, and any caller with its own crops. It accepts, in one
list or mixed: paths (str or `os.PathLike`), `Sample`s (anything with a `path`), PIL images (any mode; converted to
RGB), numpy arrays (H, W, 3) uint8 RGB (or (H, W) grayscale), and tensors (3, H, W) as *pictures* (float in [0, 1],
what `ToTensor` gives, or uint8). Every input goes through the checkpoint's evaluation transform (resize to its
`input_size`, ImageNet normalisation); a batch that is already resized and normalised goes to
`FeatureExtractor.embed_tensor` instead (the input the ONNX export takes).

Flip averaging sums `embed(x)` and `embed(flip(x))` and L2-normalises the sum the same way `SPANet.embed` normalises
its output: each of the `model.num_parts` stripe vectors for kind "parts" and "reduced", the whole vector for
"global". So a flipped feature has the same layout and norms as a plain one, and distances stay comparable.

The `.npz` format (written by `save_features`, read by `load_features`, no pickled objects): `features` (N, D)
float32, `paths` (N,), `pids` and `camids` (N,) int64 (−1 where unknown), `split` (N,) ("query" / "gallery" / ""),
`failed` (paths that could not be read), `model_info` (JSON: checkpoint, model args, input size, kind, fingerprints).
`spanet extract` writes it without ids, `spanet evaluate` with them; `spanet index build` reads both. Files from
before this format (evaluation's `query_features` / `gallery_features`) still load.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from spanet.data.images import as_rgb_image
from spanet.errors import SpanetError
from spanet.outputs import atomic_path
from spanet.runtime import Precision, choose_precision, resolve_device

__all__ = [
    "ImageInput",
    "ExtractionResult",
    "ExtractionOptions",
    "FeatureFile",
    "extract_features",
    "embed_batch",
    "FeatureExtractor",
    "model_info",
    "model_fingerprints",
    "save_features",
    "load_features",
]

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, torch.Tensor, Any]
EmbeddingKind = Literal["parts", "reduced", "global"]


@dataclass(frozen=True, eq=False)
class ExtractionResult:
    """Features of the inputs that could be read, in input order, and (label, reason) for the others.

    `paths` labels each row (the file path, or `<input N>` for an in-memory picture); `indices` gives each row's
    position in the input list.
    """

    features: np.ndarray
    paths: tuple[str, ...]
    failures: tuple[tuple[str, str], ...] = ()
    indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class ExtractionOptions:
    """How images become features, carried as one value from the command line down to the embedding loop.

    `amp`: "auto" (float16 on CUDA, bfloat16 on CPUs with native bf16, else float32), "none"/None/False (float32),
    "bf16", "fp16", True (the device's reduced precision), or an already chosen `Precision`. `channels_last`: NHWC
    batches; None follows the hardware (on with fp16 on CUDA and bf16 on AMX: `spanet.runtime.choose_precision`).
    """

    batch_size: int = 64
    device: str | torch.device = "cpu"
    flip: bool = False
    kind: EmbeddingKind = "parts"
    amp: bool | str | Precision | None = None
    channels_last: bool | None = None
    num_workers: int = 0
    progress: bool = True

    def precision(self, device: torch.device) -> Precision:
        """The precision these options ask for, resolved on `device`."""
        if isinstance(self.amp, Precision):
            return self.amp if self.channels_last is None else replace(self.amp, channels_last=self.channels_last)
        return choose_precision(self.amp, device, channels_last=self.channels_last)


def extract_features(
    model: nn.Module,
    images: Sequence[ImageInput],
    *,
    input_size: Sequence[int],
    options: ExtractionOptions = ExtractionOptions(),
    skip_unreadable: bool = False,
    desc: str = "features",
) -> ExtractionResult:
    """Float32 (N, D) features of `images` in their order, batched, in inference mode.

    `input_size` is (height, width) as stored in the checkpoint. The model must already live on `options.device`;
    it runs in eval mode and is put back in its previous mode afterwards. Precision: float32 unless `options.amp`
    asks for autocast (`ExtractionOptions`); with channels_last batches the model is best converted too
    (`model.to(memory_format=torch.channels_last)`, as `FeatureExtractor` does). An unreadable input raises
    `SpanetError` naming it, or with `skip_unreadable` is left out and listed in `failures`.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from spanet.data.transforms import eval_transform

    if options.batch_size < 1:
        raise SpanetError(f"batch size must be at least 1, got {options.batch_size}")
    device = resolve_device(options.device)
    model_device = next((p.device for p in model.parameters()), device)
    if model_device.type != device.type:
        raise SpanetError(f"the model is on {model_device} but features were asked for on {device}; move it first")
    precision = options.precision(device)
    images = list(images)
    inputs = _Inputs(images, eval_transform(input_size), skip_unreadable=skip_unreadable)
    loader = DataLoader(
        inputs, batch_size=options.batch_size, shuffle=False, num_workers=options.num_workers, collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    rows: list[np.ndarray] = []
    kept: list[int] = []
    failures: list[tuple[str, str]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), precision.autocast(device.type):
            for batch, indices, failed in tqdm(loader, desc=desc, unit="batch", disable=not options.progress):
                failures += [(_label(images[i], i), reason) for i, reason in failed]
                if batch is None:
                    continue
                batch = batch.to(device, non_blocking=True)
                if precision.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                feats = embed_batch(model, batch, kind=options.kind, flip=options.flip)  # (B, D)
                rows.append(feats.float().cpu().numpy())
                kept += indices
    finally:
        model.train(was_training)
    dim = rows[0].shape[1] if rows else _embedding_dim(model, options.kind)
    features = np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    labels = tuple(_label(images[i], i) for i in kept)
    return ExtractionResult(features=features, paths=labels, failures=tuple(failures), indices=tuple(kept))


def embed_batch(model: nn.Module, batch: torch.Tensor, *, kind: EmbeddingKind = "parts", flip: bool = False) -> torch.Tensor:
    """`model.embed` of a resized, normalised (B, 3, H, W) batch, averaged with its mirror image when `flip`."""
    feats = model.embed(batch, kind=kind)  # (B, D)
    if flip:
        num_parts = int(getattr(model, "num_parts", 1)) if kind in ("parts", "reduced") else 1
        feats = _normalise_parts(feats + model.embed(batch.flip(dims=[3]), kind=kind), num_parts)
    return feats


class FeatureExtractor:
    """Turn images into re-ID feature vectors with a trained SPANet.

    >>> extractor = FeatureExtractor("runs/market/last.pt")
    >>> features = extractor(["a.jpg", "b.jpg"])        # (2, 12288) float32 for a resnet50 SPANet
    >>> distance = ((features[0] - features[1]) ** 2).sum()

    `checkpoint` is a path to a `spanet train` checkpoint, or an already built SPANet (then `input_size` is
    required). `kind` is passed to `SPANet.embed` ("parts": the paper's test feature, six L2-normalised stripe
    vectors concatenated). Compare features with (squared) Euclidean distance. Runs in float32 unless `amp`
    ("auto", "bf16", "fp16" or True, as in `ExtractionOptions`); `channels_last` (None: as `choose_precision`
    decides) feeds NHWC batches and converts a model loaded here.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | torch.nn.Module,
        *,
        device: str | torch.device = "auto",
        batch_size: int = 64,
        kind: EmbeddingKind = "parts",
        input_size: Sequence[int] | None = None,
        flip: bool = False,
        amp: bool | str | None = False,
        channels_last: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise SpanetError(f"batch_size must be at least 1, got {batch_size}")
        self.device = resolve_device(device)
        self.precision = choose_precision(amp, self.device, channels_last=channels_last)
        self.options = ExtractionOptions(batch_size=batch_size, device=self.device, flip=flip, kind=kind,
                                         amp=self.precision)  # fmt: skip
        if isinstance(checkpoint, torch.nn.Module):
            if input_size is None:
                raise SpanetError("FeatureExtractor(model, ...) needs input_size=(height, width) when given a model")
            self.model = checkpoint
            self.checkpoint_path: str | None = None
            self._model_args: dict[str, Any] = {}
        else:
            from spanet.checkpoint import checkpoint_input_size, load_model

            self.model, state = load_model(checkpoint, map_location="cpu")
            self.checkpoint_path = str(checkpoint)
            self._model_args = dict(state["model_args"])
            if input_size is None:
                input_size = checkpoint_input_size(state, path=checkpoint)
            if self.precision.channels_last:  # our own copy: NHWC weights spare a layout change per convolution
                self.model = self.model.to(memory_format=torch.channels_last)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.model.to(self.device).eval()
        self._info: dict[str, Any] | None = None

    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    @property
    def kind(self) -> EmbeddingKind:
        return self.options.kind

    @property
    def flip(self) -> bool:
        return self.options.flip

    @property
    def feature_dim(self) -> int:
        """Length of one feature vector."""
        return int(self.model.embedding_dim(self.kind))

    @property
    def info(self) -> dict[str, Any]:
        """What made these features: stored with extracted features and indexes, checked before searching."""
        if self._info is None:
            self._info = model_info(
                self.model, model_args=self._model_args, input_size=self.input_size, kind=self.kind,
                checkpoint=self.checkpoint_path,
            )  # fmt: skip
        return self._info

    def __call__(self, images: Sequence[ImageInput], *, progress: bool = False) -> np.ndarray:
        """Features (N, D) float32 of `images`, in order; an unreadable file raises `SpanetError` naming it."""
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)) or (
            isinstance(images, torch.Tensor) and images.dim() == 3
        ):
            raise SpanetError("FeatureExtractor expects a list of images; wrap a single image in a list")
        return self.extract(images, progress=progress).features

    def extract_files(self, paths: Sequence[str | os.PathLike[str]], *, progress: bool = False) -> ExtractionResult:
        """Like calling on paths, but files that cannot be decoded are skipped and reported, never fatal."""
        return self.extract(paths, progress=progress, skip_unreadable=True)

    def extract(self, images: Sequence[ImageInput], *, progress: bool = False, skip_unreadable: bool = False,
                desc: str = "extract") -> ExtractionResult:  # fmt: skip
        """`extract_features` with this extractor's model and options."""
        options = replace(self.options, progress=progress)
        return extract_features(self.model, images, input_size=self.input_size, options=options,
                                skip_unreadable=skip_unreadable, desc=desc)  # fmt: skip

    @torch.inference_mode()
    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Features of an already resized and normalised batch (B, 3, H, W) — the ONNX model's input."""
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise SpanetError(f"embed_tensor expects a (B, 3, H, W) batch, got shape {tuple(batch.shape)}")
        precision = self.precision
        with precision.autocast(self.device.type):
            batch = batch.to(self.device, torch.float32)
            if precision.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            features = embed_batch(self.model, batch, kind=self.kind, flip=self.flip)
        return features.float().cpu().numpy()


def model_info(
    model: nn.Module,
    *,
    model_args: dict[str, Any],
    input_size: Sequence[int],
    kind: str,
    checkpoint: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Which model made a set of features: saved with every `.npz` and index, compared before a search."""
    args = model_args or {"class": type(model).__name__}
    return {
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "model_args": _plain(model_args),
        "input_size": [int(v) for v in input_size],
        "kind": kind,
        "feature_dim": _embedding_dim(model, kind),
        **model_fingerprints(args, model.state_dict()),
    }


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


@dataclass(frozen=True, eq=False)
class FeatureFile:
    """The content of a features `.npz`: rows of features with their paths, ids (−1 unknown) and split ("" unknown)."""

    features: np.ndarray
    paths: tuple[str, ...]
    pids: np.ndarray
    camids: np.ndarray
    splits: tuple[str, ...]
    info: dict[str, Any]
    failed: tuple[str, ...] = ()

    def select(self, split: str) -> FeatureFile:
        """Only the rows of `split` ("query" or "gallery")."""
        rows = np.array([s == split for s in self.splits], dtype=bool)
        return replace(
            self, features=self.features[rows], paths=tuple(p for p, keep in zip(self.paths, rows) if keep),
            pids=self.pids[rows], camids=self.camids[rows], splits=tuple(s for s in self.splits if s == split),
        )  # fmt: skip


def save_features(
    path: str | os.PathLike[str],
    *,
    features: np.ndarray,
    paths: Sequence[str],
    info: dict[str, Any],
    pids: Sequence[int] | None = None,
    camids: Sequence[int] | None = None,
    splits: Sequence[str] | None = None,
    failed: Sequence[str] = (),
) -> Path:
    """Write one features `.npz` (the format in the module docstring); unknown ids are −1, an unknown split ""."""
    path = Path(path)
    if path.suffix != ".npz":
        raise SpanetError(f"features file {path} must end in .npz (numpy archive of paths and features)")
    count = len(paths)
    if features.ndim != 2 or features.shape[0] != count:
        raise SpanetError(f"features of shape {features.shape} do not match {count} paths")
    arrays = {
        "features": features.astype(np.float32, copy=False),
        "paths": np.array([str(p) for p in paths], dtype=str).reshape(count),
        "pids": np.asarray(pids if pids is not None else [-1] * count, dtype=np.int64).reshape(count),
        "camids": np.asarray(camids if camids is not None else [-1] * count, dtype=np.int64).reshape(count),
        "split": np.array(list(splits) if splits is not None else [""] * count, dtype=str).reshape(count),
        "failed": np.array([str(p) for p in failed], dtype=str),
        "model_info": np.array(json.dumps(_plain(info))),
    }
    with atomic_path(path, temp_suffix=".tmp.npz") as tmp:  # numpy would add .npz to any other name
        np.savez(tmp, checksum=np.array(_arrays_checksum(arrays)), **arrays)
    return path


def load_features(path: str | os.PathLike[str]) -> FeatureFile:
    """Read a features `.npz` from `spanet extract` or `spanet evaluate` (this format or the older ones)."""
    path = Path(path)
    if not path.is_file():
        raise SpanetError(f"features file {path} does not exist; write one with `spanet extract` or `spanet evaluate`")
    try:
        if not zipfile.is_zipfile(path):
            raise SpanetError(f"features file {path} is not a numpy .npz archive; write it with `spanet extract`")
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = "it holds pickled objects, which spanet does not load" if "pickle" in str(exc) else exc
        raise SpanetError(f"features file {path} could not be read ({reason}); write it again") from None
    stored = arrays.pop("checksum", None)  # files from before checksums have none
    if stored is not None and str(stored) != _arrays_checksum(arrays):
        raise SpanetError(
            f"features file {path} is damaged or was changed after it was written (checksum mismatch); write it again"
        )
    if "features" not in arrays and "query_features" in arrays:
        arrays = _from_evaluation_format(arrays)
    if "features" not in arrays or "paths" not in arrays:
        raise SpanetError(f"{path} holds no 'features' and 'paths'; write it with `spanet extract` or `spanet evaluate`")
    features = np.asarray(arrays["features"], dtype=np.float32)
    paths = tuple(str(p) for p in arrays["paths"])
    if features.ndim != 2 or features.shape[0] != len(paths):
        raise SpanetError(f"{path}: features of shape {features.shape} do not match {len(paths)} paths")
    count = len(paths)
    return FeatureFile(
        features=features,
        paths=paths,
        pids=np.asarray(arrays.get("pids", np.full(count, -1)), dtype=np.int64),
        camids=np.asarray(arrays.get("camids", np.full(count, -1)), dtype=np.int64),
        splits=tuple(str(s) for s in arrays.get("split", [""] * count)),
        info=json.loads(str(arrays["model_info"])) if "model_info" in arrays else {},
        failed=tuple(str(p) for p in arrays.get("failed", ())),
    )


def _arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every array of a features file (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()


def _from_evaluation_format(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluation files before the one format: `{query,gallery}_{features,pids,camids,paths}`."""
    parts = ("query", "gallery")
    return {
        "features": np.concatenate([arrays[f"{s}_features"] for s in parts]),
        "paths": np.concatenate([arrays[f"{s}_paths"] for s in parts]),
        "pids": np.concatenate([arrays[f"{s}_pids"] for s in parts]),
        "camids": np.concatenate([arrays[f"{s}_camids"] for s in parts]),
        "split": np.array([s for s in parts for _ in range(len(arrays[f"{s}_paths"]))], dtype=str),
    }


class _Inputs:
    """Map-style dataset over mixed inputs: `(tensor or None, index, reason)`; a reason only when skipping."""

    def __init__(self, images: Sequence[ImageInput], transform: Any, *, skip_unreadable: bool) -> None:
        self.images = images
        self.transform = transform
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        try:
            return self.transform(as_rgb_image(self.images[index])), index, ""
        except SpanetError as exc:
            if not self.skip_unreadable:
                raise
            return None, index, str(exc)


def _collate(items: list[tuple[torch.Tensor | None, int, str]]) -> tuple[torch.Tensor | None, list[int], list]:
    """Stack the readable inputs of a batch; hand the others on as (index, reason)."""
    good = [(tensor, index) for tensor, index, _ in items if tensor is not None]
    failed = [(index, reason) for tensor, index, reason in items if tensor is None]
    batch = torch.stack([tensor for tensor, _ in good]) if good else None  # (B, 3, H, W)
    return batch, [index for _, index in good], failed


def _label(image: ImageInput, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if hasattr(image, "path"):
        return str(image.path)
    return f"<input {index}>"


def _normalise_parts(features: torch.Tensor, num_parts: int) -> torch.Tensor:
    """L2-normalise each of the `num_parts` equal slices of every row: (B, P·C) -> (B, P·C)."""
    batch, dim = features.shape
    if num_parts < 1 or dim % num_parts:
        num_parts = 1
    return F.normalize(features.reshape(batch, num_parts, dim // num_parts), dim=-1).reshape(batch, dim)


def _embedding_dim(model: nn.Module, kind: str) -> int:
    get_dim = getattr(model, "embedding_dim", None)
    return int(get_dim(kind)) if callable(get_dim) else 0


def _plain(value: Any) -> Any:
    """Tuples as lists and paths as strings, so model_args compare equal after a JSON round trip."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
