"""Subcommands for video: `synth-video` (multi-camera footage with ground truth) and `associate` (tracks across
cameras)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spanet.cli.common import add_batch_size_arg, add_checkpoint_arg, add_device_arg
from spanet.synth.domain import DOMAINS

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_synth_video(subparsers)
    _register_associate(subparsers)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x360, got {text!r}") from None
    return width, height


def _register_synth_video(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth-video",
        help="render synthetic multi-camera footage with ground truth (MOTChallenge layout)",
        description="Render the synthetic dataset's people walking through several camera views (each with its "
        "colour cast and background), some in more than one camera, passing each other. Writes OUT/camN/img1/"
        "000001.jpg, OUT/camN/gt/gt.txt (frame, GLOBAL person id, x, y, w, h, 1, -1, -1, -1) and seqinfo.ini. "
        "The same options give the same files.",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT", help="folder to write (new, empty, or an earlier output)")
    parser.add_argument("--cameras", type=int, default=3, metavar="N", help="camera views, 1-9 (default: 3)")
    parser.add_argument("--people", type=int, default=24, metavar="N", help="people (default: 24)")
    parser.add_argument("--seconds", type=float, default=20.0, metavar="S", help="length of every view (default: 20)")
    parser.add_argument("--fps", type=int, default=10, metavar="N", help="frames per second (default: 10)")
    parser.add_argument("--size", type=_size, default=(640, 360), metavar="WxH", help="frame size (default: 640x360)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    parser.add_argument(
        "--domain", choices=sorted(DOMAINS), default="a",
        help="the site's look, as in `spanet synth --domain`: a (default) or b (a domain shift from a)",
    )  # fmt: skip
    parser.set_defaults(func=_run_synth_video)


def _run_synth_video(args: argparse.Namespace) -> int:
    from spanet.outputs import guard_folder
    from spanet.synth.video import VideoOptions, generate_video

    guard_folder(args.out_dir, option="OUT")
    options = VideoOptions(
        cameras=args.cameras, people=args.people, seconds=args.seconds, fps=args.fps, width=args.size[0],
        height=args.size[1], seed=args.seed, domain=args.domain,
    )  # fmt: skip
    summary = generate_video(args.out_dir, options)
    print(
        f"wrote {options.cameras} cameras x {options.frames} frames ({summary.boxes} boxes, {summary.walks} walks) "
        f"to {summary.out_dir} in {summary.seconds:.1f} s ({summary.frames_per_second:.0f} frames/s)"
    )
    return 0


def _register_associate(subparsers: argparse._SubParsersAction) -> None:
    from spanet.tracking.associate import DEFAULT_SPREAD, MIN_TRACKS_TO_CENTRE

    parser = subparsers.add_parser(
        "associate",
        help="give tracks from several cameras global identities (re-ID across cameras)",
        description="For each camera: a MOTChallenge sequence folder and a track file (frame, id, x, y, w, h, ...) "
        "from any tracker, or gt/gt.txt. Up to K boxes per track are embedded with the checkpoint and pooled; "
        "tracks are clustered across cameras (average linkage on squared Euclidean distance, cut at the "
        "threshold; two tracks of one camera that overlap in time are never merged), after centring the features "
        "per camera (each camera's mean track feature removed). Writes OUT/<sequence>.txt "
        "per camera with global ids, OUT/index.html (one row per identity) and OUT/association.json.",
    )
    parser.add_argument("--sequences", nargs="+", required=True, type=Path, metavar="DIR", help="sequence folders")
    parser.add_argument("--tracks", nargs="+", required=True, type=Path, metavar="TXT", help="one track file each")
    add_checkpoint_arg(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="OUT", help="output folder")
    cut = parser.add_mutually_exclusive_group()
    cut.add_argument(
        "--threshold", type=float, metavar="T",
        help="largest squared distance (0-4, between unit vectors) at which clusters merge (default: derived from "
        f"the footage: the mean minus {DEFAULT_SPREAD:g} standard deviations of the distances between tracks of one "
        "camera seen at the same time, i.e. known different people; docs/video.md)",
    )  # fmt: skip
    cut.add_argument("--calibration", type=Path, metavar="FILE", help="JSON file with a 'threshold' key")
    parser.add_argument("--crops-per-track", type=int, default=8, metavar="K", help="boxes embedded per track (8)")
    parser.add_argument(
        "--no-camera-centring", dest="camera_centring", action="store_false",
        help="cluster the raw track features (by default each camera's mean track feature is removed first, where "
        f"every camera has at least {MIN_TRACKS_TO_CENTRE} tracks: it takes out the camera's colour cast and light)",
    )  # fmt: skip
    parser.add_argument(
        "--disjoint-views", action="store_true",
        help="the cameras' views do not overlap (no person is seen by two cameras at once) and the sequences are "
        "synchronised (frame N is the same moment in all): tracks of different cameras that overlap in time are "
        "then never merged either, and their distances also inform the derived threshold",
    )  # fmt: skip
    add_device_arg(parser)
    add_batch_size_arg(parser, what="crops")
    parser.set_defaults(func=_run_associate)


def _threshold(args: argparse.Namespace) -> float | None:
    from spanet.tracking.associate import read_track_threshold

    return args.threshold if args.calibration is None else read_track_threshold(args.calibration)


def _run_associate(args: argparse.Namespace) -> int:
    from spanet.deploy.reid import ReID
    from spanet.outputs import guard_folder
    from spanet.tracking.associate import DEFAULT_SPREAD, MIN_TRACKS_TO_CENTRE, associate

    guard_folder(args.out, option="--out", inputs=[args.checkpoint, args.calibration, *args.sequences, *args.tracks])
    threshold = _threshold(args)
    source = ("--threshold" if args.threshold is not None else f"--calibration {args.calibration}" if threshold is not None
              else f"derived from this footage: the mean minus {DEFAULT_SPREAD:g} standard deviations of the distances "
              "between tracks known to be different people ("
              + ("any two cameras" if args.disjoint_views else "one camera") + ", same time)")  # fmt: skip
    reid = ReID(args.checkpoint, device=args.device, batch_size=args.batch_size)
    result = associate(
        args.sequences, args.tracks, embed=reid.get_features, out_dir=args.out, threshold=threshold,
        crops_per_track=args.crops_per_track, camera_centring=args.camera_centring, disjoint_views=args.disjoint_views,
    )  # fmt: skip
    centring = "features centred per camera" if result.camera_centring else "raw features" + (
        f" (a camera has fewer than {MIN_TRACKS_TO_CENTRE} tracks to centre on)" if args.camera_centring else "")
    print(
        f"{len(result.tracks)} tracks in {len(args.sequences)} cameras -> {result.identities} identities "
        f"(threshold {result.threshold:.4g}, {source}; {centring}); "
        f"{reid.skipped_boxes} boxes had no pixels in their frame"
    )
    print(f"wrote {', '.join(str(p) for p in result.outputs)} and {result.page}")
    return 0
