"""`spanet gallery reembed DIR --checkpoint NEW`: the gallery follows its model (every vector re-computed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spanet.cli.common import add_amp_arg, add_batch_size_arg, add_checkpoint_arg, add_device_arg

__all__ = ["add_reembed_action"]


def add_reembed_action(actions: argparse._SubParsersAction) -> None:
    """Add `reembed` under `spanet gallery`."""
    parser = actions.add_parser(
        "reembed",
        help="re-compute every vector of a gallery with another checkpoint (e.g. after `spanet adapt`)",
        description=(
            "Embed every entry's stored image copy with CKPT (the gallery's embedding kind) and switch the gallery "
            "to that model in one step: until every new vector is ready the gallery keeps its old ones, so a "
            "running `spanet serve` goes on searching them; it only has to be stopped for the switch itself "
            "(seconds; the command says so and is run again). Interrupted (Ctrl-C, kill), the same command resumes "
            "where it stopped. Entries, ids, labels, cameras, tracks and times are kept. SQLite galleries only."
        ),
    )
    parser.add_argument("gallery", type=Path, metavar="DIR", help="gallery folder")
    add_checkpoint_arg(parser, help="the new model's checkpoint")
    add_device_arg(parser)
    add_batch_size_arg(parser, default=128)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_amp_arg(parser)
    parser.set_defaults(func=_run_reembed)


def _run_reembed(args: argparse.Namespace) -> int:
    from spanet.deploy.gallery import Gallery
    from spanet.deploy.reembed import reembed_gallery
    from spanet.errors import SpanetError
    from spanet.features import FeatureExtractor

    kind = Gallery.stored_kind(args.gallery)
    if kind is None:
        raise SpanetError(f"{args.gallery} is not a spanet gallery (no readable gallery.json); make one with "
                          "`spanet gallery build`")  # fmt: skip
    extractor = FeatureExtractor(args.checkpoint, device=args.device, batch_size=args.batch_size, kind=kind, amp=args.amp)
    if not args.quiet:
        print(extractor.precision.describe(), file=sys.stderr)
    report = reembed_gallery(args.gallery, extractor, progress=not args.quiet and sys.stderr.isatty())
    if not report.switched:
        print(f"gallery {args.gallery} already holds vectors of {args.checkpoint} (weights {report.new_fingerprint}): "
              f"nothing to do ({report.entries} entries)")  # fmt: skip
        return 0
    print(f"re-embedded {report.entries} entries of {args.gallery}/ with {args.checkpoint} in {report.seconds:.1f} s "
          f"({report.computed} computed now, {report.reused} staged by an earlier run); model weights "
          f"{report.old_fingerprint} -> {report.new_fingerprint}")  # fmt: skip
    return 0
