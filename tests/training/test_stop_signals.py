"""Stopping with loader workers: signals to the whole process group, and exact resume with `num_workers=2`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spanet.checkpoint import load_checkpoint
from spanet.config import load_config, save_config

train_module = pytest.importorskip("spanet.training.loop")

SRC = Path(__file__).resolve().parents[2] / "src"


def worker_config(root: Path, *extra: str):
    """resnet18 at 64×32, batch 4, 3 steps per epoch, two persistent loader workers."""
    return load_config(None, [
        "data.dataset=synthetic", f"data.root={root}", "data.height=64", "data.width=32", "data.batch_size=4",
        "data.num_workers=2", "model.backbone=resnet18", "model.pretrained=null", "model.reduced_dim=16",
        "optim.lr=0.02", "optim.epochs=2", "optim.milestones=[1]", "train.device=cpu", "train.eval_every=0",
        "train.log_every=1", "train.max_steps_per_epoch=3", "train.progress=false", *extra,
    ])  # fmt: skip


def test_interrupted_mid_epoch_with_workers_resumes_bit_for_bit(
    tiny_market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spanet.losses

    torch.set_num_threads(1)
    config = worker_config(tiny_market)
    straight = train_module.train(config, output_dir=tmp_path / "straight")["model"].state_dict()
    real, calls = spanet.losses.weigh_terms, []

    def interrupt_at_step_5(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 5:  # epoch 2, step 2 of 3: persistent workers already served a whole epoch
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(spanet.losses, "weigh_terms", interrupt_at_step_5)
    assert train_module.train(config, output_dir=tmp_path / "split")["interrupted"]
    checkpoint = load_checkpoint(tmp_path / "split" / "last.pt")
    assert (checkpoint["epoch"], checkpoint["step_in_epoch"]) == (1, 2)
    monkeypatch.setattr(spanet.losses, "weigh_terms", real)
    resumed = train_module.train(config, output_dir=tmp_path / "split", resume=True)["model"].state_dict()
    assert straight.keys() == resumed.keys()
    assert [key for key in straight if not torch.equal(straight[key], resumed[key])] == []


@pytest.mark.parametrize("target", ["pid", "group"])
def test_sigterm_to_the_process_group_still_checkpoints(tiny_market: Path, tmp_path: Path, target: str) -> None:
    """`kill -TERM PID` and `kill -TERM -PGID` (timeout, Slurm) both end in last.pt and the resume hint."""
    config_file, out = tmp_path / "tiny.yaml", tmp_path / "run"
    save_config(worker_config(tiny_market, "optim.epochs=1000", "train.max_steps_per_epoch=50"), config_file)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "spanet", "train", "--config", str(config_file), "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _trained_a_step(out / "log.jsonl"):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr and process.stderr.read()
            time.sleep(0.2)
        if target == "pid":
            os.kill(process.pid, signal.SIGTERM)
        else:
            os.killpg(os.getpgid(process.pid), signal.SIGTERM)
        _stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(os.getpgid(process.pid), signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    assert "killed by signal" not in stderr and "Traceback" not in stderr, stderr
    assert "SIGTERM received" in stderr and stderr.count("SIGTERM received") == 1, stderr
    assert "--resume" in stderr
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["epoch"] == 0 and 1 <= checkpoint["step_in_epoch"] < 50  # saved mid-epoch 1


def _trained_a_step(log: Path) -> bool:
    if not log.is_file():
        return False
    return any(json.loads(line).get("type") == "step" for line in log.read_text().splitlines() if line.strip())


def test_a_run_that_fails_with_workers_alive_exits(tiny_market: Path, tmp_path: Path) -> None:
    """The workers ignore SIGTERM; an error that ends the run (here a corrupt gallery image found by the final test)
    must stop them, or the interpreter's exit waits for them forever."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_market, data)
    gallery = sorted((data / "bounding_box_test").glob("*.jpg"))
    victim = next(p for p in gallery if not p.name.startswith(("-1", "0000")))  # not junk or distractor: evaluated
    victim.write_bytes(b"not a jpeg")
    config_file = tmp_path / "tiny.yaml"
    save_config(worker_config(data, "optim.epochs=1", "train.eval_every=1", "data.num_workers=1"), config_file)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "spanet", "train", "--config", str(config_file), "--output", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        _stdout, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        process.wait()
        pytest.fail("spanet train did not exit after its error: the loader workers kept it waiting")
    assert process.returncode == 2 and victim.name in stderr, stderr
