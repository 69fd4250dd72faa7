"""Resuming under changed settings that change what is learned is refused, naming the keys (issue 29); a first run
that failed before its first checkpoint can be started again as the error advises."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from builders import write_market
from spanet.cli import main
from spanet.config import config_to_dict, load_config
from spanet.errors import SpanetError
from spanet.training.loop import train
from spanet.training.settings import changed_learning_keys

_TINY = ["data.dataset=market1501", "data.height=64", "data.width=32", "data.batch_size=4", "data.num_workers=0",
         "model.backbone=resnet18", "model.pretrained=null", "model.reduced_dim=16", "optim.epochs=1",
         "optim.milestones=[]", "train.device=cpu", "train.eval_every=0", "train.progress=false",
         "train.max_steps_per_epoch=1"]  # fmt: skip


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(root: Path, *extra: str):
    return load_config(None, [*_TINY, f"data.root={root}", *extra])


def test_which_keys_a_resume_may_change() -> None:
    base = config_to_dict(_config(Path("/data")))
    for key, value, refused in [("data.height", "96", True), ("loss.weighting", "official", True),
                                ("model.dropout", "0.1", False),  # checkpoint.check_model_config's business
                                ("optim.milestones", "[1]", True), ("train.seed", "3", True),
                                ("optim.lr", "0.01", False), ("optim.epochs", "5", False),
                                ("data.num_workers", "2", False), ("train.eval_every", "1", False)]:  # fmt: skip
        changed = changed_learning_keys(base, config_to_dict(_config(Path("/data"), f"{key}={value}")))
        assert changed == ([key] if refused else []), key


def test_resume_with_a_changed_input_size_is_refused_naming_the_key(tmp_path: Path, one_thread: None) -> None:
    """Poor: `train --resume` with a changed data.height continued silently and rewrote config.yaml."""
    root = write_market(tmp_path / "data")
    run = tmp_path / "run"
    train(_config(root), output_dir=run)
    saved = (run / "config.yaml").read_text()
    with pytest.raises(SpanetError, match=r"data\.height 64 -> 96.*--allow-changed"):
        train(_config(root, "data.height=96", "optim.epochs=2"), output_dir=run, resume=True)
    assert (run / "config.yaml").read_text() == saved
    summary = train(_config(root, "data.height=96", "optim.epochs=2"), output_dir=run, resume=True, allow_changed=True)
    assert summary["last_checkpoint"] and "height: 96" in (run / "config.yaml").read_text()


def test_a_failed_first_run_can_be_started_again_as_advised(tmp_path: Path, one_thread: None,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Poor: a first run that failed on a corrupt image left a folder that the advised retry (--skip-corrupt) refused
    as "not empty", and --resume refused too: the advice looped."""
    root = write_market(tmp_path / "data")
    (root / "bounding_box_train" / "0007_c1s1_000001_00.jpg").write_bytes(b"not a jpeg")
    run = tmp_path / "run"
    args = ["train", "--output", str(run), *(item for key in _TINY for item in ("--set", key)), "--data-root", str(root)]
    assert main(args) == 2
    assert "--skip-corrupt" in capsys.readouterr().err and not (run / "last.pt").exists() and run.is_dir()
    assert main([*args, "--resume"]) == 2
    assert "without --resume" in capsys.readouterr().err
    assert main([*args, "--skip-corrupt"]) == 0
    assert (run / "last.pt").is_file()
    (aside,) = tmp_path.glob("run.replaced-*")  # what the failed run left is kept, not deleted
    assert (aside / "config.yaml").is_file()
