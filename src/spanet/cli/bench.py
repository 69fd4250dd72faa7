"""Subcommand `spanet bench`: training, embedding and loader speed of a config on this machine (synthetic data)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spanet.cli.common import add_device_arg, add_overwrite_arg

__all__ = ["register", "run_bench_command"]

_EPILOG = """\
examples:
  spanet bench --config configs/market1501.yaml --device cuda     # what a new GPU machine should run first
  spanet bench --config configs/cpu_demo.yaml --no-compile --json bench.json
Everything is synthetic (random tensors and JPEGs in a temporary folder); nothing is downloaded. With compilation
(the default) allow ~1-2 minutes per precision on a CPU for torch.compile.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench`."""
    parser = subparsers.add_parser(
        "bench",
        help="measure training/embedding/loader images per second of a config on this machine",
        description=(
            "Time spanet's own training step per precision the device supports (eager and torch.compile'd), "
            "feature extraction, and the training loader with 0/1/2 workers; print a table with peak memory and "
            "the estimated epoch time of each benchmark dataset."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="YAML config whose model, input "
                        "size and batch are measured")  # fmt: skip
    add_device_arg(parser)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers as JSON ('-': stdout only)")
    add_overwrite_arg(parser, what="--json file")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile timings")
    parser.add_argument("--steps", type=int, default=5, metavar="N", help="timed training steps per case (default 5)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (resnet18, 64x32, batch 4)")
    parser.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    import dataclasses

    from spanet.config import load_config
    from spanet.errors import SpanetError
    from spanet.runtime import resolve_device
    from spanet.training.bench import TINY, BenchSettings, format_bench, run_bench

    from spanet.outputs import JSON_FILE, guard_file, write_json

    if args.json is not None and str(args.json) != "-":
        guard_file(args.json, option="--json", kind=JSON_FILE, inputs=[args.config], overwrite=args.overwrite)
    if args.steps < 1:
        raise SpanetError(f"--steps must be at least 1, got {args.steps}")
    config = load_config(args.config, [])
    settings = TINY if args.tiny else BenchSettings(steps=args.steps)
    settings = dataclasses.replace(settings, compile=args.compile and (settings.compile or not args.tiny))
    result = run_bench(config, device=resolve_device(args.device), settings=settings)
    if args.json is not None and str(args.json) == "-":
        print(json.dumps(result, indent=2))
        return 0
    print(format_bench(result))
    if args.json is not None:
        write_json(args.json, result)
    return 0
