"""ONNX export of the embedding graph, checked against PyTorch before it is trusted.

The exported graph is `model.embed(x, kind)`: input `images` (B, 3, H, W) float32, already resized to the
checkpoint's input size and normalised with ImageNet mean/std (what `spanet.data.transforms.eval_transform`
produces); output `features` (B, D). The batch axis is dynamic. Export uses the torch.export-based exporter
(`dynamo=True`, needs onnxscript); if that fails on some torch version it falls back to the TorchScript exporter.
After writing, the file is run with onnxruntime on random batches of two different sizes (proving the dynamic
axis) and the largest absolute difference to PyTorch must stay within `tolerance`, else `SpanetError`.

`export_checkpoint` also writes `MODEL.metadata.json` beside `MODEL.onnx`: what a C++ / DeepStream / Triton user needs
to feed the graph without reading this code (input size, RGB order, mean/std on [0, 1] pixels, resize, feature
dimension and layout, distance) and the fingerprints that tie it to the checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from spanet.errors import SpanetError
from spanet.outputs import atomic_path, write_json

if TYPE_CHECKING:
    from spanet.model import SPANet

__all__ = ["ExportReport", "export_onnx", "export_checkpoint", "verify_onnx", "export_metadata", "metadata_path"]

INPUT_NAME = "images"
OUTPUT_NAME = "features"


@dataclass(frozen=True)
class ExportReport:
    """Where the model went, how it was exported, and how closely onnxruntime matches PyTorch per batch size."""

    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int | None
    input_size: tuple[int, int]
    feature_dim: int
    max_abs_diff: dict[int, float]

    @property
    def worst_diff(self) -> float:
        return max(self.max_abs_diff.values())


def export_onnx(
    model: SPANet,
    out: str | os.PathLike[str],
    *,
    input_size: Sequence[int],
    kind: str = "parts",
    opset: int | None = None,
    tolerance: float = 1e-4,
    check_batch_sizes: Sequence[int] = (2, 3),
    seed: int = 0,
) -> ExportReport:
    """Export `model.embed` to `out`, run it with onnxruntime, and fail if it differs from PyTorch.

    The file is written under a temporary name beside `out` and renamed over `out` only after it passed the check,
    so a failed export never leaves a bad model behind or replaces a good one.
    """
    out = _check_out(Path(out))
    _check_tolerance(tolerance)
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = int(input_size[0]), int(input_size[1])
    from spanet.model import SPANetEmbedder

    graph = SPANetEmbedder(model.to("cpu"), kind=kind).eval()
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with atomic_path(out, temp_suffix=".tmp.onnx") as tmp:  # renamed over `out` only if the check passes
        exporter = _export(graph, example, tmp, opset=opset)
        diffs = verify_onnx(graph, tmp, input_size=(height, width), batch_sizes=check_batch_sizes, seed=seed)
        worst = max(diffs.values())
        if not worst <= tolerance:  # also catches NaN
            raise SpanetError(
                f"the ONNX export differs from PyTorch by up to {worst:.3g} (> {tolerance:g}); {out} was not written "
                "— try another opset, or report the torch/onnxruntime versions"
            )
        opset_used = _opset_of(tmp)
    with torch.inference_mode():
        feature_dim = int(graph(example[:1]).shape[1])
    return ExportReport(
        path=out, exporter=exporter, opset=opset_used, input_size=(height, width), feature_dim=feature_dim, max_abs_diff=diffs
    )


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    kind: str = "parts",
    opset: int | None = None,
    tolerance: float = 1e-4,
) -> ExportReport:
    """`export_onnx` for a checkpoint file, at the checkpoint's own input size; never writes over the checkpoint."""
    from spanet.checkpoint import checkpoint_input_size, load_model

    out = _check_out(Path(out))
    _check_tolerance(tolerance)
    if out.exists() and Path(checkpoint).exists() and out.resolve() == Path(checkpoint).resolve():
        raise SpanetError(f"the ONNX output {out} is the checkpoint itself; choose another file name ending in .onnx")
    model, state = load_model(checkpoint, map_location="cpu")
    input_size = checkpoint_input_size(state, path=checkpoint)
    report = export_onnx(model, out, input_size=input_size, kind=kind, opset=opset, tolerance=tolerance)
    metadata = export_metadata(model, state, report=report, kind=kind, checkpoint=checkpoint)
    write_json(metadata_path(report.path), metadata)
    return report


