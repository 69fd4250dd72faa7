"""`spanet gallery forget` and `spanet gallery prune`: erasure and retention on a gallery folder (no model needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spanet.errors import SpanetError

__all__ = ["add_gallery_actions", "open_without_model"]


def add_gallery_actions(actions: argparse._SubParsersAction) -> None:
    """Add `forget` and `prune` under `spanet gallery`."""
    forget = actions.add_parser(
        "forget",
        help="delete entries (by id, label, track, camera and/or time) leaving no trace in the folder",
        description=(
            "Delete every entry matching ALL the conditions given: rows, vectors and image files; the database is "
            "vacuumed and index.faiss rewritten, so the deleted images and vectors are in no file of the folder. "
            "Appends what was deleted (never the images) to DIR/audit.jsonl. Stop `spanet serve` first, or use "
            "its POST /gallery/forget."
        ),
    )
    forget.add_argument("gallery", type=Path, metavar="DIR", help="gallery folder")
    forget.add_argument("--id", type=int, action="append", dest="ids", metavar="N", help="entry id (repeatable)")
    forget.add_argument("--label", metavar="L", help="entries with this label")
    forget.add_argument("--track", type=int, metavar="T", help="entries of this track (`spanet ingest`)")
    forget.add_argument("--camera", type=int, action="append", dest="cameras", metavar="C", help="camera (repeatable)")
    forget.add_argument("--before", metavar="TIME", help="entries taken before TIME (ISO 8601, UTC unless zoned)")
    forget.add_argument("--after", metavar="TIME", help="entries taken at or after TIME")
    forget.set_defaults(func=_run_forget)
    prune = actions.add_parser(
        "prune",
        help="delete entries older than an age (retention), leaving no trace",
        description="Forget every entry whose time is older than AGE (entries without a time are kept).",
    )
    prune.add_argument("gallery", type=Path, metavar="DIR", help="gallery folder")
    prune.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 2w (s, m, h, d, w)")
    prune.set_defaults(func=_run_prune)


def open_without_model(directory: Path) -> object:
    """Open a gallery (on the store its folder records) with the model description it stores: deleting needs no
    checkpoint."""
    from spanet.deploy.backend import open_gallery

    meta_path = directory / "gallery.json"
    try:
        model = json.loads(meta_path.read_text(encoding="utf-8"))["model"]
    except FileNotFoundError:
        raise SpanetError(f"{directory} is not a spanet gallery (no gallery.json)") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise SpanetError(f"{meta_path} cannot be read as a gallery description") from None
    return open_gallery(directory, model_info=model)


def _run_forget(args: argparse.Namespace) -> int:
    from spanet.deploy.filters import Where, parse_time
    from spanet.deploy.retention import describe, forget

    where = Where(
        ids=tuple(args.ids) if args.ids else None, cameras=tuple(args.cameras) if args.cameras else None,
        label=args.label, track=args.track,
        after=parse_time(args.after, option="--after") if args.after else None,
        before=parse_time(args.before, option="--before") if args.before else None,
    )  # fmt: skip
    if where.empty:
        raise SpanetError("gallery forget needs a condition: --id, --label, --track, --camera and/or --before/--after")
    gallery = open_without_model(args.gallery)
    try:
        report = forget(gallery, where)
        left = len(gallery)
    finally:
        gallery.close()  # a closed gallery cannot count (Milvus): `left` is read before
    print(f"{describe(report)}; {left} entries left in {args.gallery}/")
    return 0


def _run_prune(args: argparse.Namespace) -> int:
    from spanet.deploy.filters import parse_age
    from spanet.deploy.retention import describe, prune_before

    age = parse_age(args.older_than)
    gallery = open_without_model(args.gallery)
    try:
        report = prune_before(gallery, older_than=age)
        left = len(gallery)
    finally:
        gallery.close()  # a closed gallery cannot count (Milvus): `left` is read before
    print(f"{describe(report)}; {left} entries left in {args.gallery}/")
    return 0
