"""Subcommand `spanet search`: the gallery images nearest to query images, in an index folder (`spanet index build`)
or a gallery folder (`spanet ingest`, `spanet gallery build`), where cameras, a time window and tracks filter."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spanet.cli.common import add_model_args, add_overwrite_arg, report_failures
from spanet.errors import SpanetError

__all__ = ["register"]

_EPILOG = """\
examples:
  spanet search --checkpoint runs/mine/last.pt --index gallery_index/ query.jpg --threshold auto
  spanet search --checkpoint runs/mine/last.pt --gallery people/ query.jpg --camera 2 --camera 3 \\
      --after 2024-05-01T08:00:00 --before 2024-05-01T09:00:00 --group-by-track --threshold auto --json hits.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="find the gallery images nearest to query images (index or gallery folder)",
        description=(
            "Extract features of the QUERY images with CKPT and print, per query, the top-K images of the index\n"
            "(--index) or gallery folder (--gallery) with their squared Euclidean distances. The checkpoint must be\n"
            "the one the gallery was made with (checked). A gallery folder's hits show camera, time and track, and\n"
            "can be filtered as the service filters them (--camera, --after, --before, --group-by-track)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", type=Path, metavar="INDEX", help="folder from `spanet index build`")
    source.add_argument("--gallery", type=Path, metavar="DIR", help="gallery folder from `spanet ingest` or `gallery build`")
    parser.add_argument("queries", nargs="+", metavar="QUERY_IMAGES", help="query image files, folders or globs")
    parser.add_argument("--top-k", type=int, default=10, metavar="K", help="matches per query (default: 10)")
    parser.add_argument("--nprobe", type=int, metavar="P", help="ivfpq index: override the index's nprobe")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--visualize", type=Path, metavar="DIR", help="save one PNG per query with its matches")
    parser.add_argument("--threshold", metavar="T|auto",
                        help="matches farther than T (squared euclidean) are reported as unknown; auto: --calibration, "
                        "else the calibration beside the checkpoint (spanet calibrate, training with data.val_ids), "
                        "with --gallery else the threshold the gallery stores (spanet ingest), else none (said)")
    parser.add_argument("--calibration", type=Path, metavar="FILE", help="calibration file for --threshold auto")
    filters = parser.add_argument_group("filters of a --gallery search (as POST /search)")
    filters.add_argument("--camera", action="append", metavar="C", help="only hits of camera C; repeat for several")
    filters.add_argument("--after", metavar="TIME", help="only hits seen at or after TIME (ISO 8601, UTC unless zoned)")
    filters.add_argument("--before", metavar="TIME", help="only hits seen before TIME (ISO 8601)")
    filters.add_argument("--group-by-track", action="store_true",
                         help="one row per track: its crop nearest to the query")
    add_overwrite_arg(parser, what="--json file")
    parser.set_defaults(func=run_search)


def run_search(args: argparse.Namespace) -> int:
    from spanet.data.images import collect_images
    from spanet.outputs import JSON_FILE, guard_file, guard_folder, write_json

    source = args.index if args.index is not None else args.gallery
    inputs = [args.checkpoint, source, args.calibration, *args.queries]
    if args.json is not None:
        guard_file(args.json, option="--json", kind=JSON_FILE, inputs=inputs, overwrite=args.overwrite)
    if args.visualize is not None:
        guard_folder(args.visualize, option="--visualize", inputs=inputs)
    if args.top_k < 1:
        raise SpanetError(f"--top-k must be at least 1, got {args.top_k}")
    if args.index is not None:
        given = [f"--{name.replace('_', '-')}" for name in ("camera", "after", "before", "group_by_track")
                 if getattr(args, name)]  # fmt: skip
        if given:
            raise SpanetError(f"{', '.join(given)} filter(s) a gallery folder's cameras, times and tracks: use --gallery "
                              "DIR (an --index folder has none)")  # fmt: skip
        records, pictures = _search_index(args, collect_images(args.queries))
    else:
        if args.nprobe is not None:
            raise SpanetError("--nprobe is for an ivfpq --index; a gallery folder's search is exact")
        records, pictures = _search_gallery(args, collect_images(args.queries))
    if args.json:
        write_json(args.json, records)
        print(f"results written to {args.json}")
    if args.visualize:
        from spanet.viz.figures import draw_matches

        threshold = records[0].get("threshold") if records else None
        for number, (query, matches) in enumerate(pictures):
            draw_matches(query, matches, out_path=args.visualize / f"query_{number:05d}_{Path(query).stem}.png",
                         threshold=threshold)  # fmt: skip
        print(f"pictures written to {args.visualize}/")
    return 0


def _search_index(args: argparse.Namespace, queries: list[str]) -> tuple[list[dict], list[tuple[str, list]]]:
    from spanet.deploy.index import GalleryIndex, check_compatible

    gallery = GalleryIndex.load(args.index)
    if args.nprobe is not None:
        gallery.set_nprobe(args.nprobe)
    extractor = _extractor(args, kind=gallery.meta.get("model", {}).get("kind", "parts"))
    check_compatible(gallery.meta, extractor.info, index_path=args.index)
    threshold = _threshold(args, extractor.info, gallery=None)
    paths, features = _embed_queries(extractor, queries, quiet=args.quiet)
    records, pictures = [], []
    for query, matches in zip(paths, gallery.search(features, top_k=args.top_k)):
        record = search_record(query, [{"path": m.path, "distance": m.distance} for m in matches], threshold)
        print(f"{query}" + ("" if threshold is None else f"  -> {record['identity']}"))
        for rank, (match, shown) in enumerate(zip(matches, record["matches"]), start=1):
            print(f"  {rank:3d}. {match.distance:10.4f}  {match.path}" + ("" if shown["known"] else "  unknown"))
        records.append(record)
        pictures.append((query, matches))
    return records, pictures


