"""Checkpoints: atomic writes, weights_only loading, clear errors for foreign/corrupt files and model mismatch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from spanet.checkpoint import check_model_config, load_checkpoint, load_model, save_checkpoint
from spanet.errors import SpanetError


def _state() -> dict:
    return {
        "model": {"w": torch.arange(6.0).reshape(2, 3)},
        "model_args": {"num_classes": 3, "backbone": "resnet18"},
        "config": {"model": {"backbone": "resnet18"}, "optim": {"milestones": [40]}},
        "epoch": 2,
        "rng": {"torch": torch.get_rng_state()},
    }


def test_round_trip_and_marker(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "sub" / "a.pt", _state())
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], _state()["model"]["w"])
    assert state["epoch"] == 2 and state["format"] == "spanet-checkpoint" and state["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["a.pt"]  # no temp file left behind


def test_failed_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "a.pt", _state())
    before = path.read_bytes()

    def broken_save(obj: object, handle: object) -> None:
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {**_state(), "epoch": 3})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.pt"]


def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(SpanetError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    full = save_checkpoint(tmp_path / "full.pt", _state())
    (tmp_path / "cut.pt").write_bytes(full.read_bytes()[:100])
    with pytest.raises(SpanetError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(SpanetError, match="not a spanet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    """weights_only=True: a file that needs arbitrary unpickling is rejected, not executed."""
    torch.save({"format": "spanet-checkpoint", "version": 1, "model": {}, "model_args": {}, "x": Path("/")}, tmp_path / "p.pt")
    with pytest.raises(SpanetError, match="could not be read: it holds Python objects") as info:
        load_checkpoint(tmp_path / "p.pt")
    assert "weights_only=False" not in str(info.value)  # never advise the unsafe load


@pytest.mark.parametrize("content", [b"not a checkpoint", b"PK\x03\x04truncated"])
def test_garbage_and_truncated_files_are_named(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(SpanetError, match="bad.pt is not a PyTorch checkpoint archive"):
        load_checkpoint(tmp_path / "bad.pt")


def test_model_mismatch_names_keys() -> None:
    check_model_config({"backbone": "resnet18", "dropout": 0.5}, {"backbone": "resnet18", "dropout": 0.5}, path="x.pt")
    with pytest.raises(SpanetError) as info:
        check_model_config(
            {"backbone": "resnet18", "dropout": 0.5, "parts": True},
            {"backbone": "resnet50", "dropout": 0.5, "parts": False},
            path="x.pt",
        )
    message = str(info.value)
    assert "model.backbone" in message and "model.parts" in message and "model.dropout" not in message


def test_load_model_rebuilds_in_eval_mode(tmp_path: Path) -> None:
    from spanet import model as spanet_model

    torch.manual_seed(0)
    args = {"num_classes": 5, "backbone": "resnet18", "pretrained": None}
    model = spanet_model.SPANet(**args)
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "model_args": args, "input_size": [64, 32]})
    loaded, state = load_model(tmp_path / "m.pt")
    assert not loaded.training and state["input_size"] == [64, 32]
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    bad = {"model": model.state_dict(), "model_args": {**args, "num_classes": 7}}
    save_checkpoint(tmp_path / "bad.pt", bad)
    with pytest.raises(SpanetError, match="do not fit"):
        load_model(tmp_path / "bad.pt")


def test_checkpoint_with_the_old_model_keys_loads_unchanged(tmp_path: Path) -> None:
    """Checkpoints written before the SA rename store `sa_backbone`/`sa_branches` in model_args: same model."""
    import torch

    from spanet.model import SPANet

    torch.manual_seed(0)
    model = SPANet(num_classes=3, backbone="resnet18", sa_parts=True, sa_ds=False).eval()
    old_args = {"num_classes": 3, "backbone": "resnet18", "sa_backbone": True, "sa_branches": False}
    save_checkpoint(tmp_path / "old.pt", {"model": model.state_dict(), "model_args": old_args, "input_size": [64, 32]})
    with pytest.warns(FutureWarning, match="sa_parts"):
        loaded, state = load_model(tmp_path / "old.pt")
    assert loaded.sa_parts is not None and all(head.sa_ds is None for head in loaded.ds_heads)
    assert state["model_args"] == old_args  # stored args (and the fingerprints made from them) are untouched
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(loaded.embed(x), model.embed(x))


def test_weights_that_do_not_fit_name_the_keys(tmp_path: Path) -> None:
    from spanet.model import SPANet

    model = SPANet(num_classes=3, backbone="resnet18")
    args = {"num_classes": 3, "backbone": "resnet18", "num_parts": 3}  # the weights have six part classifiers
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "model_args": args, "input_size": [64, 32]})
    with pytest.raises(SpanetError, match=r"Unexpected key\(s\) in state_dict: \"part_classifiers\.3\.weight\"") as info:
        load_model(tmp_path / "m.pt")
    assert "\n" not in str(info.value)


def _flip_a_byte_inside_the_largest_tensor(path: Path) -> None:
    """Damage tensor data in place (not the zip structure), as a bad disk or copy would."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_the_weights_are_detected(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = {"model": {"w": torch.randn(64, 64), "b": torch.zeros(3)}, "model_args": {}, "input_size": [64, 32]}
    path = save_checkpoint(tmp_path / "m.pt", state)
    assert load_checkpoint(path)["model"]["w"].shape == (64, 64)  # intact: loads
    _flip_a_byte_inside_the_largest_tensor(path)
    with pytest.raises(SpanetError, match=r"m\.pt is damaged"):
        load_checkpoint(path)


