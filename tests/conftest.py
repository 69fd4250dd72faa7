"""Shared fixtures: a tiny synthetic dataset in the Market-1501 layout, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few identities, cameras and images in Market-1501 layout (with distractors and junk)."""
    from spanet.synth.generate import SYNTH_PRESETS, generate_dataset

    root = tmp_path_factory.mktemp("tiny_market")
    generate_dataset(root, **SYNTH_PRESETS["tiny"], progress=False)
    return root
