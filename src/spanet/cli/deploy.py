"""Subcommands for using a trained model: extract, index build, search, export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spanet.cli.common import (
    EMBEDDING_CHOICES,
    add_amp_arg,
    add_batch_size_arg,
    add_checkpoint_arg,
    add_device_arg,
    add_overwrite_arg,
)
from spanet.errors import SpanetError

__all__ = ["register"]

_MAX_LISTED_FAILURES = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_extract(subparsers)
    _register_index(subparsers)
    _register_search(subparsers)
    _register_export(subparsers)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arg(parser)
    add_device_arg(parser)
    add_batch_size_arg(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_amp_arg(parser)


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
    _add_model_args(parser)
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


def _register_search(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="find the gallery images nearest to query images",
        description=(
            "Extract features of the QUERY images with CKPT and print, per query, the top-K gallery images of "
            "INDEX with their squared Euclidean distances. The checkpoint must be the one the gallery was "
            "extracted with (checked)."
        ),
    )
    _add_model_args(parser)
    parser.add_argument("--index", type=Path, required=True, metavar="INDEX", help="folder from `spanet index build`")
    parser.add_argument("queries", nargs="+", metavar="QUERY_IMAGES", help="query image files, folders or globs")
    parser.add_argument("--top-k", type=int, default=10, metavar="K", help="matches per query (default: 10)")
    parser.add_argument("--nprobe", type=int, metavar="P", help="ivfpq: override the index's nprobe")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--visualize", type=Path, metavar="DIR", help="save one PNG per query with its matches")
    parser.add_argument("--threshold", metavar="T|auto",
                        help="matches farther than T (squared euclidean) are reported as unknown; auto: the threshold "
                        "from `spanet calibrate` (--calibration, default calibration.json beside the checkpoint)")
    parser.add_argument("--calibration", type=Path, metavar="FILE", help="calibration file for --threshold auto")
    add_overwrite_arg(parser, what="--json file")
    parser.set_defaults(func=_run_search)


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
    _report_failures(result.failures)
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


def _run_search(args: argparse.Namespace) -> int:
    from spanet.data.images import collect_images
    from spanet.features import FeatureExtractor
    from spanet.deploy.index import GalleryIndex, check_compatible
    from spanet.evaluation.calibration import resolve_threshold
    from spanet.outputs import JSON_FILE, guard_file, guard_folder, write_json
    from spanet.viz.figures import draw_matches

    inputs = [args.checkpoint, args.index, args.calibration, *args.queries]
    if args.json is not None:
        guard_file(args.json, option="--json", kind=JSON_FILE, inputs=inputs, overwrite=args.overwrite)
    if args.visualize is not None:
        guard_folder(args.visualize, option="--visualize", inputs=inputs)
    if args.top_k < 1:
        raise SpanetError(f"--top-k must be at least 1, got {args.top_k}")
    gallery = GalleryIndex.load(args.index)
    if args.nprobe is not None:
        gallery.set_nprobe(args.nprobe)
    queries = collect_images(args.queries)
    extractor = FeatureExtractor(
        args.checkpoint, device=args.device, batch_size=args.batch_size, amp=args.amp,
        kind=gallery.meta.get("model", {}).get("kind", "parts"),
    )  # fmt: skip
    if not args.quiet:
        print(extractor.precision.describe(), file=sys.stderr)
    check_compatible(gallery.meta, extractor.info, index_path=args.index)
    threshold = resolve_threshold(args.threshold, checkpoint=args.checkpoint, info=extractor.info,
                                  calibration=args.calibration)  # fmt: skip
    result = extractor.extract_files(queries, progress=not args.quiet and sys.stderr.isatty())
    _report_failures(result.failures)
    if not result.paths:
        raise SpanetError(f"none of the {len(queries)} query images could be read")
    all_matches = gallery.search(result.features, top_k=args.top_k)
    records = []
    for query, matches in zip(result.paths, all_matches):
        record = _search_record(query, matches, threshold)
        print(f"{query}" + ("" if threshold is None else f"  -> {record['identity']}"))
        for rank, (match, shown) in enumerate(zip(matches, record["matches"]), start=1):
            print(f"  {rank:3d}. {match.distance:10.4f}  {match.path}" + ("" if shown["known"] else "  unknown"))
        records.append(record)
    if args.json:
        write_json(args.json, records)
        print(f"results written to {args.json}")
    if args.visualize:
        for number, (query, matches) in enumerate(zip(result.paths, all_matches)):
            draw_matches(query, matches, out_path=args.visualize / f"query_{number:05d}_{Path(query).stem}.png",
                         threshold=threshold)
        print(f"pictures written to {args.visualize}/")
    return 0


def _search_record(query: str, matches: list, threshold: float | None) -> dict:
    """JSON of one search; with a threshold, matches beyond it are unknown and so is a query with no match within
    (`spanet.evaluation.verification.is_unknown`, the rule the service applies too)."""
    from spanet.evaluation.verification import is_unknown, nearest_is_unknown

    shown = [{"path": m.path, "distance": m.distance, "known": not is_unknown(m.distance, threshold)} for m in matches]
    record: dict = {"query": query, "matches": shown}
    if threshold is not None:
        record["threshold"] = threshold
        unknown = nearest_is_unknown([m.distance for m in matches], threshold)
        record["identity"] = "unknown" if unknown else shown[0]["path"]
    return record


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


def _report_failures(failures: tuple[tuple[str, str], ...]) -> None:
    if not failures:
        return
    print(f"skipped {len(failures)} unreadable image(s):", file=sys.stderr)
    for path, reason in failures[:_MAX_LISTED_FAILURES]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(failures) > _MAX_LISTED_FAILURES:
        print(f"  … and {len(failures) - _MAX_LISTED_FAILURES} more", file=sys.stderr)
