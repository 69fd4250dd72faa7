"""Arguments shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spanet.data.datasets import ReidDataset

__all__ = [
    "EMBEDDING_CHOICES",
    "add_amp_arg",
    "add_checkpoint_arg",
    "add_device_arg",
    "add_batch_size_arg",
    "add_dataset_args",
    "add_skip_corrupt_arg",
    "add_overwrite_arg",
    "writes",
    "dataset_from_args",
    "add_model_args",
    "report_failures",
]


# `spanet.model.EMBEDDING_KINDS`, spelled here so that building the parser loads no torch; a test checks they agree
EMBEDDING_CHOICES: tuple[str, ...] = ("parts", "reduced", "global")


def writes(action: argparse.Action) -> argparse.Action:
    """Mark an argument that names something the command writes but is not called --out/--output/--json (e.g. a
    gallery folder): tests/cli/test_output_options.py aims every output at a checkpoint."""
    action.writes = True  # type: ignore[attr-defined]
    return action


def add_checkpoint_arg(parser: argparse.ArgumentParser, *, help: str = "a .pt file from `spanet train`") -> None:
    """`--checkpoint CKPT` (required)."""
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="CKPT", help=help)


def add_device_arg(parser: argparse.ArgumentParser, *, default: str | None = "auto") -> None:
    """`--device DEV`; `default=None` leaves the choice to the config (train.device)."""
    shown = default or "the config's train.device"
    parser.add_argument("--device", default=default, metavar="DEV",
                        help=f"auto (CUDA if present, else CPU), cpu, cuda or cuda:N (default: {shown})")  # fmt: skip


def add_batch_size_arg(parser: argparse.ArgumentParser, *, default: int = 64, what: str = "images") -> None:
    """`--batch-size N`: how many images (or crops) one forward pass takes."""
    parser.add_argument("--batch-size", type=int, default=default, metavar="N",
                        help=f"{what} per forward pass (default {default})")  # fmt: skip


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    from spanet.data.datasets import DATASET_NAMES

    parser.add_argument(
        "--dataset",
        required=True,
        metavar="NAME",
        help=f"dataset name, one of: {', '.join(DATASET_NAMES)} "
        "(market1501 reads any folder in the Market-1501 layout)",
    )
    parser.add_argument(
        "--data-root",
        required=True,
        metavar="DIR",
        help="folder holding bounding_box_train/ etc. (or list_*.txt for MSMT17), or a parent of the dataset's "
        "usual folder; with --dataset folders a folder of <identity>/ sub-folders, with --dataset list a CSV file "
        "(see docs/datasets.md)",
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.5, metavar="F",
        help="folders/list without a given split: fraction of identities held out for testing (default 0.5)",
    )  # fmt: skip
    parser.add_argument(
        "--split-seed", type=int, default=0, metavar="N",
        help="folders/list without a given split: seed of the identity split (default 0)",
    )  # fmt: skip


def add_skip_corrupt_arg(parser: argparse.ArgumentParser) -> None:
    """`--skip-corrupt`: decode every image first and leave out the ones that fail (slow on big datasets)."""
    parser.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="decode every image first and leave out corrupt ones (listed in the output) instead of stopping",
    )


def add_overwrite_arg(parser: argparse.ArgumentParser, *, what: str) -> None:
    """`--overwrite`: replace an existing output of the same kind, which is moved aside (never deleted)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing {what}: the old one is moved aside to NAME.replaced-TIME (never deleted); "
        "without it an existing one is refused",
    )


def dataset_from_args(args: argparse.Namespace, *, progress: bool = True) -> ReidDataset:
    """`load_dataset` for a command that used `add_dataset_args` (and optionally `add_skip_corrupt_arg`)."""
    from spanet.data.datasets import load_dataset

    return load_dataset(
        args.dataset, args.data_root, skip_corrupt=getattr(args, "skip_corrupt", False), progress=progress,
        test_fraction=args.test_fraction, split_seed=args.split_seed,
    )  # fmt: skip


def add_amp_arg(parser: argparse.ArgumentParser) -> None:
    """`--amp {auto,none,bf16,fp16}`: the precision of the forward passes (`spanet.runtime.choose_precision`)."""
    parser.add_argument(
        "--amp", nargs="?", const="auto", default="auto", choices=("auto", "none", "bf16", "fp16"),
        help="precision: auto (default) = float16 autocast on CUDA, bfloat16 on CPUs with native bf16 (AMX or "
        "AVX512-BF16), float32 on other CPUs, where bf16 is emulated and ~10x slower; none = float32 everywhere "
        "(reproducible to the bit); bf16/fp16 force that dtype. Reduced precision changes features slightly "
        "(metrics within ~0.1 points, docs/training.md)",
    )  # fmt: skip


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """`--checkpoint`, `--device`, `--batch-size`, `--quiet`, `--amp`: what a command that embeds images takes."""
    add_checkpoint_arg(parser)
    add_device_arg(parser)
    add_batch_size_arg(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_amp_arg(parser)


_MAX_LISTED_FAILURES = 20


def report_failures(failures: tuple[tuple[str, str], ...]) -> None:
    """List unreadable images on stderr (the first 20)."""
    import sys

    if not failures:
        return
    print(f"skipped {len(failures)} unreadable image(s):", file=sys.stderr)
    for path, reason in failures[:_MAX_LISTED_FAILURES]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(failures) > _MAX_LISTED_FAILURES:
        print(f"  … and {len(failures) - _MAX_LISTED_FAILURES} more", file=sys.stderr)
