"""Unlabelled crops of the operator's own cameras, what `spanet adapt` learns from: a folder of Market-style crops or
a gallery folder written by `spanet ingest`, read into `UnlabelledCrop`s (camera, track, time; no identity).

- A folder of crops named like Market-1501 (`0001_c1s1_000151_01.jpg`): the camera comes from `_cN`; the identity
  the name starts with is NOT a label for adaptation. It is kept as `truth`, which only the clustering statistics
  (purity, pairwise precision / recall) read, so a benchmark can say how good the pseudo-labels were.
- A gallery folder (`gallery.json` in it): every row's stored image copy with its camera, track id and time; the
  crops of one track in one camera are one tracklet (`UnlabelledCrop.tracklet`), which clustering never splits.
- MOT track files with frames are not read: their rows carry no wall-clock time to keep tracklets of one camera apart
  by, and `spanet ingest` already turns footage into a gallery folder, which is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spanet.data.images import collect_images
from spanet.data.names import camera_from_name, person_id_from_name
from spanet.data.samples import first_items
from spanet.errors import SpanetError

__all__ = ["UnlabelledCrop", "read_unlabelled", "describe_sources"]

GALLERY_META = "gallery.json"  # what marks a gallery folder (`spanet.deploy.folder.META_FILE`)


@dataclass(frozen=True)
class UnlabelledCrop:
    """One crop: its image, camera (1-based), the tracklet it belongs to and that tracklet's time span.

    `tracklet` is a key shared by the crops of one track in one camera (None: the crop stands alone); `start` and
    `end` are seconds (None: unknown). `truth` is the identity in a Market-style name, for statistics only."""

    path: str
    camera: int
    tracklet: str | None = None
    start: float | None = None
    end: float | None = None
    truth: int | None = None


def read_unlabelled(sources: Sequence[str | os.PathLike[str]]) -> list[UnlabelledCrop]:
    """Every crop of every SOURCE, in the order given; a mistake raises `SpanetError` naming the source."""
    if not sources:
        raise SpanetError("no SOURCE given; pass a folder of crops with Market-style names or a gallery folder")
    crops: list[UnlabelledCrop] = []
    for index, source in enumerate(sources):
        path = Path(source).expanduser()
        if not path.exists():
            raise SpanetError(f"SOURCE {source} does not exist; pass a folder of crops or a gallery folder")
        if (path / GALLERY_META).is_file():
            crops += _gallery_crops(path, prefix=f"{index}:")
        else:
            crops += _named_crops(path)
    return crops


def describe_sources(sources: Sequence[str | os.PathLike[str]]) -> list[dict[str, str]]:
    """What a checkpoint records about the data it adapted on: each source's absolute path and kind."""
    return [
        {"path": str(Path(s).expanduser().resolve()),
         "kind": "gallery" if (Path(s).expanduser() / GALLERY_META).is_file() else "crops"}
        for s in sources
    ]  # fmt: skip


def _named_crops(path: Path) -> list[UnlabelledCrop]:
    images = collect_images([path])
    missing = [p.name for p in images if camera_from_name(p) is None]
    if missing:
        raise SpanetError(
            f"{path}: {len(missing)} crop name(s) carry no camera (`_cN`, e.g. 0001_c1s1_000151_01.jpg): "
            f"{first_items(missing)}; adaptation needs each crop's camera"
        )
    crops = []
    for image in images:
        pid = person_id_from_name(image)
        crops.append(UnlabelledCrop(path=str(image), camera=int(camera_from_name(image)),  # type: ignore[arg-type]
                                    truth=pid if pid is not None and pid > 0 else None))  # fmt: skip
    return crops


def _gallery_crops(path: Path, *, prefix: str) -> list[UnlabelledCrop]:
    """Rows of a gallery folder, opened with the model description it stores (no checkpoint needed)."""
    from spanet.deploy.backend import open_gallery
    from spanet.deploy.filters import to_seconds
    from spanet.deploy.folder import read_meta

    model = (read_meta(path) or {}).get("model")
    if not isinstance(model, dict):
        raise SpanetError(f"{path / GALLERY_META} cannot be read as a gallery description")
    gallery = open_gallery(path, model_info=model)
    try:
        entries, _total = gallery.query(camera=None, label=None, limit=10**9, offset=0)
        rows = [(entry, to_seconds(entry.timestamp), str(gallery.image_path(entry))) for entry in entries]
    finally:
        gallery.close()
    no_camera = [str(entry.id) for entry, _, _ in rows if entry.camera is None]
    if no_camera:
        raise SpanetError(f"{path}: gallery rows without a camera ({first_items(no_camera)}); adaptation needs cameras")
    spans: dict[str, list[float]] = {}
    for entry, seconds, _ in rows:
        if entry.track is not None and seconds is not None:
            key = f"{prefix}{entry.camera}:{entry.track}"
            spans.setdefault(key, []).append(seconds)
    crops = []
    for entry, seconds, image in rows:
        key = f"{prefix}{entry.camera}:{entry.track}" if entry.track is not None else None
        times = spans.get(key or "", [seconds] if seconds is not None else [])
        start, end = (min(times), max(times)) if times else (None, None)
        crops.append(UnlabelledCrop(path=image, camera=int(entry.camera), tracklet=key,  # type: ignore[arg-type]
                                    start=start, end=end))  # fmt: skip
    return crops