def metadata_path(onnx_path: str | os.PathLike[str]) -> Path:
    """`MODEL.metadata.json` beside `MODEL.onnx`."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.metadata.json")


def export_metadata(
    model: SPANet, state: dict, *, report: ExportReport, kind: str, checkpoint: str | os.PathLike[str]
) -> dict[str, Any]:
    """How to prepare the input of the exported graph and read its output, plus the model's fingerprints."""
    from spanet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from spanet.features import model_fingerprints

    height, width = report.input_size
    num_parts = int(getattr(model, "num_parts", 1)) if kind in ("parts", "reduced") else 1
    return {
        "format": "spanet-onnx-metadata/1",
        "onnx_file": report.path.name,
        "input": {
            "name": INPUT_NAME, "shape": ["batch", 3, height, width], "dtype": "float32", "layout": "NCHW",
            "colour_order": "RGB", "resize": f"bilinear to {height}x{width} (height x width), no padding or crop",
            "scale": "pixel / 255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        },
        "output": {
            "name": OUTPUT_NAME, "shape": ["batch", report.feature_dim], "kind": kind, "feature_dim": report.feature_dim,
            "normalisation": f"each of {num_parts} equal slices has unit L2 norm" if num_parts > 1 else "unit L2 norm",
        },
        "distance": "squared euclidean (smaller is more similar); cosine after L2-normalising the whole vector",
        "exporter": report.exporter,
        "opset": report.opset,
        "max_abs_diff_vs_pytorch": {str(k): v for k, v in report.max_abs_diff.items()},
        "checkpoint": str(checkpoint),
        **model_fingerprints(state["model_args"], model.state_dict()),
    }  # fmt: skip


def _check_out(out: Path) -> Path:
    """An ONNX output must be a file name ending in .onnx, not a folder (or a checkpoint by mistake)."""
    if out.is_dir():
        raise SpanetError(f"the ONNX output {out} is a folder; pass a file name such as {out / 'model.onnx'}")
    if out.suffix.lower() != ".onnx":
        raise SpanetError(f"the ONNX output {out} must end in .onnx (so a checkpoint is never overwritten by mistake)")
    return out


def _check_tolerance(tolerance: float) -> None:
    """A negative or NaN tolerance fails every export and then blames the exporter; say so before exporting."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise SpanetError(f"--tolerance must be a number >= 0 (the largest allowed |ONNX - PyTorch|), got {tolerance}")


def verify_onnx(
    graph: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    input_size: Sequence[int],
    batch_sizes: Sequence[int] = (2, 3),
    seed: int = 0,
) -> dict[int, float]:
    """Max |onnxruntime − PyTorch| on a random normal batch of each size in `batch_sizes`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed + 1)
    diffs = {}
    for batch_size in batch_sizes:
        x = torch.randn(batch_size, 3, int(input_size[0]), int(input_size[1]), generator=generator)
        with torch.inference_mode():
            expected = graph(x).numpy()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        if got.shape != expected.shape:
            raise SpanetError(f"ONNX model {path} returned shape {got.shape} for batch {batch_size}, expected {expected.shape}")
        diffs[int(batch_size)] = float(np.abs(got - expected).max())
    return diffs


def _export(graph: torch.nn.Module, example: torch.Tensor, out: Path, *, opset: int | None) -> str:
    """Try the dynamo exporter, then the TorchScript one; return which one wrote `out`."""
    batch = torch.export.Dim("batch", min=1)
    kwargs = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if opset is not None:
        kwargs["opset_version"] = opset
    try:
        with _quiet():
            program = torch.onnx.export(graph, (example,), dynamo=True, dynamic_shapes={"x": {0: batch}}, **kwargs)
        program.save(str(out))
        if opset is None or _opset_of(out) == opset:
            return "dynamo"
        # it converts its own opset to the one asked for, and on failure logs a traceback and keeps its own
        warnings.warn(f"the dynamo ONNX exporter could not write opset {opset} (it wrote {_opset_of(out)}); trying "
                      "the TorchScript exporter", stacklevel=2)  # fmt: skip
    except Exception as dynamo_error:  # noqa: BLE001 - any failure of the new exporter means: try the old one
        warnings.warn(f"dynamo ONNX export failed ({_first_line(dynamo_error)}); falling back to the TorchScript "
                      "exporter", stacklevel=2)  # fmt: skip
    try:
        with _quiet():
            torch.onnx.export(
                graph,
                (example,),
                str(out),
                dynamo=False,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                **kwargs,
            )
    except Exception as exc:  # noqa: BLE001 - report both exporters' failure as one user-facing message
        asked = f" at opset {opset}" if opset is not None else ""
        raise SpanetError(f"the ONNX export failed with both exporters{asked}: {_first_line(exc)}"
                          + ("; pass another --opset, or leave it out" if opset is not None else "")) from exc
    if opset is not None and _opset_of(out) != opset:
        raise SpanetError(f"neither ONNX exporter could write opset {opset} (they wrote {_opset_of(out)}); pass "
                          "another --opset, or leave it out for the exporter's own")  # fmt: skip
    return "torchscript"


def _first_line(exc: BaseException) -> str:
    """The message of an exporter's exception without the graph dump torch appends to it."""
    text = str(exc).strip()
    return text.splitlines()[0].split(" [Caused by")[0].strip() if text else repr(exc)


def _opset_of(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The dynamo exporter prints its progress to stdout and logs the tracebacks of what it recovers from (e.g. an
    opset conversion); keep the command's own output readable: what matters is checked on the file it wrote."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            with _native_output_discarded():
                yield
        finally:
            logging.disable(logging.NOTSET)


@contextlib.contextmanager
def _native_output_discarded() -> Iterator[None]:
    """The TorchScript exporter prints graphs from C++ straight to file descriptors 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
