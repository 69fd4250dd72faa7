"""`spanet cam` (class activation maps with and without SA, and how spread out they are) and `spanet report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spanet.cli.common import add_checkpoint_arg, add_device_arg

__all__ = ["register"]

_CAM_EPILOG = """\
examples:
  spanet cam --checkpoint runs/market/last.pt --images data/market/bounding_box_train/0002_c1s1_000451_03.jpg \\
      --out runs/market/cam                            # compared with the same weights, SA switched off
  spanet cam --checkpoint runs/sa/last.pt --compare runs/no_sa/last.pt --images 'data/market/query/*.jpg' \\
      --out runs/sa/cam --class predicted --stages stage2 global
output: one PNG per image (rows = stages; original | CAM with SA | CAM without SA), spread.json and spread.csv
(area_above_half, entropy, rows_above_half per image, stage and variant; higher = more spread out) and a summary.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `spanet cam` and `spanet report`."""
    cam = subparsers.add_parser(
        "cam",
        help="class activation maps per stage, with vs without spatial attention (paper Fig. 5/6)",
        description="Class activation maps (paper §3.3) of every supervised head: deep-supervision stages 1-3 and "
        "stage 4 (global classifier; parts = each stripe's own classifier), side by side with and without SA, "
        "plus numbers for how spread out each map is.",
        epilog=_CAM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_arg(cam)
    cam.add_argument("--images", nargs="+", required=True, metavar="IMG",
                     help="image files, folders of images or quoted glob patterns")
    cam.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the PNGs and spread.json/csv")
    cam.add_argument("--compare", type=Path, metavar="CKPT_WITHOUT_SA",
                     help="checkpoint of a model trained without SA for the right column (default: the same "
                     "weights with attention switched off)")
    cam.add_argument("--class", dest="class_mode", choices=("true", "predicted"), default="true",
                     help="explain the true class (person id from a training image's file name; falls back to the "
                     "predicted class, and says so, when unknown) or the predicted class (default: true)")
    cam.add_argument("--stages", nargs="+", metavar="STAGE",  # checked by run_cam: importing spanet.viz.cam loads torch
                     help="rows to draw, from: stage1, stage2, stage3, global, parts (default: all the model has)")
    add_device_arg(cam, default="cpu")
    cam.add_argument("--skip-corrupt", action="store_true", help="leave out (and list) images that cannot be decoded")
    cam.set_defaults(func=run_cam_command)

    report = subparsers.add_parser(
        "report",
        help="write RUN_DIR/report.html: config, metrics, CMC, training curves, ranked lists, CAMs",
        description="Build one HTML page for a run folder from whatever it holds (config.yaml, log.jsonl, "
        "eval/metrics.json, eval/ranked/*.png, cam/*.png); lists what is missing.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder (`spanet train --output`)")
    report.add_argument("--out", type=Path, metavar="FILE", help="where to write the page (default RUN_DIR/report.html)")
    report.set_defaults(func=run_report_command)


def run_cam_command(args: argparse.Namespace) -> int:
    from spanet.viz.cam import run_cam, train_labels_by_pid
    from spanet.checkpoint import checkpoint_input_size, load_model
    from spanet.data.images import collect_images
    from spanet.outputs import guard_folder
    from spanet.run_dir import SPREAD_CSV

    guard_folder(args.out, option="--out", inputs=[args.checkpoint, args.compare, *args.images])
    images = collect_images(args.images)
    if args.skip_corrupt:
        from spanet.data.images import split_readable

        images, skipped = split_readable(images)
        if skipped:
            print(f"left out {len(skipped)} corrupt image(s): {', '.join(map(str, skipped))}", file=sys.stderr)
        if not images:
            from spanet.errors import SpanetError

            raise SpanetError("none of the --images could be read; nothing to draw")
    model, ckpt = load_model(args.checkpoint, map_location=args.device)
    compare = None if args.compare is None else load_model(args.compare, map_location=args.device)[0]
    labels = None
    if args.class_mode == "true":
        labels, source = train_labels_by_pid(ckpt)
        print(f"true classes: {source}" if labels else f"true classes unavailable: {source}; using predicted classes")
    summary = run_cam(model, images, out_dir=args.out, input_size=checkpoint_input_size(ckpt, path=args.checkpoint), compare_model=compare,
                      compare_label=args.compare.name if args.compare else "", class_mode=args.class_mode,
                      labels_by_pid=labels, stages=args.stages, progress=sys.stderr.isatty())
    print(f"{len(summary.figures)} figure(s) in {args.out}; spread per image in {args.out / SPREAD_CSV}")
    if summary.class_note:
        print(summary.class_note)
    print(f"mean spread (higher = more spread out); with_sa = {summary.variants['with_sa']}, "
          f"without_sa = {summary.variants['without_sa']}")
    print(f"{'stage':<8} {'variant':<11} {'n':>4} {'area>=half':>10} {'entropy':>8} {'rows>=half':>10}")
    for row in summary.summary:
        print(f"{row['stage']:<8} {row['variant']:<11} {row['count']:>4} {row['area_above_half']:>10.3f} "
              f"{row['entropy']:>8.3f} {row['rows_above_half']:>10.3f}")
    return 0


def run_report_command(args: argparse.Namespace) -> int:
    from spanet.outputs import HTML_PAGE, guard_file
    from spanet.viz.report import build_report

    if args.out is not None:
        guard_file(args.out, option="--out", kind=HTML_PAGE, inputs=[args.run_dir], overwrite=True, regenerable=True)
    page = build_report(args.run_dir, out_path=args.out)
    print(f"wrote {page}")
    return 0
