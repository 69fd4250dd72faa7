"""`train.compile`: the loop trains through the compiled module and saves the plain model's weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spanet.checkpoint import load_checkpoint
from spanet.config import load_config

train_module = pytest.importorskip("spanet.training.loop")


def test_compile_wraps_the_model_and_checkpoints_keep_plain_keys(
    tiny_market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = []

    class Recorded(torch.nn.Module):  # stands in for torch.compile's wrapper (real compiling takes a minute)
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self._orig_mod = inner
            self.calls = 0

        def forward(self, x: torch.Tensor) -> object:
            self.calls += 1
            return self._orig_mod(x)

    def fake_compile(module: torch.nn.Module) -> torch.nn.Module:
        compiled.append(Recorded(module))
        return compiled[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    config = load_config(None, [
        "data.dataset=synthetic", f"data.root={tiny_market}", "data.height=64", "data.width=32", "data.batch_size=4",
        "data.num_workers=0", "model.backbone=resnet18", "model.reduced_dim=16", "optim.epochs=1",
        "train.device=cpu", "train.eval_every=0", "train.max_steps_per_epoch=2", "train.progress=false",
        "train.compile=true",
    ])  # fmt: skip
    train_module.train(config, output_dir=tmp_path)
    assert len(compiled) == 1 and compiled[0].calls == 2
    keys = load_checkpoint(tmp_path / "last.pt")["model"].keys()
    assert keys and not any(key.startswith("_orig_mod") for key in keys)