def test_checkpoints_without_a_checksum_still_load(tmp_path: Path) -> None:
    payload = {"format": "spanet-checkpoint", "version": 1, "model": {"w": torch.ones(2)}, "model_args": {}}
    torch.save(payload, tmp_path / "old.pt")
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")["model"]["w"], torch.ones(2))


def test_checkpoints_are_readable_like_other_outputs_and_stale_temp_files_go(tmp_path: Path) -> None:
    stale = tmp_path / ".last.pt.abc123.tmp"  # what a `kill -9` during a save leaves behind
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".best.pt.xyz.tmp"
    other.write_bytes(b"another file's leftover")
    old_mask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.ones(1)}, "model_args": {}})
    finally:
        os.umask(old_mask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert not stale.exists() and other.exists()  # only this checkpoint's leftovers are removed


def test_checkpoints_from_before_sa_pooling_keep_the_weighted_sum(tmp_path: Path) -> None:
    """No `sa_pooling` in model_args means the model was trained with Σ A F: it must evaluate exactly as before."""
    from spanet.model import SPANet

    torch.manual_seed(0)
    trained_with_sum = SPANet(num_classes=3, backbone="resnet18", sa_pooling="sum").eval()
    old_args = {"num_classes": 3, "backbone": "resnet18"}  # written before the switch existed
    save_checkpoint(tmp_path / "old.pt", {"model": trained_with_sum.state_dict(), "model_args": old_args})
    loaded, _ = load_model(tmp_path / "old.pt")
    assert all(head.sa_ds.pooling == "sum" for head in loaded.ds_heads)
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x).ds_logits[0], trained_with_sum(x).ds_logits[0])
    with pytest.raises(SpanetError, match="model.sa_pooling: checkpoint 'sum' vs config 'mean'"):
        check_model_config(old_args, {**old_args, "sa_pooling": "mean"}, path="old.pt")
    # resuming such a run with the documented override (`--set model.sa_pooling=sum`) is accepted: the heads were
    # initialised the spanet way then, and the initial weights (`pretrained`) do not matter once trained
    resumed = {**old_args, "sa_pooling": "sum", "head_init": "spanet", "pretrained": "imagenet"}
    check_model_config({**old_args, "pretrained": None}, resumed, path="old.pt")