def _search_gallery(args: argparse.Namespace, queries: list[str]) -> tuple[list[dict], list[tuple[str, list]]]:
    """The service's search path (`deploy.search.search_gallery`) over a gallery folder, printed per hit with camera,
    time and track."""
    from spanet.deploy.backend import open_gallery
    from spanet.deploy.gallery import Gallery
    from spanet.deploy.index import Match
    from spanet.deploy.search import SearchRequest, search_gallery

    where = _where(args)  # bad filters are refused before the model loads
    kind = Gallery.stored_kind(args.gallery)
    if kind is None:
        raise SpanetError(f"{args.gallery} is not a spanet gallery folder (no readable gallery.json); make one with "
                          "`spanet ingest` or `spanet gallery build`, or search an index with --index")  # fmt: skip
    extractor = _extractor(args, kind=kind)
    threshold = _threshold(args, extractor.info, gallery=args.gallery)
    gallery = open_gallery(args.gallery, model_info=extractor.info)
    try:
        paths, features = _embed_queries(extractor, queries, quiet=args.quiet)
        request = SearchRequest(top_k=args.top_k, where=where, group=args.group_by_track)
        found = search_gallery(gallery, features, [request] * len(paths))
        records, pictures = [], []
        for query, hits in zip(paths, found):
            shown = [{**h.entry.to_json(), "image": str(gallery.image_path(h.entry)), "distance": h.distance}
                     for h in hits]  # fmt: skip
            record = {**search_record(query, shown, threshold), "filters": where.to_json(), "grouped": request.group}
            print(f"{query}" + ("" if threshold is None else f"  -> {record['identity']}"))
            for rank, match in enumerate(record["matches"], start=1):
                print(f"  {rank:3d}. {match['distance']:10.4f}  camera {_text(match['camera'])}  "
                      f"{_text(match['timestamp'])}  track {_text(match['track'])}  #{match['id']}  "
                      f"{_text(match['source'])}" + ("" if match["known"] else "  unknown"))  # fmt: skip
            if not hits:
                print("  no gallery entry matches the filters")
            records.append(record)
            pictures.append((query, [Match(path=m["image"], distance=m["distance"], row=m["id"]) for m in shown]))
    finally:
        gallery.close()
    return records, pictures


def _where(args: argparse.Namespace) -> Any:
    from spanet.deploy.filters import Where, parse_time

    cameras = None
    if args.camera:
        bad = [c for c in args.camera if not c.strip().isdigit()]
        if bad:
            raise SpanetError(f"--camera {bad[0]!r}: the camera id must be a whole number >= 0 (e.g. --camera 2)")
        cameras = tuple(sorted({int(c) for c in args.camera}))
    return Where(cameras=cameras,  # after > before is refused here, in one line
                 after=parse_time(args.after, option="--after") if args.after else None,
                 before=parse_time(args.before, option="--before") if args.before else None)  # fmt: skip


def _threshold(args: argparse.Namespace, info: dict[str, Any], *, gallery: Path | None) -> float | None:
    """None, a number, or with "auto" the rule `serve` follows (`deploy.threshold`: --calibration, the file beside
    the checkpoint, then a gallery folder's stored threshold), printing its source."""
    from spanet.deploy.threshold import choose_threshold
    from spanet.evaluation.calibration import resolve_threshold

    if args.threshold != "auto":
        return resolve_threshold(args.threshold, checkpoint=args.checkpoint, info=info)
    chosen = choose_threshold(checkpoint=args.checkpoint, info=info, calibration=args.calibration, gallery=gallery)
    print(chosen.describe())
    return chosen.value


def _extractor(args: argparse.Namespace, *, kind: str) -> Any:
    from spanet.features import FeatureExtractor

    extractor = FeatureExtractor(args.checkpoint, device=args.device, batch_size=args.batch_size, amp=args.amp, kind=kind)
    if not args.quiet:
        print(extractor.precision.describe(), file=sys.stderr)
    return extractor


def _embed_queries(extractor: Any, queries: list[str], *, quiet: bool) -> tuple[list[str], Any]:
    result = extractor.extract_files(queries, progress=not quiet and sys.stderr.isatty())
    report_failures(result.failures)
    if not result.paths:
        raise SpanetError(f"none of the {len(queries)} query images could be read")
    return list(result.paths), result.features


def search_record(query: str, matches: list[dict[str, Any]], threshold: float | None) -> dict[str, Any]:
    """JSON of one search; with a threshold, matches beyond it are unknown and so is a query with no match within
    (`spanet.evaluation.verification.is_unknown`, the rule the service applies too)."""
    from spanet.evaluation.verification import is_unknown, nearest_is_unknown

    shown = [{**m, "known": not is_unknown(m["distance"], threshold)} for m in matches]
    record: dict[str, Any] = {"query": query, "matches": shown}
    if threshold is not None:
        record["threshold"] = threshold
        unknown = nearest_is_unknown([m["distance"] for m in matches], threshold)
        record["identity"] = "unknown" if unknown else (shown[0].get("path") or f"gallery #{shown[0]['id']}")
    return record


def _text(value: Any) -> str:
    return "-" if value is None else str(value)
