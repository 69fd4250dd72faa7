"""`spanet extract --engine ray`: the same features as `spanet extract`, computed by a pool of model actors with
Ray Data (`map_batches`), on one machine or a Ray cluster, written as Parquet shards.

The embedding is `FeatureExtractor.extract_files`, the one embedding loop; Ray only decides which actor embeds
which batch. One actor per GPU where the cluster has GPUs (`num_gpus=1` each), CPU actors otherwise.

Output folder: `part-NNNNN.parquet` shards of `shard_size` images in the sorted input order (columns as
`spanet.deploy.transfer`: vector, image = the source path, sha256, fingerprint, ...; the model in the metadata,
so `spanet gallery import` loads them) and `manifest.json`: which paths each shard holds and which model made
them. A shard is written to a temporary file and renamed when complete, so a run that stops is resumed by
running it again: complete shards whose paths and model match are kept, the rest are (re)computed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spanet.errors import SpanetError

__all__ = ["RayOptions", "RayReport", "extract_with_ray", "MANIFEST"]

MANIFEST = "manifest.json"
_RAY_HINT = "--engine ray needs Ray Data and pyarrow: pip install 'spanet[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """How to run: `workers` model actors (None: one per GPU of the cluster, else 1), images per forward pass,
    the embedding, the device inside each actor, images per output shard, and the Ray address (None: a local
    Ray started here, or the one already initialised; "auto": the cluster this machine belongs to)."""

    workers: int | None = None
    batch_size: int = 64
    kind: str = "parts"
    device: str = "auto"
    amp: bool | str | None = False
    shard_size: int = 10_000
    address: str | None = None


@dataclass
class RayReport:
    """What a run did: rows written now, shards written now, shards kept from an earlier run, unreadable files."""

    rows: int = 0
    written: int = 0
    kept: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


class _Embedder:
    """One Ray actor: a FeatureExtractor loaded once, embedding batch after batch."""

    def __init__(self, *, checkpoint: str, kind: str, device: str, amp: bool | str | None, batch_size: int,
                 threads: int) -> None:  # fmt: skip
        import torch

        from spanet.features import FeatureExtractor

        if threads > 0:
            torch.set_num_threads(threads)
        self.extractor = FeatureExtractor(checkpoint, device=device, batch_size=batch_size, kind=kind, amp=amp)
        self.fingerprint = str(self.extractor.info["weights_fingerprint"])

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        paths = [str(p) for p in batch["image"].to_pylist()]
        result = self.extractor.extract_files(paths, progress=False)
        dim = int(self.extractor.feature_dim)
        vectors = np.zeros((len(paths), dim), dtype=np.float32)
        vectors[list(result.indices)] = result.features  # (N, D); unreadable rows stay zero and carry an error
        errors: list[str | None] = [None] * len(paths)
        reasons = dict(result.failures)
        for i, path in enumerate(paths):
            errors[i] = reasons.get(path)
        return pa.table({
            "shard": batch["shard"], "image": pa.array(paths, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
            "error": pa.array(errors, pa.string()),
            "fingerprint": pa.array([self.fingerprint] * len(paths), pa.string()),
        })  # fmt: skip


def extract_with_ray(checkpoint: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]], *,
                     out: str | os.PathLike[str], options: RayOptions = RayOptions()) -> RayReport:  # fmt: skip
    """Embed `paths` into Parquet shards under `out` (see the module docstring); resumable by shard."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SpanetError(_RAY_HINT) from None
    from spanet.features import FeatureExtractor

    if options.shard_size < 1 or options.batch_size < 1 or (options.workers is not None and options.workers < 1):
        raise SpanetError("--shard-size, --batch-size and --workers must be at least 1")
    out = Path(out)
    if out.suffix == ".npz" or out.is_file():
        raise SpanetError(f"--out {out} must be a folder for --engine ray (Parquet shards), not a file")
    info = FeatureExtractor(checkpoint, device="cpu", kind=options.kind).info  # the model, as every shard records it
    ordered = sorted(dict.fromkeys(str(p) for p in paths))
    shards = [ordered[i : i + options.shard_size] for i in range(0, len(ordered), options.shard_size)]
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out)
    report = RayReport()
    pending = {}
    for number, shard in enumerate(shards):
        key = _shard_key(shard, info)
        if manifest.get(_name(number), {}).get("key") == key and (out / _name(number)).is_file():
            report.kept += 1
            report.failures += [tuple(f) for f in manifest[_name(number)].get("failures", [])]
        else:
            pending[number] = (shard, key)
    if pending:
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(address=options.address, include_dashboard=False, configure_logging=False, log_to_driver=False)
        _run_pending(pending, checkpoint=str(checkpoint), out=out, info=info, options=options, manifest=manifest,
                     report=report)  # fmt: skip
    return report


