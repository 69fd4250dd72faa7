"""`spanet train`: one training run from a YAML config, flags and `--set section.key=value` overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from spanet.cli.common import add_device_arg
from spanet.errors import SpanetError

__all__ = ["register"]

_EPILOG = """\
precedence: defaults < --config FILE < --set overrides < --dataset/--data-root/--epochs/--device.
examples:
  spanet train --config configs/market1501.yaml --data-root data/Market-1501-v15.09.15 --output runs/market
  spanet train --config configs/cpu_demo.yaml --data-root /tmp/demo_data --output runs/demo --set optim.lr=0.05
  spanet train --output runs/market --resume            # continue a stopped run from runs/market/last.pt
  torchrun --standalone --nproc_per_node 4 -m spanet train --config configs/market1501.yaml ...
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `spanet train`."""
    parser = subparsers.add_parser(
        "train",
        help="train SPANet (paper recipe configs in configs/), resumable, multi-GPU with torchrun",
        description="Train SPANet: writes config.yaml, log.jsonl, tb/ (TensorBoard), last.pt and, with data.val_ids > 0, "
        "best.pt (by validation mAP on held-out training identities; the test split is evaluated once, at the end, on "
        "the final model) into --output. Ctrl-C or SIGTERM finishes the step, writes last.pt and says how to resume.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="YAML config (e.g. configs/market1501.yaml); with --resume and no --config, the run's "
                        "own config.yaml is used")  # fmt: skip
    parser.add_argument("--dataset", metavar="NAME", help="dataset name (overrides data.dataset)")
    parser.add_argument("--data-root", metavar="DIR", help="dataset folder (overrides data.root)")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="run folder for logs and checkpoints")
    parser.add_argument("--epochs", type=int, metavar="N", help="total epochs (overrides optim.epochs)")
    add_device_arg(parser, default=None)
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="start anew in a non-empty --output: its content is moved aside to OUTPUT.replaced-TIME "
                        "(never deleted); without --resume or --overwrite a non-empty --output is refused")
    parser.add_argument("--allow-changed", action="store_true",
                        help="with --resume: continue even though settings that change what is learned (data, loss, "
                        "optimiser schedule, seed) differ from the run's; refused otherwise, naming the keys")
    parser.add_argument("--skip-corrupt", action="store_true",
                        help="decode every image first and leave out corrupt ones, listed (sets data.skip_corrupt)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set optim.lr=0.05 --set train.amp=bf16 (repeatable)")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spanet.config import apply_overrides, config_from_dict, config_to_dict, load_config, yaml_scalar
    from spanet.outputs import guard_folder
    from spanet.run_dir import CONFIG_FILE
    from spanet.training.loop import train

    guard_folder(args.output, option="--output", inputs=[args.config, args.data_root])
    config_path = args.config
    if config_path is None and args.resume:
        config_path = args.output / CONFIG_FILE
        if not config_path.is_file():
            raise SpanetError(f"--resume without --config needs {config_path}; pass --config FILE")
    flags = [
        ("--dataset", "data.dataset", args.dataset),
        ("--data-root", "data.root", args.data_root),
        ("--epochs", "optim.epochs", args.epochs),
        ("--device", "train.device", args.device),
        ("--skip-corrupt", "data.skip_corrupt", True if args.skip_corrupt else None),
    ]
    values = config_to_dict(load_config(config_path, args.overrides))
    for flag, key, value in flags:  # after --set, as before; a bad value is blamed on its flag
        if value is not None:
            values = apply_overrides(values, [f"{key}={yaml_scalar(value)}"], source=flag)
    config = config_from_dict(values, source=str(config_path or "config"))
    summary = train(config, output_dir=args.output, resume=args.resume, overwrite=args.overwrite,
                    allow_changed=args.allow_changed)
    if summary["interrupted"]:
        return 130
    if summary["rank"] != 0:
        return 0
    metrics = summary["final_metrics"]
    if metrics:
        print(f"test (final model): rank-1 {metrics['rank1']:.2%}  mAP {metrics['mAP']:.2%}")
    if summary["best_checkpoint"]:
        print(f"best validation mAP {summary['best_mAP']:.2%} at epoch {summary['best_epoch']}: {summary['best_checkpoint']}")
    print(f"last checkpoint: {summary['last_checkpoint']}")
    return 0

