"""Subcommand `spanet ingest`: camera footage into a gallery folder (detect, track, best crops, embed, enrol)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from spanet.errors import SpanetError

__all__ = ["register"]

_EPILOG = """\
examples:
  spanet ingest --gallery people/ --checkpoint runs/mine/last.pt --camera 1 lobby.mp4 --camera 2 door.mkv \\
      --start-time 2024-05-01T08:00:00+02:00
  spanet ingest --gallery people/ --checkpoint runs/mine/last.pt --camera 1 footage/cam1 --detections 1 dets.txt
then: spanet serve --gallery people/ --checkpoint runs/mine/last.pt
      spanet search --gallery people/ --checkpoint runs/mine/last.pt --camera 2 --after 2024-05-01T08:00 query.jpg
The same-person threshold (--threshold, --calibration, else calibration.json beside the checkpoint) is printed and
stored with the gallery, so `serve` and `search --gallery` use it when given none; ingest itself enrols every track.
Run the same command again after an interruption: segments already enrolled are skipped.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="enrol people from camera footage (video files or frame folders) into a gallery",
        description=(
            "Decode each camera's footage (a video file OpenCV reads: mp4, avi, mkv, ...; or a folder of frames,\n"
            "e.g. a MOTChallenge sequence), detect people, track them within the camera, keep the best K crops of\n"
            "each track and enrol them into the gallery folder DIR with the camera, a wall-clock timestamp (start\n"
            "time + frame / fps) and a track id. Footage is processed in segments, each enrolled in one transaction:\n"
            "a re-run skips what is already in, Ctrl-C loses at most the segment in progress."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gallery", type=Path, required=True, metavar="DIR", help="gallery folder (created if missing)")
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="CKPT", help="a .pt file from `spanet train`")
    parser.add_argument("--camera", nargs=2, action="append", required=True, metavar=("ID", "FOOTAGE"),
                        help="a camera number and its video file or frames folder; repeat for more cameras")
    parser.add_argument("--start-time", action="append", metavar="ISO",
                        help="wall-clock time of the first frame (ISO 8601, UTC unless it has a zone): once for all "
                        "cameras or once per --camera in order (default: the footage file's modification time)")
    parser.add_argument("--detector", choices=("hog", "onnx"), default="hog",
                        help="hog: OpenCV's built-in people detector, no weights (default); onnx: --detector-model")
    parser.add_argument("--detector-model", type=Path, metavar="MODEL.onnx", help="a YOLO-style ONNX detector")
    parser.add_argument("--detections", nargs=2, action="append", metavar=("ID", "TXT"),
                        help="precomputed detections of camera ID (MOTChallenge lines), instead of the detector")
    parser.add_argument("--confidence", type=float, default=0.25, metavar="C", help="onnx: smallest score kept (0.25)")
    parser.add_argument("--hog-min-height", type=int, default=128, metavar="PX",
                        help="hog: smallest person height to find; below 128 frames are upscaled (slower)")
    parser.add_argument("--tracker", choices=("iou", "botsort"), default="iou",
                        help="iou: spanet's small box-overlap tracker (default); botsort: boxmot's BoT-SORT with this "
                        "checkpoint as its appearance model (pip install boxmot)")
    parser.add_argument("--crops-per-track", type=int, default=4, metavar="K", help="crops enrolled per track (4)")
    parser.add_argument("--segment-seconds", type=float, default=60.0, metavar="S", help="footage per transaction (60)")
    parser.add_argument("--fps", type=float, metavar="N", help="frame rate, overriding what the footage says")
    parser.add_argument("--store", metavar="STORE",
                        help="where rows and vectors of a new gallery live: sqlite (default), milvus:FILE.db (Milvus "
                        "Lite) or milvus://HOST:PORT; an existing gallery folder keeps its own")
    parser.add_argument("--kind", default="parts", choices=("parts", "reduced", "global"), help="embedding of a new gallery")
    parser.add_argument("--threshold", type=float, metavar="D",
                        help="same-person distance stored with the gallery for its searches (default: --calibration, "
                        "else the calibration beside the checkpoint, else the gallery's own, else none)")
    parser.add_argument("--calibration", type=Path, metavar="FILE",
                        help="calibration file (spanet calibrate) whose threshold to store (fingerprints checked)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="crops per forward pass (default: 64)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_ingest)


def _camera_id(text: str, *, option: str) -> int:
    if not text.strip().isdigit():
        raise SpanetError(f"{option} {text!r}: the camera id must be a whole number >= 0 (e.g. {option} 1 lobby.mp4)")
    return int(text)


def _start_times(args: argparse.Namespace) -> list[dt.datetime | None]:
    from spanet.deploy.filters import parse_time

    given = args.start_time or []
    if len(given) not in (0, 1, len(args.camera)):
        raise SpanetError(f"give --start-time once (all cameras) or once per --camera ({len(args.camera)}), "
                          f"not {len(given)} times")  # fmt: skip
    stamps = [dt.datetime.fromtimestamp(parse_time(t, option="--start-time"), tz=dt.timezone.utc) for t in given]
    return stamps * len(args.camera) if len(stamps) == 1 else (stamps or [None] * len(args.camera))


