"""Shared fixtures: a tiny synthetic dataset in the Market-1501 layout, generated once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a test module that trains or embeds: on a shared 2-core box this is several times
    faster than two contending ones (use with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few identities, cameras and images in Market-1501 layout (with distractors and junk)."""
    from spanet.synth.generate import SYNTH_PRESETS, generate_dataset

    root = tmp_path_factory.mktemp("tiny_market")
    generate_dataset(root, **SYNTH_PRESETS["tiny"], progress=False)
    return root
