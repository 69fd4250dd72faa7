"""Subcommand `spanet check-data`: read a dataset, verify its images and report what a training run would see."""

from __future__ import annotations

import argparse
import json
import warnings

from spanet.cli.common import add_dataset_args, add_skip_corrupt_arg

__all__ = ["register", "check_data", "format_statistics"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `check-data`."""
    parser = subparsers.add_parser(
        "check-data",
        help="count images / ids / cameras per split and report problems in a dataset",
        description=(
            "Read a dataset the way training and evaluation will (junk id -1 dropped, distractors id 0 kept in the "
            "gallery), decode every image, and print images / ids / cameras for train, query and gallery plus any "
            "problems: counts that differ from the published statistics (full real datasets) or from what "
            "`spanet synth` says it wrote, and corrupt files. Exit status: 0 fine, 1 problems found, 2 error."
        ),
    )
    add_dataset_args(parser)
    add_skip_corrupt_arg(parser)
    parser.add_argument(
        "--no-verify-images",
        dest="verify_images",
        action="store_false",
        help="only parse file names, do not decode every image (faster; corrupt files then go unnoticed)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"train": {"images", "ids", "cameras"}, "query": ..., "gallery": ...} as JSON '
        '(plus "problems" and "skipped_corrupt" keys only when there are any)',
    )
    parser.set_defaults(func=check_data)


def format_statistics(stats: dict[str, dict[str, int]]) -> str:
    """A small aligned table: one row per split."""
    lines = [f"{'split':<8}{'images':>9}{'ids':>7}{'cameras':>9}"]
    for split, row in stats.items():
        lines.append(f"{split:<8}{row['images']:>9}{row['ids']:>7}{row['cameras']:>9}")
    return "\n".join(lines)


def check_data(args: argparse.Namespace) -> int:
    from spanet.data.datasets import OWN_LAYOUTS, dataset_statistics, load_dataset
    from spanet.data.protocol import describe_protocol

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the problems are printed below, not twice
        ds = load_dataset(
            args.dataset,
            args.data_root,
            skip_corrupt=args.skip_corrupt,
            verify_images=args.verify_images,
            progress=not args.json,
            test_fraction=args.test_fraction,
            split_seed=args.split_seed,
        )
    stats = dataset_statistics(ds)
    if args.json:
        out: dict = dict(stats)
        if ds.name in OWN_LAYOUTS:  # benchmarks keep the exact statistics shape
            out["protocol"], out["split"] = ds.protocol, ds.split_source
        if ds.problems:
            out["problems"] = list(ds.problems)
        if ds.skipped:
            out["skipped_corrupt"] = list(ds.skipped)
        print(json.dumps(out, indent=2))
    else:
        print(f"{ds.name} at {ds.root} ({ds.num_train_ids} training classes)")
        print(format_statistics(stats))
        print(describe_protocol(ds.protocol))
        if ds.name in OWN_LAYOUTS:
            print(f"split: {ds.split_source}")
        if not (args.verify_images or args.skip_corrupt):  # --skip-corrupt decodes every image anyway
            print("images not decoded (--no-verify-images)")
        if ds.skipped:
            print(f"skipped {len(ds.skipped)} corrupt image(s):")
            print("\n".join(f"  {path}" for path in ds.skipped))
        if ds.problems:
            print(f"{len(ds.problems)} problem(s):")
            print("\n".join(f"  {problem}" for problem in ds.problems))
        else:
            print("no problems found")
    return 1 if ds.problems else 0
