"""Subcommand `spanet calibrate`: the distance threshold below which two crops are called the same person."""

from __future__ import annotations

import argparse
from pathlib import Path

from spanet.cli.common import (
    EMBEDDING_CHOICES,
    add_batch_size_arg,
    add_checkpoint_arg,
    add_dataset_args,
    add_device_arg,
    add_overwrite_arg,
)

__all__ = ["register"]

_EPILOG = """\
examples:
  spanet calibrate --checkpoint runs/mine/last.pt --dataset folders --data-root calib_crops/ --target-fpr 1e-3
  spanet calibrate --checkpoint runs/mine/last.pt --dataset list --data-root calib.csv --target-fpir 0.05 \\
      --gallery-size 1000
then: spanet search --checkpoint runs/mine/last.pt --index gallery_index/ --threshold auto query.jpg
The calibration data must hold identities you neither trained on nor report on (the training dataset is refused).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `calibrate`."""
    parser = subparsers.add_parser(
        "calibrate",
        help="pick the same-person distance threshold for a target false-accept rate",
        description=(
            "Extract features of a calibration dataset's query and gallery images and choose the largest squared\n"
            "Euclidean distance threshold whose false-accept rate is at most the target: pairwise (--target-fpr,\n"
            "different-person pairs) or per search of a gallery of N images (--target-fpir with --gallery-size).\n"
            "Writes the threshold with the checkpoint's fingerprints to --out (default: calibration.json beside\n"
            "the checkpoint; best.calibration.json for a run's best.pt), which `spanet search --threshold auto`,\n"
            "`spanet serve` and `spanet ingest` read. Without a target: --target-fpr 1e-3."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_arg(parser)
    add_dataset_args(parser)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-fpr", type=float, metavar="F",
                        help="pairwise false-accept rate, e.g. 1e-4 (default 1e-3 when no target is given, as training "
                        "with validation identities uses)")
    target.add_argument("--target-fpir", type=float, metavar="F",
                        help="share of strangers matched to someone in a gallery of --gallery-size images, e.g. 0.05")
    parser.add_argument("--gallery-size", type=int, metavar="N", help="with --target-fpir: images in the searched gallery")
    parser.add_argument("--kind", choices=EMBEDDING_CHOICES, default="parts",
                        help="embedding the threshold is for (default parts; search uses the index's)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="where to write (default: CKPT folder/calibration.json)")
    add_overwrite_arg(parser, what="calibration file")
    add_device_arg(parser)
    add_batch_size_arg(parser)
    parser.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from spanet.cli.common import dataset_from_args
    from spanet.errors import SpanetError
    from spanet.evaluation.calibration import DEFAULT_TARGET_FPR, calibrate_checkpoint, default_calibration_path
    from spanet.outputs import JSON_FILE, guard_file

    if args.target_fpr is None and args.target_fpir is None:
        args.target_fpr = DEFAULT_TARGET_FPR
    for name in ("target_fpr", "target_fpir"):
        value = getattr(args, name)
        if value is not None and not 0.0 < value < 1.0:
            raise SpanetError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")
    if args.target_fpir is not None and (args.gallery_size is None or args.gallery_size < 1):
        raise SpanetError("--target-fpir needs --gallery-size N >= 1 (how many images the searched gallery holds)")
    out = guard_file(args.out if args.out is not None else default_calibration_path(args.checkpoint), option="--out",
                     kind=JSON_FILE, inputs=[args.checkpoint, args.data_root], overwrite=args.overwrite)
    dataset = dataset_from_args(args, progress=False)
    record, path = calibrate_checkpoint(
        args.checkpoint, dataset, target_fpr=args.target_fpr, target_fpir=args.target_fpir,
        gallery_size=args.gallery_size, kind=args.kind, device=args.device, batch_size=args.batch_size, out=out,
    )  # fmt: skip
    data = record["calibration_data"]
    print(f"threshold {record['threshold']:.6g} (squared euclidean) for {record['target']} on {data['images']} images "
          f"of {data['identities']} identities; achieved {data['achieved']}")  # fmt: skip
    if not data["resolved"]:
        print("warning: too little calibration data to resolve this rate (fewer than 1/target negatives); the "
              "threshold accepts no calibration negative at all — add calibration identities")
    print(f"wrote {path}")
    return 0
