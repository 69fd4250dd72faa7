"""Arguments shared by several commands."""

from __future__ import annotations

import argparse

__all__ = ["add_dataset_args"]


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    from spanet.data.datasets import DATASET_NAMES

    parser.add_argument(
        "--dataset",
        required=True,
        metavar="NAME",
        help=f"dataset name, one of: {', '.join(DATASET_NAMES)} (market1501 reads any folder in the Market-1501 layout)",
    )
    parser.add_argument(
        "--data-root",
        required=True,
        metavar="DIR",
        help="folder holding bounding_box_train/ etc. (or list_*.txt for MSMT17), or a parent of the dataset's usual folder",
    )
