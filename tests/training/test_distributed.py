"""DDP on CPU: two gloo processes train a few steps and end with identical weights; only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch



def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, root: str, out: str, num_instances: int) -> None:
    """One torchrun-like process: the same environment variables torchrun sets, then `train`."""
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    from spanet.config import load_config
    from spanet.training.loop import train

    config = load_config(
        None,
        ["data.dataset=synthetic", f"data.root={root}", "data.height=64", "data.width=32", "data.batch_size=8", "data.num_workers=0",
         f"data.num_instances={num_instances}", "model.backbone=resnet18", "model.pretrained=null",
         "model.reduced_dim=32", "optim.lr=0.02", "optim.epochs=1", "train.device=cpu", "train.eval_every=1",
         "train.log_every=1", "train.max_steps_per_epoch=2", "train.progress=false"],
    )  # fmt: skip
    summary = train(config, output_dir=out)
    torch.save(summary["model"].state_dict(), Path(out).parent / f"rank{rank}.pt")


@pytest.mark.parametrize("num_instances", [2])  # the P×K identity sampler; plain shuffling shares the path
def test_two_gloo_processes_end_identical(tiny_market: Path, tmp_path: Path, num_instances: int) -> None:
    out = tmp_path / "run"
    torch.multiprocessing.spawn(
        _worker, args=(2, _free_port(), str(tiny_market), str(out), num_instances), nprocs=2, join=True
    )
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], checkpoint["model"][key]), key
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["run", "step", "step", "epoch", "test"]  # written once, by rank 0
    assert records[0]["precision"]["amp"] in ("none", "bf16") and "attention" in records[3]
    assert records[1]["images_per_s"] > 0
