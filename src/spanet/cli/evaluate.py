"""Subcommand `spanet evaluate`: CMC / mAP / mINP of a checkpoint, plain and k-reciprocal re-ranked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spanet.cli.common import (
    EMBEDDING_CHOICES,
    add_amp_arg,
    add_batch_size_arg,
    add_checkpoint_arg,
    add_dataset_args,
    add_device_arg,
    add_skip_corrupt_arg,
    dataset_from_args,
)

__all__ = ["register", "run_evaluate"]

_EPILOG = """\
examples:
  spanet evaluate --checkpoint runs/market/last.pt --dataset market1501 --data-root data/ --rerank --flip
  spanet evaluate --checkpoint runs/demo/last.pt --dataset synthetic --data-root data/demo --json metrics.json \\
      --visualize 10
output (in --out, default: eval/ beside the checkpoint): metrics.json (the --json content plus CMC curves, query
counts, protocol, camera-pair matrix and with --verification the "verification" section), per_query.csv (AP and
first/hardest true-match rank per query), features.npz (query and gallery features with pids, camids, paths, split;
`spanet index build` takes it), analysis/*.png, split.csv for folders/list data, and with --visualize ranked/*.png
(seeded random queries) and worst/*.png (the lowest-AP queries).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `evaluate`."""
    parser = subparsers.add_parser(
        "evaluate",
        help="rank-1/5/10, mAP and mINP of a checkpoint on a dataset's query/gallery split",
        description=(
            "Extract query and gallery features with a trained model, rank the gallery for every query\n"
            "(Market-1501 single-query protocol: same id and same camera removed, queries without a true match\n"
            "skipped) and report rank-1/5/10, mAP and mINP; with --rerank also after k-reciprocal re-ranking\n"
            "(Zhong et al. 2017, k1=20, k2=6, lambda=0.3)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_arg(parser)
    add_dataset_args(parser)
    add_skip_corrupt_arg(parser)
    parser.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranked metrics")
    parser.add_argument("--rerank-power", type=int, choices=(1, 2), default=2,
                        help="re-ranking squares the distances first (2, the reference and torchreid; default) or "
                        "uses them as given (1, the official SPANet code's feature re-ranking)")
    parser.add_argument("--flip", action="store_true", help="average each feature with its mirror image's")
    parser.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean",
                        help="squared euclidean (default, as the paper's code) or cosine distance")
    parser.add_argument("--kind", choices=EMBEDDING_CHOICES, default="parts",
                        help="which embedding to use: the 6 stripe features (default, as the paper), the reduced "
                        "256-d stripe features, or their mean")
    add_batch_size_arg(parser)
    parser.add_argument("--num-workers", type=int, default=0, metavar="N", help="image-loading processes (default 0)")
    add_device_arg(parser)
    add_amp_arg(parser)
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help='write {"plain": {"rank1", "rank5", "rank10", "mAP", "mINP"}, "reranked": {...}} '
                        "(fractions in [0, 1]) to FILE")
    parser.add_argument("--out", type=Path, metavar="DIR", help="folder for metrics.json, features.npz, ranked/ "
                        "(default: eval/ beside the checkpoint)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an evaluation of another checkpoint in the output folder, and an existing "
                        "--json file (moved aside to FILE.replaced-TIME); refused otherwise")
    parser.add_argument("--visualize", type=int, default=0, metavar="K",
                        help="draw the top-K gallery images for a few queries into OUT/ranked/")
    parser.add_argument("--visualize-queries", type=int, default=8, metavar="N",
                        help="how many (seeded random) queries to draw with --visualize (default 8)")
    parser.add_argument("--verification", action="store_true",
                        help='also report "same person?" metrics: TPR at FPR 1e-4/1e-3/1e-2 with thresholds, ROC AUC, '
                        "distance histograms, and open-set DIR at FPIR with held-out identities")
    parser.add_argument("--embedding", action="store_true",
                        help="draw a t-SNE scatter of 20 seeded gallery identities into OUT/analysis/ (needs "
                        "scikit-learn: pip install 'spanet[analysis]')")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from spanet.errors import SpanetError
    from spanet.evaluation.diagnostics import format_verification
    from spanet.evaluation.evaluate import EvaluationOutputs, evaluate_checkpoint, format_table
    from spanet.features import ExtractionOptions
    from spanet.outputs import JSON_FILE, guard_file, guard_folder, write_json
    from spanet.run_dir import RANKED_DIR, check_eval_dir, default_eval_dir
    from spanet.runtime import choose_precision, resolve_device

    if args.batch_size < 1 or args.visualize < 0:
        raise SpanetError("--batch-size must be at least 1 and --visualize at least 0")
    out_dir = args.out if args.out is not None else default_eval_dir(args.checkpoint)
    inputs = [args.checkpoint, args.data_root]
    guard_folder(out_dir, option="--out", inputs=inputs)
    if args.json is not None:
        guard_file(args.json, option="--json", kind=JSON_FILE, inputs=inputs, overwrite=args.overwrite)
    check_eval_dir(out_dir, checkpoint=args.checkpoint, overwrite=args.overwrite)
    device = resolve_device(args.device)
    precision = choose_precision(args.amp, device)
    dataset = dataset_from_args(args, progress=args.progress)
    if dataset.skipped:
        print(f"left out {len(dataset.skipped)} corrupt image(s): {', '.join(dataset.skipped)}", file=sys.stderr)
    options = ExtractionOptions(batch_size=args.batch_size, device=device, flip=args.flip, kind=args.kind,
                                amp=precision, num_workers=args.num_workers, progress=args.progress)  # fmt: skip
    outputs = EvaluationOutputs(verification=args.verification, visualize=args.visualize,
                                visualize_queries=args.visualize_queries, embedding=args.embedding)  # fmt: skip
    done = evaluate_checkpoint(args.checkpoint, dataset, out_dir=out_dir, options=options, metric=args.metric,
                               rerank=args.rerank, rerank_power=args.rerank_power, outputs=outputs)  # fmt: skip
    features = done.features
    print(f"features in {precision.describe()}", file=sys.stderr)
    print(f"{args.checkpoint} on {dataset.name} ({len(features.query)} query / {len(features.gallery)} gallery images)")
    print(format_table(done.result))
    if done.domain_note:
        print(done.domain_note)
    if "verification" in done.metrics:
        print(format_verification(done.metrics["verification"]))
    if args.json is not None:
        write_json(args.json, done.result.to_json())
    if done.split_path is not None:
        print(f"split used: {done.split_path} (re-use it with --dataset list --data-root {done.split_path})",
              file=sys.stderr)  # fmt: skip
    if done.ranked:
        print(f"ranked lists: {len(done.ranked)} images in {out_dir / RANKED_DIR}", file=sys.stderr)
    print(f"wrote {done.metrics_path} and {done.features_path}", file=sys.stderr)
    return 0
