"""The `spanet` command line. This package is the only place that reads argv.

Each submodule adds its subcommands with `register(subparsers)` and sets `func` on the parser; `main` parses,
runs the function and turns a `SpanetError` into one clear line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spanet.errors import SpanetError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from spanet.cli import data, deploy, evaluate, experiments, synth, train, viz

    parser = argparse.ArgumentParser(
        prog="spanet",
        description="Parameter-Free Spatial Attention Network (SPANet) for person re-identification.",
        epilog="Run `spanet COMMAND --help` for the options of one command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (synth, data, train, evaluate, viz, deploy, experiments):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except SpanetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
