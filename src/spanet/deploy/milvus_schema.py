"""The Milvus side of a Milvus gallery (`spanet.deploy.milvus_gallery`): connecting, the collection's schema, a
gallery row <-> a Milvus row, and a `Where` as a Milvus filter expression. The fields are listed in
`milvus_gallery`'s docstring and docs/scale.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from spanet.deploy.entry import Entry, NewEntry
from spanet.deploy.filters import Where, to_seconds
from spanet.deploy.store_spec import STORE_FILE, StoreSpec
from spanet.errors import SpanetError

__all__ = ["CONSISTENCY", "where_expression", "connect", "create_collection", "check_collection", "to_row", "to_entry",
           "in_window"]

CONSISTENCY = "Strong"
_NO_CAMERA = -1
_MIN_SERVER = (2, 5)  # nullable scalar fields (tested: 2.3.5 standalone rejects null timestamps at insert)
_NOTHING = "id < 0"  # matches no row (ids are >= 1): an empty id or camera set


def where_expression(where: Where | None, *, camera: int | None = None, exclude_camera: int | None = None) -> str:
    """The Milvus boolean expression of `where` (and a search's camera options); "" for no filter. The time field
    holds whole epoch seconds, so a window boundary with a fraction of a second is widened to the whole second
    (`after` floored, `before` rounded up); `remove_where` re-checks the exact times before deleting."""
    where = where or Where()
    terms = []
    if where.ids is not None:
        terms.append(f"id in [{', '.join(str(int(i)) for i in where.ids)}]" if where.ids else _NOTHING)
    if camera is not None:
        terms.append(f"camera == {int(camera)}")
    if where.cameras is not None:
        terms.append(f"camera in [{', '.join(str(int(c)) for c in where.cameras)}]" if where.cameras else _NOTHING)
    if exclude_camera is not None:
        terms.append(f"camera != {int(exclude_camera)}")
    if where.label is not None:
        terms.append(f"label == {json.dumps(where.label)}")
    if where.track is not None:
        terms.append(f"track == {int(where.track)}")
    if where.after is not None:
        terms.append(f"timestamp >= {int(np.floor(where.after))}")
    if where.before is not None:
        terms.append(f"timestamp < {int(np.ceil(where.before))}")
    return " and ".join(terms)


def connect(spec: StoreSpec) -> MilvusClient:
    if spec.is_file:
        import importlib.util

        if importlib.util.find_spec("milvus_lite") is None:
            raise SpanetError(f"--store milvus:{spec.uri} needs Milvus Lite: pip install 'spanet[milvus]'")
    try:
        client = MilvusClient(uri=spec.uri, token=os.environ.get("SPANET_MILVUS_TOKEN", ""), timeout=30)
        version = str(client.get_server_version())
    except Exception as exc:  # pymilvus raises its own MilvusException and grpc errors
        raise SpanetError(f"cannot connect to Milvus at {spec.uri} ({str(exc).splitlines()[0][:200]}); start it, or "
                          "check the address and SPANET_MILVUS_TOKEN") from None  # fmt: skip
    match = re.match(r"v?(\d+)\.(\d+)", version)  # a server says v2.5.4; Milvus Lite says milvus_lite-3.2.2
    if match and (int(match[1]), int(match[2])) < _MIN_SERVER:
        client.close()
        raise SpanetError(f"Milvus at {spec.uri} is {version}; the gallery schema needs Milvus >= 2.5 (nullable "
                          "fields, INVERTED scalar indexes): upgrade the server")  # fmt: skip
    return client


def create_collection(client: MilvusClient, name: str, *, dim: int) -> None:
    if client.has_collection(name):
        raise SpanetError(f"Milvus already has a collection {name}; give a new gallery folder")
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("camera", DataType.INT64, is_partition_key=True)
    schema.add_field("timestamp", DataType.INT64, nullable=True)
    schema.add_field("time_text", DataType.VARCHAR, max_length=64, nullable=True)
    schema.add_field("track", DataType.INT64, nullable=True)
    schema.add_field("label", DataType.VARCHAR, max_length=200, nullable=True)
    schema.add_field("source", DataType.VARCHAR, max_length=4096, nullable=True)
    schema.add_field("image", DataType.VARCHAR, max_length=128)
    schema.add_field("sha256", DataType.VARCHAR, max_length=64)
    schema.add_field("fingerprint", DataType.VARCHAR, max_length=64)
    indexes = client.prepare_index_params()
    indexes.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
    for field in ("timestamp", "sha256", "image", "label"):
        indexes.add_index(field_name=field, index_type="INVERTED")  # scalar INVERTED: Milvus ≥ 2.4
    client.create_collection(name, schema=schema, index_params=indexes, consistency_level=CONSISTENCY)


def check_collection(client: MilvusClient, record: dict[str, Any], meta: dict[str, Any], spec: StoreSpec) -> None:
    name = str(record.get("collection", ""))
    if not client.has_collection(name):
        raise SpanetError(f"Milvus at {spec.uri} has no collection {name!r} (named in {STORE_FILE}); it was dropped "
                          "or this is another server: restore it, or import an export into a new gallery")  # fmt: skip
    fields = {f["name"]: f for f in client.describe_collection(name)["fields"]}
    dim = int(fields.get("vector", {}).get("params", {}).get("dim", -1))
    if dim != int(meta["feature_dim"]):
        raise SpanetError(f"collection {name} holds {dim}-d vectors but the gallery's model makes {meta['feature_dim']}-d")
    client.load_collection(name)


def _epoch(text: str | None) -> int | None:
    if not text:
        return None
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SpanetError(f"timestamp {text!r} is not ISO 8601 (e.g. 2024-05-01T13:45:00)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return int(np.floor(stamp.timestamp()))


def to_row(entry_id: int, entry: NewEntry, image: str, fingerprint: str, feature: np.ndarray) -> dict[str, Any]:
    return {
        "id": entry_id, "vector": feature.tolist(), "camera": _NO_CAMERA if entry.camera is None else int(entry.camera),
        "timestamp": _epoch(entry.timestamp), "time_text": entry.timestamp, "track": entry.track,
        "label": entry.label, "source": entry.source, "image": image, "sha256": Path(image).stem,
        "fingerprint": fingerprint,
    }  # fmt: skip


def to_entry(row: dict[str, Any]) -> Entry:
    camera, track = row.get("camera"), row.get("track")
    return Entry(id=int(row["id"]), image=str(row["image"]), camera=None if camera in (None, _NO_CAMERA) else int(camera),
                 timestamp=row.get("time_text"), label=row.get("label"), source=row.get("source"),
                 fingerprint=str(row["fingerprint"]), track=None if track is None else int(track))  # fmt: skip


def in_window(entry: Entry, where: Where) -> bool:
    """Whether the entry's exact time is inside `where`'s window (the Milvus field compares whole seconds)."""
    if where.after is None and where.before is None:
        return True
    seconds = to_seconds(entry.timestamp)
    return seconds is not None and (where.after is None or seconds >= where.after) and (
        where.before is None or seconds < where.before)
