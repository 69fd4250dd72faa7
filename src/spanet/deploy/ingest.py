"""Camera footage into a gallery: decode, detect, track within the camera, keep the best crops, embed, enrol.

Footage is handled in segments of `segment_seconds`. Each segment is tracked on its own (a track crossing a segment
boundary becomes two tracks) and enrolled as ONE gallery transaction that also records the segment's key (camera,
footage fingerprint, frame range, detector). So:
- a re-run skips every segment already recorded: nothing is enrolled twice, and an interrupted run is finished by
  running the same command again;
- Ctrl-C or SIGTERM can only lose the segment in progress, never leave half of one in the gallery;
- a segment whose people were later forgotten stays recorded, so re-running the ingest does not bring them back.

Any `GalleryBackend` works: SQLite records the segment in the rows' transaction; Milvus has no multi-row
transaction, so it records the segment as pending with the reserved ids in `store.json` before the insert and as
done after it, and on the next open keeps a pending segment whose rows all arrived or deletes its partial rows.

Each enrolled crop has the camera, a wall-clock timestamp (start time + frame / fps, ISO 8601), a track id unique
in the gallery (numbered after the largest one in it) and `source` = footage file name and frame.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from spanet.deploy.backend import GalleryBackend
from spanet.deploy.entry import NewEntry
from spanet.errors import SpanetError
from spanet.tracking.crops import CropPick, CropSelector
from spanet.tracking.detect import Detector
from spanet.tracking.iou_tracker import IoUTracker
from spanet.tracking.video import FrameSource, open_footage

__all__ = ["CameraFootage", "IngestOptions", "IngestReport", "Tracker", "ingest", "iou_tracker", "segment_key"]

Embed = Callable[[list[Image.Image]], np.ndarray]


class Tracker(Protocol):
    """Within-camera tracking: one frame's detections (N, 5: x0, y0, x1, y1, score) on BGR `image`, number
    `frame`, in; (M, 6) rows x0, y0, x1, y1, track id, score out (`IoUTracker`, `BotSortTracker`)."""

    def update(self, detections: np.ndarray, frame: int, image: np.ndarray) -> np.ndarray: ...


def iou_tracker(fps: float) -> Tracker:
    """The default tracker of a segment: `IoUTracker`, ending a track after half a second unseen."""
    return IoUTracker(max_missed=max(2, int(round(0.5 * fps))))


@dataclass(frozen=True)
class CameraFootage:
    """One `--camera ID PATH` pair: the camera's number, its footage and when the footage's first frame was taken."""

    camera: int
    path: Path
    start_time: dt.datetime


@dataclass(frozen=True)
class IngestOptions:
    crops_per_track: int = 4
    segment_seconds: float = 60.0
    min_track_boxes: int = 3  # shorter tracks are mostly false detections
    fps: float | None = None  # overrides the footage's own frame rate
    batch_size: int = 64
    jpeg_quality: int = 95
    progress: bool = False


@dataclass
class IngestReport:
    """What a run did, with where the time went (seconds of detection, tracking + crop choice, embedding)."""

    frames: int = 0
    segments: int = 0
    skipped_segments: int = 0
    tracks: int = 0
    entries: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "detect": 0.0, "track": 0.0, "embed": 0.0})
    truncated: list[str] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        total = sum(self.seconds.values())
        return self.frames / total if total > 0 else 0.0


def segment_key(camera: int, source: FrameSource, start: int, stop: int, detector: str) -> str:
    return f"cam{camera}:{source.fingerprint}:{start}-{stop}:{detector}"


def ingest(gallery: GalleryBackend, embed: Embed, footage: Sequence[CameraFootage], *,
           detector: Callable[[CameraFootage], Detector], tracker: Callable[[float], Tracker] = iou_tracker,
           options: IngestOptions = IngestOptions()) -> IngestReport:  # fmt: skip
    """Ingest every camera's footage into `gallery` (see the module docstring); `embed` turns RGB crops into the
    gallery's features, `detector(camera)` gives the detector for one camera's footage and `tracker(fps)` a new
    tracker for each segment."""
    from tqdm.auto import tqdm

    if options.crops_per_track < 1 or options.segment_seconds <= 0:
        raise SpanetError("--crops-per-track must be >= 1 and --segment-seconds > 0")
    sources = [open_footage(item.path, fps=options.fps) for item in footage]  # every file checked before any work
    report = IngestReport()
    done = gallery.segments()
    bar = tqdm(total=sum(s.length for s in sources), unit="frame", desc="ingest", disable=not options.progress)
    try:
        for item, source in zip(footage, sources):
            _ingest_camera(gallery, embed, item, source, detector(item), tracker, done=done, report=report,
                           options=options, bar=bar)  # fmt: skip
    finally:
        bar.close()
        gallery.save_index()
    return report


def _ingest_camera(gallery: GalleryBackend, embed: Embed, item: CameraFootage, source: FrameSource, detector: Detector,
                   tracker: Callable[[float], Tracker], *, done: set[str], report: IngestReport, options: IngestOptions, bar: object) -> None:  # fmt: skip
    step = max(1, int(round(options.segment_seconds * source.fps)))
    for start in range(0, source.length, step):
        stop = min(source.length, start + step)
        key = segment_key(item.camera, source, start, stop, detector.name)
        if key in done:
            report.skipped_segments += 1
            bar.update(stop - start)  # type: ignore[attr-defined]
            continue
        picks, frames = _track_segment(source, detector, tracker(source.fps), start, stop, report=report,
                                       options=options, bar=bar)  # fmt: skip
        _enrol_segment(gallery, embed, item, source, picks, key=key, report=report, options=options)
        report.frames += frames
        report.segments += 1
        if frames < stop - start:  # the video ended early: later segments have no frames either
            report.truncated.append(f"{source.path}: decoded {source.decoded} of {source.length} frames")
            break


def _track_segment(source: FrameSource, detector: Detector, tracker: Tracker, start: int, stop: int, *,
                   report: IngestReport, options: IngestOptions, bar: object) -> tuple[dict[int, list[CropPick]], int]:  # fmt: skip
    """Detect and track one segment; the chosen crops per (segment-local) track and the frames decoded."""
    selector = CropSelector(per_track=options.crops_per_track)
    frames, clock = 0, time.perf_counter()
    for index, frame in source.frames(start, stop):
        now = time.perf_counter()
        report.seconds["decode"] += now - clock
        detections = detector.detect(frame, index)
        clock = time.perf_counter()
        report.seconds["detect"] += clock - now
        selector.offer(frame, tracker.update(detections, index, frame), index)
        now = time.perf_counter()
        report.seconds["track"] += now - clock
        clock = now
        frames += 1
        bar.update(1)  # type: ignore[attr-defined]
        if frames % 25 == 0:
            bar.set_postfix_str(f"{report.frames + frames} frames, {report.entries} crops")  # type: ignore[attr-defined]
    return selector.finish(min_boxes=options.min_track_boxes), frames


def _enrol_segment(gallery: GalleryBackend, embed: Embed, item: CameraFootage, source: FrameSource,
                   picks: dict[int, list[CropPick]], *, key: str, report: IngestReport, options: IngestOptions) -> None:  # fmt: skip
    """Embed the segment's crops and enrol them with the segment key: one transaction."""
    clock = time.perf_counter()
    first_track = gallery.max_track() + 1  # this process holds the gallery's lock: nobody else numbers tracks
    entries, images = [], []
    for number, (_, chosen) in enumerate(sorted(picks.items())):
        for pick in chosen:
            data = _jpeg(pick.rgb, quality=options.jpeg_quality)
            moment = item.start_time + dt.timedelta(seconds=pick.frame / source.fps)
            entries.append(NewEntry(data=data, suffix=".jpg", camera=item.camera, timestamp=moment.isoformat(),
                                    source=f"{source.path.name}#frame={pick.frame + 1}", track=first_track + number))  # fmt: skip
            images.append(Image.open(io.BytesIO(data)).convert("RGB"))  # embed what is stored, as a search would
    features = _embed_batches(embed, images, options.batch_size, dim=int(gallery.meta["feature_dim"]))
    gallery.add(entries, features, segment=key)
    report.tracks += len(picks)
    report.entries += len(entries)
    report.seconds["embed"] += time.perf_counter() - clock


def _embed_batches(embed: Embed, images: list[Image.Image], batch_size: int, *, dim: int) -> np.ndarray:
    if not images:
        return np.zeros((0, dim), dtype=np.float32)
    parts = [np.asarray(embed(images[i : i + batch_size]), dtype=np.float32) for i in range(0, len(images), batch_size)]
    return np.concatenate(parts)


def _jpeg(rgb: np.ndarray, *, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
