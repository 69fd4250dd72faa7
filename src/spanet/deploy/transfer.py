"""Galleries as Parquet: `spanet gallery export` writes one, `spanet gallery import` loads one (or the shards of
`spanet extract --engine ray`) into any backend, without running the model.

Columns (one row per entry): `vector` (fixed-size list of float32), `camera` (int64, null = unknown), `time`
(ISO 8601 text or null), `track` (int64 or null), `label`, `source`, `image` (path of the image file: inside the
exported gallery's `images/`, or the original file for extraction shards), `sha256`, `fingerprint` (weights
fingerprint of the model that made the vector). The file's schema metadata `spanet.model` holds the model
description (`gallery.json`'s `model`), so an import makes a new gallery for the same model, and refuses rows or
galleries of another one: vectors of two models are not comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spanet.errors import SpanetError

__all__ = ["export_gallery", "import_gallery", "ImportReport", "read_model_info", "parquet_schema", "MODEL_KEY"]

MODEL_KEY = b"spanet.model"
_BATCH = 2048
_PYARROW_HINT = "Parquet needs pyarrow: pip install 'spanet[milvus]' (or pip install pyarrow)"


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401 - the submodule is used as pa.parquet
    except ImportError:
        raise SpanetError(_PYARROW_HINT) from None
    return pa


def parquet_schema(dim: int, model_info: dict[str, Any]) -> Any:
    """The Arrow schema of gallery Parquet files for `dim`-d vectors of the model `model_info` describes."""
    pa = _pyarrow()
    return pa.schema(
        [("vector", pa.list_(pa.float32(), dim)), ("camera", pa.int64()), ("time", pa.string()), ("track", pa.int64()),
         ("label", pa.string()), ("source", pa.string()), ("image", pa.string()), ("sha256", pa.string()),
         ("fingerprint", pa.string())],
        metadata={MODEL_KEY: json.dumps(model_info, sort_keys=True).encode()},
    )  # fmt: skip


def export_gallery(gallery: Any, out: str | os.PathLike[str]) -> int:
    """Write every entry of an open gallery (any backend) to the Parquet file `out`; the number of rows."""
    pa = _pyarrow()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dim = int(gallery.meta["feature_dim"])
    schema = parquet_schema(dim, gallery.meta["model"])
    ids = gallery.ids()
    tmp = out.with_name(f".{out.name}.tmp")
    with pa.parquet.ParquetWriter(tmp, schema) as writer:
        for start in range(0, len(ids), _BATCH):
            chunk = [int(i) for i in ids[start : start + _BATCH]]
            entries = gallery.get(chunk)
            vectors = gallery.features(chunk)  # (B, D)
            rows = [entries[i] for i in chunk]
            columns = {
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
                "camera": [e.camera for e in rows], "time": [e.timestamp for e in rows],
                "track": [getattr(e, "track", None) for e in rows], "label": [e.label for e in rows],
                "source": [e.source for e in rows], "image": [str(gallery.image_path(e)) for e in rows],
                "sha256": [Path(e.image).stem for e in rows], "fingerprint": [e.fingerprint for e in rows],
            }  # fmt: skip
            writer.write_table(pa.table(columns, schema=schema))
    os.replace(tmp, out)
    return len(ids)


def read_model_info(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """The model description all the Parquet files share; `SpanetError` when one has none or they differ."""
    pa = _pyarrow()
    found: dict[str, Any] | None = None
    for path in paths:
        try:
            metadata = pa.parquet.read_schema(path).metadata or {}
        except (OSError, pa.ArrowException) as exc:
            raise SpanetError(f"{path} is not a Parquet file spanet can read ({exc})") from None
        if MODEL_KEY not in metadata:
            raise SpanetError(f"{path} does not say which model made its vectors (no {MODEL_KEY.decode()} metadata); "
                              "write it with `spanet gallery export` or `spanet extract --engine ray`")  # fmt: skip
        info = json.loads(metadata[MODEL_KEY])
        if found is not None and info.get("weights_fingerprint") != found.get("weights_fingerprint"):
            raise SpanetError(f"{path} holds vectors of model {info.get('weights_fingerprint')}, the other files of "
                              f"{found.get('weights_fingerprint')}; import one model's vectors per gallery")  # fmt: skip
        found = info
    if found is None:
        raise SpanetError("no Parquet files to import")
    return found


@dataclass
class ImportReport:
    """What an import did: new ids, rows whose image bytes were already in the gallery, rows without an image."""

    ids: list[int]
    already: int = 0
    missing: list[str] | None = None


def import_gallery(gallery: Any, paths: Sequence[str | os.PathLike[str]]) -> ImportReport:
    """Add the rows of Parquet files (exports or extraction shards) to an open gallery with their stored vectors.

    Rows of another model (their `fingerprint`, or the file's model) are refused before anything is added; rows
    whose image bytes the gallery already holds are skipped, so an interrupted import is finished by running it
    again. The image files must be readable at their `image` paths (they are copied into the gallery)."""
    from spanet.deploy.enrol import camera_from_name, label_from_name
    from spanet.deploy.gallery import NewEntry

    info = read_model_info(paths)
    if info.get("weights_fingerprint") != gallery.fingerprint or int(info["feature_dim"]) != int(gallery.meta["feature_dim"]):
        raise SpanetError(f"the Parquet vectors come from model {info.get('weights_fingerprint')} ({info.get('feature_dim')}-d), "
                          f"gallery {gallery.directory} is for {gallery.fingerprint} ({gallery.meta['feature_dim']}-d); "
                          "import into a new gallery folder, or re-extract with the gallery's checkpoint")  # fmt: skip
    report = ImportReport(ids=[], missing=[])
    known = gallery.known_hashes()
    for path, table in _tables(paths, gallery.fingerprint):
        rows = table.to_pylist()
        entries, vectors = [], []
        for row, vector in zip(rows, _vectors(table, int(gallery.meta["feature_dim"]), path)):
            try:
                data = Path(row["image"]).read_bytes()
            except (OSError, TypeError) as exc:
                report.missing.append(f"{row.get('image')}: {getattr(exc, 'strerror', None) or exc}")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in known:
                report.already += 1
                continue
            known.add(digest)
            name = Path(row["image"]).name
            camera = row["camera"] if "camera" in row else camera_from_name(name)
            label = row["label"] if "label" in row else label_from_name(name)
            entries.append(NewEntry(data=data, suffix=Path(name).suffix, camera=camera, timestamp=row.get("time"),
                                    track=row.get("track"), label=label,
                                    source=row.get("source") or row["image"]))  # fmt: skip
            vectors.append(vector)
        if entries:
            report.ids += gallery.add(entries, np.stack(vectors))
    gallery.save_index()
    return report


def _tables(paths: Sequence[str | os.PathLike[str]], fingerprint: str) -> Iterator[tuple[str, Any]]:
    """(path, table of up to _BATCH rows) of every file, after checking every row's fingerprint in every file."""
    pa = _pyarrow()
    import pyarrow.compute as pc

    for path in paths:
        column = pa.parquet.read_table(path, columns=["fingerprint"])["fingerprint"]
        others = pc.unique(pc.filter(column, pc.not_equal(column, fingerprint))).to_pylist()
        if others:
            raise SpanetError(f"{path} has rows made by another model ({', '.join(map(str, others[:3]))}, not "
                              f"{fingerprint}); nothing was imported")  # fmt: skip
    for path in paths:
        for batch in pa.parquet.ParquetFile(path).iter_batches(batch_size=_BATCH):
            yield str(path), pa.Table.from_batches([batch])


def _vectors(table: Any, dim: int, path: str) -> np.ndarray:
    column = table["vector"].combine_chunks()
    flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    if flat.size != len(table) * dim:
        raise SpanetError(f"{path}: vectors are not {dim}-d; it was made for another gallery")
    return flat.reshape(len(table), dim)