def footage_from_args(args: argparse.Namespace) -> list:
    from spanet.deploy.ingest import CameraFootage

    footage, seen = [], set()
    for (camera_text, path_text), start in zip(args.camera, _start_times(args)):
        camera, path = _camera_id(camera_text, option="--camera"), Path(path_text)
        if camera in seen:
            raise SpanetError(f"--camera {camera} is given twice; ingest one footage per camera per command")
        seen.add(camera)
        if start is None and path.exists():
            start = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.timezone.utc)
            print(f"camera {camera}: no --start-time, using {path}'s modification time {start.isoformat()}")
        footage.append(CameraFootage(camera=camera, path=path, start_time=start or dt.datetime.fromtimestamp(0, dt.timezone.utc)))
    return footage


def _detector_factory(args: argparse.Namespace, footage: list) -> object:
    from spanet.tracking.detect import HOGDetector, MOTDetections, ONNXDetector

    cameras = {item.camera for item in footage}
    files = {}
    for camera_text, path in args.detections or []:
        camera = _camera_id(camera_text, option="--detections")
        if camera not in cameras:
            raise SpanetError(f"--detections {camera} {path}: there is no --camera {camera}")
        files[camera] = MOTDetections(path)
    if args.detector == "onnx" and args.detector_model is None:
        raise SpanetError("--detector onnx needs --detector-model MODEL.onnx")
    shared = None
    if len(files) < len(cameras):
        shared = (ONNXDetector(args.detector_model, confidence=args.confidence) if args.detector == "onnx"
                  else HOGDetector(min_height=args.hog_min_height))  # fmt: skip
    return lambda item: files.get(item.camera) or shared


def _tracker_factory(args: argparse.Namespace) -> object:
    """A new tracker per segment, given the footage's frame rate."""
    from spanet.deploy.ingest import iou_tracker

    if args.tracker == "iou":
        return iou_tracker
    from spanet.deploy.reid import ReID
    from spanet.tracking.botsort import BotSortTracker

    BotSortTracker.require()  # boxmot missing: one line now, not after the model is loaded
    reid = ReID(args.checkpoint, device=args.device, batch_size=args.batch_size)
    return lambda fps: BotSortTracker(reid, fps=fps)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops like Ctrl-C: the segment in progress is dropped, the gallery is closed properly."""

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_ingest(args: argparse.Namespace) -> int:
    from spanet.deploy.backend import open_gallery, parse_store
    from spanet.deploy.gallery import Gallery
    from spanet.deploy.ingest import IngestOptions, ingest
    from spanet.deploy.threshold import choose_threshold, store_threshold
    from spanet.features import FeatureExtractor

    try:
        import cv2  # noqa: F401
    except ImportError:
        raise SpanetError("spanet ingest decodes footage with OpenCV: pip install 'spanet[video]'") from None
    from spanet.tracking.video import open_footage

    parse_store(args.store)  # a bad --store is refused before any footage is read
    footage = footage_from_args(args)
    for item in footage:  # bad footage (and below a bad threshold) is refused before a gallery folder is made
        open_footage(item.path, fps=args.fps)
    detector = _detector_factory(args, footage)
    tracker = _tracker_factory(args)
    options = IngestOptions(crops_per_track=args.crops_per_track, segment_seconds=args.segment_seconds, fps=args.fps,
                            batch_size=args.batch_size, progress=not args.quiet and sys.stderr.isatty())  # fmt: skip
    kind = Gallery.stored_kind(args.gallery) or args.kind
    extractor = FeatureExtractor(args.checkpoint, device=args.device, batch_size=args.batch_size, kind=kind)
    chosen = choose_threshold(checkpoint=args.checkpoint, info=extractor.info, threshold=args.threshold,
                              calibration=args.calibration, gallery=args.gallery)  # fmt: skip
    gallery = open_gallery(args.gallery, model_info=extractor.info, create=True, store=args.store)
    try:
        store_threshold(args.gallery, chosen, info=extractor.info)
        print(chosen.describe() + ("" if chosen.value is None or chosen.from_gallery else
                                   f"; stored in {args.gallery}/gallery.json for searches of this gallery"))  # fmt: skip
        with _sigterm_as_interrupt():
            report = ingest(gallery, extractor, footage, detector=detector, tracker=tracker, options=options)
        size = len(gallery)
    finally:
        gallery.close()
    for line in report.truncated:
        print(f"warning: {line} (truncated video?)", file=sys.stderr)
    split = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report.seconds.items())
    print(f"ingested {report.frames} frames of {len(footage)} camera(s) at {report.frames_per_second:.1f} frames/s "
          f"({split}): {report.tracks} tracks, {report.entries} crops enrolled into {args.gallery}/ "
          f"(now {size}); {report.skipped_segments} segment(s) already there were skipped")  # fmt: skip
    return 0
