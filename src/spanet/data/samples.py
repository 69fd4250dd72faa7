"""The values every dataset reader returns: `Sample` (one image) and `ReidDataset` (train / query / gallery).

They live apart from the readers so that the benchmark readers (`spanet.data.datasets`) and the own-data readers
(`spanet.data.own`) both build them without importing each other: `datasets.load_dataset` dispatches to `own`,
and `own` needs only these types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sample", "ReidDataset", "relabel_train", "first_items"]

_SHOWN = 5  # how many offending items an error message lists


@dataclass(frozen=True)
class Sample:
    """One image: absolute path, person id and 0-based camera id."""

    path: str
    pid: int
    camid: int


@dataclass(frozen=True)
class ReidDataset:
    """A dataset split into train / query / gallery, plus what `load_dataset` found wrong but could read anyway.

    `problems` are count mismatches against the known statistics; `skipped` are corrupt files left out because
    the caller asked for `skip_corrupt`.
    """

    name: str
    root: Path
    train: tuple[Sample, ...]
    query: tuple[Sample, ...]
    gallery: tuple[Sample, ...]
    problems: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    protocol: str = "cross-camera"  # or "no-camera" (`spanet.data.protocol`)
    split_source: str = "split given by the data"  # or how spanet split the identities itself

    @property
    def num_train_ids(self) -> int:
        return len({s.pid for s in self.train})


def relabel_train(train: Sequence[Sample]) -> tuple[Sample, ...]:
    """Map original training ids to 0..N-1 in sorted order, so the same folder always gives the same labels."""
    labels = {pid: label for label, pid in enumerate(sorted({s.pid for s in train}))}
    return tuple(Sample(s.path, labels[s.pid], s.camid) for s in train)


def first_items(items: Sequence[object]) -> str:
    """The first few items for an error message, and how many more there are."""
    more = f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(str(item) for item in items[:_SHOWN]) + more
