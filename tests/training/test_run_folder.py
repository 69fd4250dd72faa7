"""A resumed run tidies what a killed checkpoint write left in its folder (issue 15, case 12)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from builders import write_market
from spanet.config import load_config
from spanet.training.loop import train


def test_resume_removes_the_temp_files_of_killed_checkpoint_writes(tmp_path: Path, capsys) -> None:
    """`.best.pt.*.tmp` used to stay until best.pt was saved again, which may never happen (no evaluation, or no
    better mAP); a resumed run removes the temp files of both checkpoints and nothing else."""
    root = write_market(tmp_path / "data")
    config = load_config(None, [
        "data.dataset=market1501", f"data.root={root}", "data.height=64", "data.width=32", "data.batch_size=4",
        "data.num_workers=0", "model.backbone=resnet18", "model.pretrained=null", "model.reduced_dim=16",
        "optim.epochs=1", "optim.milestones=[]", "train.device=cpu", "train.eval_every=0", "train.progress=false",
        "train.max_steps_per_epoch=1",
    ])  # fmt: skip
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config, output_dir=run)
        stale = [run / ".best.pt.k9a1b2.tmp", run / ".last.pt.x7y8z9.tmp"]
        for path in stale:
            path.write_bytes(b"half a checkpoint")
        (run / "notes.tmp").write_text("the user's")
        capsys.readouterr()
        train(replace(config, optim=replace(config.optim, epochs=2)), output_dir=run, resume=True)
    finally:
        torch.set_num_threads(threads)
    assert not any(path.exists() for path in stale)
    assert (run / "notes.tmp").read_text() == "the user's"
    assert ".best.pt.k9a1b2.tmp" in capsys.readouterr().err
