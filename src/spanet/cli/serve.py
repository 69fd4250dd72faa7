"""Subcommands of the search service: `spanet gallery build` and `spanet serve`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from spanet.cli.common import (
    EMBEDDING_CHOICES,
    add_amp_arg,
    add_batch_size_arg,
    add_checkpoint_arg,
    add_device_arg,
    writes,
)
from spanet.errors import SpanetError

__all__ = ["register"]

_INSTALL_HINT = "the search service needs FastAPI and uvicorn: pip install 'spanet[serve]'"
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_gallery(subparsers)
    _register_serve(subparsers)


def _register_gallery(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gallery", help="make and fill a gallery folder for `spanet serve`",
        description="Gallery folders hold enrolled images, their database rows and a faiss index.",
    )
    actions = parser.add_subparsers(dest="gallery_action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="enrol image files into a gallery folder (created if missing)",
        description=(
            "Embed IMAGES (files, folders searched recursively, or quoted glob patterns) with CKPT in batches and "
            "enrol them into the gallery folder DIR (created if missing; an existing one must come from the same "
            "checkpoint). Each entry keeps its source path; the camera comes from --cameras or a Market-style "
            "name (…_c3…), the label from a Market-style person id. Images already in the gallery are skipped, "
            "so an interrupted build is finished by running it again."
        ),
    )
    writes(build.add_argument("gallery", type=Path, metavar="DIR", help="gallery folder"))
    build.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders or glob patterns")
    add_checkpoint_arg(build)
    build.add_argument("--cameras", type=Path, metavar="CSV", help="file,camera rows (matched by file name)")
    build.add_argument("--kind", default="parts", choices=EMBEDDING_CHOICES, help="embedding (default: parts)")
    add_device_arg(build)
    add_batch_size_arg(build, default=128)
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.add_argument("--store", metavar="STORE",
                       help="where rows and vectors live: sqlite (default for a new folder), milvus:FILE.db (Milvus Lite) or "
                       "milvus://HOST:PORT (a Milvus server; needs spanet[milvus]); an existing folder remembers its store")
    add_amp_arg(build)
    build.set_defaults(func=_run_gallery_build)
    from spanet.cli.retention import add_gallery_actions

    add_gallery_actions(actions)  # forget, prune
    from spanet.cli.reembed import add_reembed_action

    add_reembed_action(actions)  # reembed
    from spanet.cli.scale import register_gallery_actions

    register_gallery_actions(actions)  # export / import (Parquet)


def _register_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="person search in the browser and over HTTP, on a persistent gallery",
        description=(
            "Serve a gallery folder: a web page at / (search by example, activation maps, enrolment) and a JSON "
            "API (/docs). Binds 127.0.0.1 unless --host says otherwise; any other host needs a token "
            "(--token or SPANET_TOKEN), sent as 'Authorization: Bearer TOKEN' (the page takes ?token=TOKEN)."
        ),
    )
    writes(parser.add_argument("--gallery", type=Path, required=True, metavar="DIR",
                               help="gallery folder (created if missing)"))  # fmt: skip
    add_checkpoint_arg(parser, help="the gallery's checkpoint")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--token", help="required API token (default: $SPANET_TOKEN; required off 127.0.0.1)")
    parser.add_argument("--threshold", type=float, metavar="D",
                        help="matches farther than D are marked unknown (default: --calibration, else the calibration "
                        "beside the checkpoint, else the one `spanet ingest` stored in the gallery, else none)")
    parser.add_argument("--calibration", type=Path, metavar="FILE",
                        help="JSON with a 'threshold' calibrated for this checkpoint (fingerprints checked)")
    parser.add_argument("--kind", default="parts", choices=EMBEDDING_CHOICES, help="embedding of a new gallery")
    add_device_arg(parser)
    parser.add_argument("--max-upload-mb", type=float, default=32, metavar="MB", help="request size limit (default 32)")
    parser.add_argument("--store", metavar="STORE",
                        help="where rows and vectors live: sqlite (default for a new folder), milvus:FILE.db (Milvus Lite) or "
                        "milvus://HOST:PORT (a Milvus server; needs spanet[milvus]); an existing folder remembers its store")
    add_amp_arg(parser)
    parser.set_defaults(func=_run_serve)


def _run_gallery_build(args: argparse.Namespace) -> int:
    from spanet.data.images import collect_images
    from spanet.deploy.backend import open_gallery
    from spanet.deploy.enrol import enrol_files, read_cameras_csv
    from spanet.deploy.gallery import Gallery
    from spanet.deploy.reembed import model_mismatch
    from spanet.features import FeatureExtractor
    from spanet.outputs import guard_folder

    guard_folder(args.gallery, option="gallery", inputs=[args.checkpoint, args.cameras, *args.images])
    paths = collect_images(args.images)
    cameras = read_cameras_csv(args.cameras) if args.cameras else None
    kind = Gallery.stored_kind(args.gallery) or args.kind  # an existing gallery decides the embedding kind
    extractor = FeatureExtractor(args.checkpoint, device=args.device, batch_size=args.batch_size, kind=kind, amp=args.amp)
    if not args.quiet:
        print(extractor.precision.describe(), file=sys.stderr)
    mismatch = model_mismatch(args.gallery, extractor.info, checkpoint=str(args.checkpoint))
    if mismatch:
        raise SpanetError(mismatch)
    gallery = open_gallery(args.gallery, model_info=extractor.info, create=True, store=args.store)
    try:
        report = enrol_files(gallery, extractor, paths, cameras=cameras, batch_size=args.batch_size,
                             progress=not args.quiet and sys.stderr.isatty())  # fmt: skip
        size = len(gallery)
    finally:
        gallery.close()
    for path, reason in report.failures[:20]:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    print(f"enrolled {len(report.ids)} images into {args.gallery}/ (now {size}); "
          f"{report.already} already there, {len(report.failures)} unreadable")  # fmt: skip
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    import importlib.util

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise SpanetError(_INSTALL_HINT) from None
    if not (importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")):
        raise SpanetError(_INSTALL_HINT)  # FastAPI needs python-multipart for uploads
    token = args.token or os.environ.get("SPANET_TOKEN") or None
    if args.host not in _LOCAL_HOSTS and not token:
        raise SpanetError(f"--host {args.host} makes the service reachable from other machines: give --token TOKEN "
                          "(or set SPANET_TOKEN) so that requests without it are refused")  # fmt: skip
    if args.max_upload_mb <= 0:
        raise SpanetError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    from spanet.deploy.backend import open_gallery, parse_store
    from spanet.deploy.gallery import Gallery
    from spanet.deploy.reembed import model_mismatch
    from spanet.deploy.service import Limits, create_app
    from spanet.deploy.threshold import choose_threshold
    from spanet.features import FeatureExtractor
    from spanet.outputs import guard_folder

    guard_folder(args.gallery, option="--gallery", inputs=[args.checkpoint, args.calibration])
    parse_store(args.store)  # a mistyped --store is reported before the model loads
    kind = Gallery.stored_kind(args.gallery) or args.kind  # an existing gallery decides the embedding kind
    extractor = FeatureExtractor(args.checkpoint, device=args.device, batch_size=64, kind=kind, amp=args.amp)
    print(extractor.precision.describe(), file=sys.stderr)
    mismatch = model_mismatch(args.gallery, extractor.info, checkpoint=str(args.checkpoint))
    if mismatch:
        raise SpanetError(mismatch)
    chosen = choose_threshold(checkpoint=args.checkpoint, info=extractor.info, threshold=args.threshold,
                              calibration=args.calibration, gallery=args.gallery)  # fmt: skip
    threshold = chosen.value
    print(chosen.describe(), flush=True)
    gallery = open_gallery(args.gallery, model_info=extractor.info, create=True, store=args.store)
    limits = Limits(max_request_bytes=int(args.max_upload_mb * 1024 * 1024))
    # without a token only loopback Host names are served: a web page cannot reach the API by DNS rebinding
    hosts = None if token else sorted({*_LOCAL_HOSTS, "[::1]", args.host})
    app = create_app(gallery=gallery, extractor=extractor, threshold=threshold, token=token, limits=limits,
                     allowed_hosts=hosts)  # fmt: skip
    print(f"gallery {args.gallery}: {len(gallery)} images; open http://{args.host}:{args.port}/", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        gallery.close()
    return 0
