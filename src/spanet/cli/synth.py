"""`spanet synth OUT_DIR`: render the synthetic cross-view dataset in the Market-1501 layout."""

from __future__ import annotations

import argparse

from spanet.synth.domain import DOMAINS

__all__ = ["register"]

_OVERRIDES = ("train_ids", "test_ids", "cameras", "images_per_id", "height", "width", "distractors", "junk", "crowd",
              "occlusion")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synth` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="render a synthetic cross-view re-ID dataset (Market-1501 layout)",
        description=(
            "Render procedurally drawn pedestrians seen by several cameras (different colour casts, backgrounds, "
            "blur and viewpoints, with occlusions and detector jitter) into OUT_DIR in the Market-1501 layout: "
            "bounding_box_train/, bounding_box_test/ (with distractors 0000 and junk -1) and query/, plus "
            "spanet_synth.json with the options and counts. The same options give the same bytes."
        ),
        epilog="Presets: tiny (tests, seconds), demo (~2k images, CPU demo), market (Market-1501 sized, ~34k images). "
        "Flags given explicitly override the preset's values.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (empty, new, or a previous synth output)")
    parser.add_argument(
        "--preset", choices=("tiny", "demo", "market"), default="demo", help="base sizes (default: demo)"
    )
    parser.add_argument("--train-ids", type=int, metavar="N", help="training identities")
    parser.add_argument("--test-ids", type=int, metavar="N", help="test identities (query + gallery)")
    parser.add_argument("--cameras", type=int, metavar="N", help="cameras, 2-9")
    parser.add_argument("--images-per-id", type=int, metavar="N", help="pictures per identity, ≥ 4")
    parser.add_argument("--height", type=int, metavar="H", help="image height in pixels (presets: 128)")
    parser.add_argument("--width", type=int, metavar="W", help="image width in pixels (presets: 64)")
    parser.add_argument("--distractors", type=int, metavar="N", help="gallery distractor images (id 0000)")
    parser.add_argument("--junk", type=int, metavar="N", help="gallery junk images (id -1, ignored by readers)")
    parser.add_argument("--crowd", type=float, metavar="P",
                        help="probability of a second pedestrian half inside an identity's box (default: 0)")
    parser.add_argument("--occlusion", type=float, metavar="P",
                        help="every camera's occluder probability (default: each camera's own, 0.15-0.45)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    parser.add_argument(
        "--domain", choices=sorted(DOMAINS), default="a",
        help="the site's look: a (default, spanet's usual synthetic data) or b (other clothes, body shapes, lighting "
        "and camera casts: a domain shift from a, for adaptation experiments)",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow writing into a non-empty folder that is not a previous synth output (replaces its split folders)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """Resolve preset + flags, generate, print a counts table."""
    from spanet.outputs import guard_folder
    from spanet.synth.generate import SYNTH_PRESETS, generate_dataset

    guard_folder(args.out_dir, option="OUT_DIR")
    options = dict(SYNTH_PRESETS[args.preset])
    options.update({key: getattr(args, key) for key in _OVERRIDES if getattr(args, key) is not None})
    summary = generate_dataset(
        args.out_dir, **options, seed=args.seed, domain=args.domain, progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(f"{'split':<8} {'images':>7} {'ids':>6} {'cameras':>8}")
    for split, counts in summary.statistics.items():
        print(f"{split:<8} {counts['images']:>7} {counts['ids']:>6} {counts['cameras']:>8}")
    print(
        f"gallery holds {summary.distractor_images} distractor images (id 0000, counted above) and "
        f"{summary.junk_images} junk images (id -1, not counted)"
    )
    print(
        f"wrote {summary.total_images} images to {summary.out_dir} in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.0f} images/s)"
    )
    return 0
