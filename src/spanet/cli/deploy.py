"""Subcommands for using a trained model: extract, index build, export (`search` is `cli/search.py`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spanet.cli.common import EMBEDDING_CHOICES, add_checkpoint_arg, add_model_args, add_overwrite_arg, report_failures
from spanet.errors import SpanetError

__all__ = ["register"]

def register(subparsers: argparse._SubParsersAction) -> None:
    _register_extract(subparsers)
    _register_index(subparsers)
    _register_export(subparsers)


def _register_extract(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="compute re-ID features of your own images with a trained checkpoint",
        description=(
            "Compute one feature vector per image with the checkpoint's own evaluation transform and save "
            "paths + features (+ which model made them) to an .npz. IMAGES are files, folders (searched recursively "
            "for image files) or glob patterns (quote them). Unreadable images are listed and skipped."
        ),
    )
    add_model_args(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders or glob patterns")
    parser.add_argument("--out", type=Path, required=True, metavar="FEATS.npz",
                        help="where to write the features (--engine ray: a folder of Parquet shards)")
    parser.add_argument(
        "--kind", default="parts", choices=EMBEDDING_CHOICES,
        help="which embedding (default: parts = the paper's 6 L2-normalised stripe features)",
    )
    add_overwrite_arg(parser, what="features file")
    scale = parser.add_argument_group("--engine ray (docs/scale.md; needs spanet[ray])")
    scale.add_argument("--engine", default="torch", choices=("torch", "ray"),
                       help="torch: this process (default); ray: a pool of model actors with Ray Data, Parquet shards, "
                       "resumable by shard")
    scale.add_argument("--workers", type=int, metavar="N", help="model actors (default: one per GPU, else 1)")
    scale.add_argument("--shard-size", type=int, default=10_000, metavar="N", help="images per shard (default 10000)")
    scale.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (default: a local Ray; auto: this node's)")
    parser.set_defaults(func=_run_extract)


def _register_index(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index", help="build a faiss index over extracted gallery features",
        description="Gallery indexes for `spanet search`.",
    )
    actions = parser.add_subparsers(dest="index_action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="index an .npz written by `spanet extract` or `spanet evaluate`",
        description=(
            "Build a faiss index from FEATS.npz (from `spanet extract`, or `spanet evaluate`'s features.npz, whose "
            "gallery rows are indexed) and write it as a folder (index.faiss, paths.txt, meta.json). "
            "flat = exact squared-Euclidean search, no training, 4·D bytes per image: the right choice up to about "
            "a million images. ivfpq = inverted lists + product quantisation (+ PCA for wide features and "
            "8-bit re-ranking) for larger galleries; parameters left out are chosen from the gallery size."
        ),
    )
    build.add_argument("features", type=Path, metavar="FEATS.npz", help="features from `spanet extract` or `spanet evaluate`")
    build.add_argument("--out", type=Path, required=True, metavar="INDEX", help="output folder")
    build.add_argument("--kind", default="flat", choices=("flat", "ivfpq"), help="index kind (default: flat)")
    build.add_argument("--nlist", type=int, metavar="N", help="ivfpq: inverted lists (default ≈ 4·√N)")
    build.add_argument("--m", type=int, metavar="M", help="ivfpq: PQ sub-quantisers, must divide the dimension")
    build.add_argument("--nbits", type=int, metavar="B", help="ivfpq: bits per PQ code (default 8)")
    build.add_argument("--nprobe", type=int, metavar="P", help="ivfpq: lists visited per query (default ≈ nlist/64, ≥ 8)")
    build.add_argument("--pca", type=int, metavar="D", help="ivfpq: PCA to D dims first, 0 = none (default 256 when D > 1024)")
    build.add_argument("--refine", choices=("none", "sq8", "flat"), help="ivfpq: re-rank candidates (default sq8)")
    build.add_argument("--seed", type=int, default=0, help="seed of the training sample and k-means (default 0)")
    add_overwrite_arg(build, what="index folder")
    build.set_defaults(func=_run_index_build)


def _register_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the embedding network to ONNX and check it against PyTorch",
        description=(
            "Write the embedding graph as ONNX: input 'images' (B, 3, H, W) float32, resized to the checkpoint's "
            "input size and normalised with ImageNet mean/std, dynamic batch; output 'features' (B, D), the same "
            "vector as SPANet.embed. The file is then run with onnxruntime on two batch sizes; the command fails "
            "if the largest difference to PyTorch exceeds --tolerance."
        ),
    )
    add_checkpoint_arg(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL.onnx", help="where to write the ONNX model")
    parser.add_argument("--kind", default="parts", choices=EMBEDDING_CHOICES, help="embedding (default: parts)")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: the exporter's)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |ONNX − PyTorch| (default 1e-4)")
    add_overwrite_arg(parser, what="ONNX model")
    parser.set_defaults(func=_run_export)


def _run_extract(args: argparse.Namespace) -> int:
    from spanet.data.images import collect_images
    from spanet.features import FeatureExtractor, save_features
    from spanet.outputs import FEATURES_FILE_KIND, guard_file, guard_folder

    inputs = [args.checkpoint, *args.images]
    if args.engine == "ray":
        from spanet.cli.scale import run_ray_extract

        guard_folder(args.out, option="--out", inputs=inputs)  # its shards are resumed: the folder is its business
        return run_ray_extract(args)  # also takes .txt and .parquet lists of paths
    guard_file(args.out, option="--out", kind=FEATURES_FILE_KIND, inputs=inputs, overwrite=args.overwrite)
    paths = collect_images(args.images)
    extractor = FeatureExtractor(
        args.checkpoint, device=args.device, batch_size=args.batch_size, kind=args.kind, amp=args.amp
    )
    if not args.quiet:
        print(extractor.precision.describe(), file=sys.stderr)
    result = extractor.extract_files(paths, progress=not args.quiet and sys.stderr.isatty())
    report_failures(result.failures)
    if not result.paths:
        raise SpanetError(f"none of the {len(paths)} images could be read; nothing written to {args.out}")
    save_features(args.out, features=result.features, paths=result.paths, info=extractor.info,
                  failed=[path for path, _ in result.failures])
    print(
        f"extracted {len(result.paths)} × {result.features.shape[1]}-d features ({args.kind}) "
        f"-> {args.out}" + (f"; skipped {len(result.failures)} unreadable" if result.failures else "")
    )
    return 0


def _run_index_build(args: argparse.Namespace) -> int:
    from spanet.features import load_features
    from spanet.deploy.index import GalleryIndex, choose_params
    from spanet.outputs import INDEX_FOLDER, guard_folder

    guard_folder(args.out, option="--out", inputs=[args.features], kind=INDEX_FOLDER, overwrite=args.overwrite)
    loaded = load_features(args.features)
    if "gallery" in loaded.splits:
        loaded = loaded.select("gallery")
        print(f"{args.features} holds an evaluation's query and gallery: indexing its {len(loaded.paths)} gallery rows")
    features, paths, info = loaded.features, loaded.paths, loaded.info
    params = choose_params(
        features.shape[0], features.shape[1], kind=args.kind, nlist=args.nlist, m=args.m, nbits=args.nbits,
        nprobe=args.nprobe, pca_dim=args.pca, refine=args.refine,
    )
    gallery = GalleryIndex.build(features, paths, params=params, info=info, seed=args.seed)
    gallery.save(args.out)
    print(
        f"indexed {len(gallery)} × {gallery.feature_dim}-d vectors as {gallery.meta['factory']} "
        f"in {gallery.meta['build_seconds']:.1f} s -> {args.out}/"
    )
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from spanet.deploy.export import export_checkpoint
    from spanet.outputs import ONNX_MODEL, guard_file

    guard_file(args.out, option="--out", kind=ONNX_MODEL, inputs=[args.checkpoint], overwrite=args.overwrite)
    report = export_checkpoint(args.checkpoint, args.out, kind=args.kind, opset=args.opset, tolerance=args.tolerance)
    diffs = ", ".join(f"batch {b}: {d:.2e}" for b, d in report.max_abs_diff.items())
    print(
        f"exported {report.exporter} ONNX (opset {report.opset}) -> {report.path}: input images (B, 3, "
        f"{report.input_size[0]}, {report.input_size[1]}), output features (B, {report.feature_dim})"
    )
    print(f"max |onnxruntime - pytorch|: {diffs} (tolerance {args.tolerance:g})")
    return 0
