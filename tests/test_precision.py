"""`amp: auto`: the precision follows what the processor can do (detection mocked), and says why."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import spanet.runtime as runtime
from spanet.errors import SpanetError
from spanet.runtime import CpuInfo, choose_precision

AVX2 = CpuInfo(capability="AVX2", amx=False, avx512_bf16=False)
AMX = CpuInfo(capability="AVX512", amx=True, avx512_bf16=True)
ZEN4 = CpuInfo(capability="AVX512", amx=False, avx512_bf16=True)
CPU = torch.device("cpu")


def test_auto_is_float32_on_avx2_and_bf16_with_native_bf16() -> None:
    plain = choose_precision("auto", CPU, cpu=AVX2)
    assert (plain.amp, plain.channels_last) == ("none", False) and "emulated" in plain.reason
    for cpu, layout in ((AMX, True), (ZEN4, False)):  # channels_last helps bf16 with AMX; measured slower without
        fast = choose_precision("auto", CPU, cpu=cpu)
        assert (fast.amp, fast.channels_last) == ("bf16", layout) and "BF16" in fast.reason
    assert choose_precision("auto", torch.device("cuda")).amp == "fp16"  # no GPU needed to decide


def test_explicit_choices_and_layout() -> None:
    assert choose_precision("none", CPU, cpu=AMX).amp == "none"
    assert choose_precision(None, CPU, cpu=AMX).amp == "none" and choose_precision(False, CPU, cpu=AMX).amp == "none"
    assert choose_precision(True, CPU, cpu=AMX).amp == "bf16"  # True: the device's reduced precision
    assert choose_precision("bf16", CPU, cpu=AMX, channels_last=False).channels_last is False
    assert choose_precision("none", CPU, cpu=AMX, channels_last=True).channels_last is True
    with pytest.raises(SpanetError, match="fp16 needs CUDA"):
        choose_precision("fp16", CPU, cpu=AMX)
    with pytest.raises(SpanetError, match="auto, none, bf16, fp16"):
        choose_precision("fp8", CPU, cpu=AMX)


def test_explicit_bf16_on_avx2_runs_with_a_warning_that_says_how_much_slower() -> None:
    with pytest.warns(RuntimeWarning, match="10x slower than float32"):
        chosen = choose_precision("bf16", CPU, cpu=AVX2)
    assert chosen.amp == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        choose_precision("bf16", CPU, cpu=AMX)  # native: no warning


def _mock_cpu(monkeypatch: pytest.MonkeyPatch, *, capability: str, amx: bool, avx512_bf16: bool) -> None:
    """Make this machine report another processor, at every place spanet looks."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    flags = {"avx2"} | ({"amx_bf16", "amx_tile"} if amx else set()) | ({"avx512_bf16"} if avx512_bf16 else set())
    monkeypatch.setattr(runtime, "_proc_cpuinfo", lambda: ("Mock CPU", flags))
    runtime.cpu_info.cache_clear()  # and again at teardown (`_fresh_detection`)


@pytest.fixture(autouse=True)
def _fresh_detection():
    runtime.cpu_info.cache_clear()
    yield
    runtime.cpu_info.cache_clear()


@pytest.mark.parametrize(("capability", "amx", "expected"), [("AVX2", False, "none"), ("AVX512", True, "bf16")])
def test_training_with_auto_logs_what_the_detected_cpu_gets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_market: Path, capability: str, amx: bool, expected: str
) -> None:
    from spanet.config import load_config
    from spanet.training.loop import train

    _mock_cpu(monkeypatch, capability=capability, amx=amx, avx512_bf16=amx)
    assert runtime.cpu_info() == CpuInfo(capability=capability, amx=amx, avx512_bf16=amx)
    config = load_config(None, [
        # 64x32, not 32x16: on a real AMX host with 2 threads, bf16 + channels_last made layer3's first conv (a 4x2
        # map) NaN in 2 of 6 fresh processes at 32x16 (oneDNN; none in 6 at 64x32, docs/training.md)
        "data.dataset=synthetic", f"data.root={tiny_market}", "data.height=64", "data.width=32", "data.batch_size=4",
        "data.num_workers=0", "model.backbone=resnet18", "model.reduced_dim=8", "optim.epochs=1",
        "train.device=cpu", "train.eval_every=0", "train.max_steps_per_epoch=1", "train.progress=false",
    ])  # fmt: skip
    assert config.train.amp == "auto" and config.train.channels_last == "auto"
    summary = train(config, output_dir=tmp_path / "run")
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert record["type"] == "run" and record["precision"]["amp"] == expected == summary["precision"]["amp"]
    assert record["precision"]["channels_last"] is (expected == "bf16") and record["cpu"]["amx"] is amx
    assert load_config(tmp_path / "run" / "config.yaml").train.amp == "auto"  # resumes choose again on their host


def test_cli_warns_in_one_line_for_bf16_on_avx2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    from builders import make_checkpoint, make_images

    from spanet.cli import main

    _mock_cpu(monkeypatch, capability="AVX2", amx=False, avx512_bf16=False)
    checkpoint = make_checkpoint(tmp_path / "ckpt.pt")
    images = make_images(tmp_path / "imgs", count=2)
    assert main(["extract", "--checkpoint", str(checkpoint), "--device", "cpu", "--amp", "bf16", "--out",
                 str(tmp_path / "f.npz"), *map(str, images)]) == 0  # fmt: skip
    assert main(["extract", "--checkpoint", str(checkpoint), "--device", "cpu", "--out", str(tmp_path / "g.npz"),
                 *map(str, images)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "warning: bf16 was asked for on a CPU AVX2 without native bf16" in err and err.count("10x slower") == 1
    assert "precision: float32 (auto: CPU AVX2 without native bf16" in err  # the default on that CPU
