"""The lean step: no host-device synchronisation inside a step, one read every `read_every` steps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from spanet.config import DataConfig, LossConfig, OptimConfig
from spanet.data.loader import build_train_loader
from spanet.training.loop import EpochSpan, StepSettings, TrainingDiverged, train_one_epoch

# Every way a tensor's value reaches Python: each is a host-device synchronisation on a GPU.
_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the Tensor methods called that read a value to the host, in order."""
    calls: list[str] = []
    for name in _READS:
        real = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: object, _real=real, _name=name, **kwargs: object) -> object:
            calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    yield calls


def _pieces(tiny_market: Path) -> tuple:
    from spanet.data.datasets import load_dataset
    from spanet.model import SPANet

    train = load_dataset("synthetic", tiny_market).train
    loader = build_train_loader(train, DataConfig(root="x", height=64, width=32, batch_size=4, num_workers=0), seed=0)
    torch.manual_seed(0)
    model = SPANet(num_classes=len({s.pid for s in train}), backbone="resnet18", reduced_dim=16)
    from spanet.training.optim import build_optimizer

    return model, build_optimizer(model, OptimConfig(lr=0.01)), loader


@pytest.mark.parametrize("read_every", [1, 3])
def test_at_most_one_sync_per_read_interval(tiny_market: Path, host_reads: list[str], read_every: int) -> None:
    torch.set_num_threads(1)
    model, optimizer, loader = _pieces(tiny_market)
    steps = min(len(loader), 6)
    settings = StepSettings(loss=LossConfig(), optim=OptimConfig(lr=0.01), read_every=read_every)
    records = []
    batches = iter(loader)  # starting a pass draws the loader's base seed from a CPU generator (not a device read)
    host_reads.clear()
    result = train_one_epoch(model, optimizer, batches, settings=settings, span=EpochSpan(epoch=0, steps=steps),
                             device=torch.device("cpu"), on_step=records.append)  # fmt: skip
    reads = -(-steps // read_every)  # every read_every-th step and the last one
    assert len(host_reads) == reads, host_reads
    assert result["steps_done"] == steps and len(records) == steps
    assert sum("loss" in r for r in records) == reads and torch.isfinite(torch.tensor(result["loss"]))
    assert set(result["terms"]) >= {"global", "ds1"}


def test_non_finite_loss_found_at_the_next_read(tiny_market: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import spanet.losses

    torch.set_num_threads(1)
    model, optimizer, loader = _pieces(tiny_market)
    real, calls = spanet.losses.weigh_terms, []

    def nan_at_second_step(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return real(*args, **kwargs) * (float("nan") if len(calls) == 2 else 1.0)

    monkeypatch.setattr(spanet.losses, "weigh_terms", nan_at_second_step)
    settings = StepSettings(loss=LossConfig(), optim=OptimConfig(lr=0.01), read_every=3)
    with pytest.raises(TrainingDiverged, match="steps 1-3"):
        train_one_epoch(model, optimizer, loader, settings=settings, span=EpochSpan(epoch=0, steps=min(len(loader), 6)),
                        device=torch.device("cpu"))  # fmt: skip
    assert len(calls) == 3  # found at the read after step 3, before any caller could write a checkpoint


def test_a_worker_dying_after_a_stop_request_still_ends_the_pass_cleanly(tiny_market: Path) -> None:
    """If a signal reached a worker anyway, the pass stops like a stop request (the caller then checkpoints)."""
    torch.set_num_threads(1)
    model, optimizer, loader = _pieces(tiny_market)
    first = next(iter(loader))
    stop = []

    def dying_loader() -> Iterator[tuple]:
        yield first
        stop.append(True)  # the signal arrives; it also killed a worker
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    settings = StepSettings(loss=LossConfig(), optim=OptimConfig(lr=0.01), read_every=5)
    result = train_one_epoch(model, optimizer, dying_loader(), settings=settings, span=EpochSpan(epoch=0, steps=4),
                             device=torch.device("cpu"), should_stop=lambda: bool(stop))  # fmt: skip
    assert result["stopped"] and result["step"] == 1 and torch.isfinite(torch.tensor(result["loss"]))
    stop.clear()
    with pytest.raises(RuntimeError, match="killed"):  # without a stop request it is a real failure
        train_one_epoch(model, optimizer, _dies_after(first), settings=settings, span=EpochSpan(epoch=0, steps=4),
                        device=torch.device("cpu"))  # fmt: skip


def _dies_after(batch: tuple) -> Iterator[tuple]:
    yield batch
    raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")
