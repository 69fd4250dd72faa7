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
    import torch

    from spanet.checkpoint import checkpoint_input_size, load_model
    from spanet.data.datasets import require_valid_queries
    from spanet.cli.common import dataset_from_args
    from spanet.features import ExtractionOptions
    from spanet.runtime import choose_precision, resolve_device
    from spanet.errors import SpanetError
    from spanet.evaluation.evaluate import extract_feature_set, format_table, score_features
    from spanet.evaluation.explain import domain_note
    from spanet.features import model_info
    from spanet.outputs import JSON_FILE, guard_file, guard_folder, write_json
    from spanet.run_dir import FEATURES_FILE, RANKED_DIR, check_eval_dir, default_eval_dir, write_metrics

    if args.batch_size < 1 or args.visualize < 0:
        raise SpanetError("--batch-size must be at least 1 and --visualize at least 0")
    out_dir = args.out if args.out is not None else default_eval_dir(args.checkpoint)
    inputs = [args.checkpoint, args.data_root]
    guard_folder(out_dir, option="--out", inputs=inputs)
    if args.json is not None:
        guard_file(args.json, option="--json", kind=JSON_FILE, inputs=inputs, overwrite=args.overwrite)
    check_eval_dir(out_dir, checkpoint=args.checkpoint, overwrite=args.overwrite)
    device = resolve_device(args.device)
    model, checkpoint = load_model(args.checkpoint, map_location=device)
    input_size = checkpoint_input_size(checkpoint, path=args.checkpoint)
    dataset = dataset_from_args(args, progress=args.progress)
    if dataset.skipped:
        print(f"left out {len(dataset.skipped)} corrupt image(s): {', '.join(dataset.skipped)}", file=sys.stderr)
    require_valid_queries(dataset)
    precision = choose_precision(args.amp, device)
    print(precision.describe(), file=sys.stderr)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    options = ExtractionOptions(batch_size=args.batch_size, device=device, flip=args.flip, kind=args.kind,
                                amp=precision, num_workers=args.num_workers, progress=args.progress)  # fmt: skip
    features = extract_feature_set(model, dataset, input_size=input_size, options=options)
    result = score_features(
        features, metric=args.metric, rerank=args.rerank, rerank_power=args.rerank_power,
        keep_distances=args.visualize > 0, progress=args.progress,
    )
    print(f"{args.checkpoint} on {dataset.name} ({len(features.query)} query / {len(features.gallery)} gallery images)")
    print(format_table(result))
    note = domain_note(checkpoint, dataset=dataset.name, root=dataset.root)
    if note:
        print(note)

    if args.json is not None:
        write_json(args.json, result.to_json())
    source = {"checkpoint": str(args.checkpoint), "dataset": dataset.name, "flip": args.flip, "kind": args.kind,
              "rerank_power": args.rerank_power if args.rerank else None, "amp": precision.amp,
              "cross_domain": note}  # fmt: skip
    metrics = {**result.to_metrics_file(), **_explain(args, features, dataset, out_dir)}
    metrics_path = write_metrics(out_dir, metrics, source=source)
    info = model_info(model, model_args=checkpoint["model_args"], input_size=input_size, kind=args.kind,
                      checkpoint=args.checkpoint)
    features_path = features.save(out_dir / FEATURES_FILE, info=info)
    if args.visualize > 0:
        from spanet.viz.figures import draw_ranked_lists

        drawn = draw_ranked_lists(
            result.distances, features.query, features.gallery, out_dir=out_dir / RANKED_DIR,
            top_k=args.visualize, num_queries=args.visualize_queries, seed=0,
        )  # fmt: skip
        print(f"ranked lists: {len(drawn)} images in {out_dir / RANKED_DIR}", file=sys.stderr)
    print(f"wrote {metrics_path} and {features_path}", file=sys.stderr)
    return 0


def _explain(args: argparse.Namespace, features: object, dataset: object, out_dir: Path) -> dict:
    """Per-query file, camera pairs, worst queries, verification (printed), and own data's split list."""
    from spanet.data.own import save_split_list
    from spanet.evaluation.explain import explain_evaluation, format_verification

    extra = explain_evaluation(
        features, out_dir=out_dir, metric=args.metric, verification=args.verification,
        worst=args.visualize_queries if args.visualize > 0 else 0, top_k=max(args.visualize, 1),
        embedding=args.embedding,
    )  # fmt: skip
    if "verification" in extra:
        print(format_verification(extra["verification"]))
    split = save_split_list(dataset, out_dir)
    if split is not None:
        print(f"split used: {split} (re-use it with --dataset list --data-root {split})", file=sys.stderr)
    return extra
