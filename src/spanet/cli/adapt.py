"""`spanet adapt`: adapt a checkpoint to your own cameras from unlabelled crops or an ingested gallery (no labels)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spanet.cli.common import add_checkpoint_arg, add_device_arg, add_overwrite_arg

__all__ = ["register"]

_EPILOG = """\
SOURCE is a folder of crops with Market-style names (0001_c1s1_000151_01.jpg: the camera is read from _cN, the
identity the name starts with is ignored for training and only used for the clustering statistics) or a gallery
folder written by `spanet ingest` (crops with camera, track id and time: the crops of one track are one tracklet).
Each round embeds every crop, clusters the crops into pseudo-identities (k-reciprocal Jaccard distance + DBSCAN;
two tracks of one camera that overlap in time are never merged) and fine-tunes on them. docs/adapt.md explains it.
examples:
  spanet adapt --checkpoint runs/demo/last.pt --output runs/adapted /data/site_b/bounding_box_train
  spanet adapt --checkpoint runs/demo/last.pt --output runs/adapted galleries/site_b --rounds 4 --epochs 2
  spanet adapt --checkpoint runs/demo/last.pt --output runs/adapted galleries/site_b --resume
  spanet evaluate --checkpoint runs/adapted/last.pt --dataset synthetic --data-root /data/site_b
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `spanet adapt`."""
    parser = subparsers.add_parser(
        "adapt",
        help="adapt a checkpoint to your own cameras from unlabelled crops or an ingested gallery",
        description="Unsupervised domain adaptation: rounds of clustering the crops into pseudo-identities and "
        "fine-tuning on them. Writes an ordinary run folder: last.pt (usable by evaluate, extract, serve, gallery "
        "reembed) records the parent checkpoint's fingerprints, the SOURCEs and each round's clustering statistics; "
        "the source checkpoint is only read. Ctrl-C or SIGTERM stops at a step boundary; --resume continues.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_arg(parser, help="the checkpoint to adapt (from `spanet train`; never modified)")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="run folder to write")
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="folder of Market-style crops, or gallery folder")
    parser.add_argument("--rounds", type=int, default=3, metavar="N",
                        help="clustering + fine-tuning rounds (default 3)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=3, metavar="N", help="fine-tuning epochs per round (default 3)")
    parser.add_argument("--lr", type=float, default=0.01, metavar="LR", help="fine-tuning learning rate (default 0.01)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="training batch (default: the checkpoint's)")
    parser.add_argument("--eps", type=float, metavar="D",
                        help="DBSCAN radius on the Jaccard distance (default: chosen from the data each round, the "
                        "mean of the smallest 0.5%% of pairwise distances; Cluster Contrast uses 0.6)")  # fmt: skip
    parser.add_argument("--eps-share", type=float, default=0.005, metavar="P",
                        help="without --eps: the share of smallest pairwise distances whose mean is the radius "
                        "(default 0.005; tracklets, with few per person, need more, e.g. 0.02)")  # fmt: skip
    parser.add_argument("--k1", type=int, default=30, help="k-reciprocal neighbours (default 30)")
    parser.add_argument("--k2", type=int, default=6, help="query-expansion neighbours (default 6)")
    parser.add_argument("--min-samples", type=int, default=4, metavar="N",
                        help="DBSCAN: crops or tracklets a cluster needs around its core (default 4)")  # fmt: skip
    parser.add_argument("--camera-centre", action="store_true",
                        help="subtract each camera's mean feature before clustering (its colour cast, background)")
    parser.add_argument("--no-camera-bn", dest="camera_bn", action="store_false",
                        help="cluster on the model's plain features (by default each camera's crops are embedded "
                        "with batch-norm statistics re-estimated on that camera's crops, which takes its colour cast "
                        "and light out inside the network)")  # fmt: skip
    parser.add_argument("--init", choices=("centroids", "random"), default="centroids",
                        help="new classifiers each round: from the clusters' mean features (default) or "
                        "random")  # fmt: skip
    parser.add_argument("--memory-weight", type=float, default=0.0, metavar="W",
                        help="add a cluster-memory contrastive term (Cluster Contrast: each crop against every "
                        "cluster's momentum-updated mean feature, temperature 0.05) with weight W to the model's own "
                        "losses (default 0: none)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning (default 0)")
    add_device_arg(parser)
    parser.add_argument("--resume", action="store_true", help="continue the adaptation in --output")
    add_overwrite_arg(parser, what="--output folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a fine-tuning config value, e.g. --set data.num_workers=0 "
                        "(repeatable)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spanet.outputs import guard_folder
    from spanet.training.adapt import AdaptOptions, adapt
    from spanet.training.pseudo_labels import ClusterSettings

    guard_folder(args.output, option="--output", inputs=[args.checkpoint, *args.sources])
    options = AdaptOptions(
        rounds=args.rounds, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, init=args.init,
        camera_bn=args.camera_bn, memory_weight=args.memory_weight,
        cluster=ClusterSettings(k1=args.k1, k2=args.k2, eps=args.eps, eps_share=args.eps_share,
                                min_samples=args.min_samples,
                                camera_centre=args.camera_centre),  # fmt: skip
        device=args.device, seed=args.seed, overrides=tuple(args.overrides), progress=not args.no_progress,
    )  # fmt: skip
    summary = adapt(args.checkpoint, args.sources, output_dir=args.output, options=options, resume=args.resume,
                    overwrite=args.overwrite)  # fmt: skip
    for record in summary["rounds"]:
        purity = f"  purity {record['purity']:.2%}" if "purity" in record else ""
        print(f"round {record['round']}: {record['clusters']} clusters, {record['unclustered_share']:.1%} of "
              f"{record['crops']} crops left out (eps {record['eps']:.3f}){purity}")  # fmt: skip
    if summary["interrupted"]:
        return 130
    print(f"adapted checkpoint: {summary['last_checkpoint']}")
    return 0