def _run_pending(pending: dict[int, tuple[list[str], str]], *, checkpoint: str, out: Path, info: dict[str, Any],
                 options: RayOptions, manifest: dict[str, Any], report: RayReport) -> None:  # fmt: skip
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import ray

    from spanet.deploy.transfer import parquet_schema

    gpus = int(ray.cluster_resources().get("GPU", 0))
    workers = options.workers or max(1, gpus)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = max(1, cpus // workers) if not gpus else 0
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards complete one after another
    items = [{"shard": number, "image": path} for number, (shard, _key) in sorted(pending.items()) for path in shard]
    dataset = ray.data.from_items(items).map_batches(
        _Embedder, batch_size=options.batch_size, batch_format="pyarrow", concurrency=workers,
        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else threads,
        fn_constructor_kwargs={"checkpoint": checkpoint, "kind": options.kind, "device": options.device,
                               "amp": options.amp, "batch_size": options.batch_size, "threads": threads},
    )  # fmt: skip
    schema = parquet_schema(int(info["feature_dim"]), info)
    left = {number: len(shard) for number, (shard, _key) in pending.items()}
    writers: dict[int, Any] = {}
    failures: dict[int, list[tuple[str, str]]] = {number: [] for number in pending}
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for number in sorted(set(batch["shard"].to_pylist())):
            rows = batch.filter(pc.equal(batch["shard"], number))
            failed = rows.filter(rows["error"].is_valid())
            good = rows.filter(rows["error"].is_null())
            failures[number] += list(zip(failed["image"].to_pylist(), failed["error"].to_pylist()))
            if number not in writers:
                writers[number] = pq.ParquetWriter(out / f".{_name(number)}.tmp", schema)
            writers[number].write_table(_shard_rows(good, schema))
            report.rows += len(good)
            left[number] -= len(rows)
            if left[number] == 0:
                writers.pop(number).close()
                os.replace(out / f".{_name(number)}.tmp", out / _name(number))
                manifest[_name(number)] = {"key": pending[number][1], "images": len(pending[number][0]),
                                           "failures": failures[number]}  # fmt: skip
                _write_manifest(out, manifest)
                report.written += 1
                report.failures += failures[number]
    for writer in writers.values():  # only when Ray stopped early: those shards are redone next time
        writer.close()


def _shard_rows(good: Any, schema: Any) -> Any:
    """The readable rows of a batch in the gallery Parquet schema; camera and label from Market-style file names,
    as `spanet gallery build` reads them."""
    import pyarrow as pa

    from spanet.deploy.enrol import camera_from_name, label_from_name

    images = good["image"].to_pylist()
    names = [Path(p).name for p in images]
    return pa.table({
        "vector": good["vector"], "camera": [camera_from_name(n) for n in names],
        "time": pa.nulls(len(good), pa.string()), "track": pa.nulls(len(good), pa.int64()),
        "label": [label_from_name(n) for n in names], "source": good["image"], "image": good["image"],
        "sha256": [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in images],
        "fingerprint": good["fingerprint"],
    }, schema=schema)  # fmt: skip


def _name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def _shard_key(paths: list[str], info: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps([info.get("weights_fingerprint"), info.get("kind"), paths]).encode())
    return digest.hexdigest()[:32]


def _read_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}  # unreadable: every shard is recomputed


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
