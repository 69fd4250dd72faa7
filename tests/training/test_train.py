"""The training loop on the tiny synthetic set: run files, exact resume, SIGINT, NaN, mismatches, the CLI."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from spanet.checkpoint import load_checkpoint, load_model
from spanet.config import OptimConfig, config_to_dict, load_config
from spanet.errors import SpanetError

import spanet.training.loop as train_module


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny_config(root: Path, *extra: str):
    """resnet18 at 64×32, batch 8, 2 steps per epoch, no workers: a step takes a fraction of a second."""
    return load_config(
        None,
        [
            "data.dataset=synthetic",
            f"data.root={root}",
            "data.height=64",
            "data.width=32",
            "data.batch_size=8",
            "data.num_workers=0",
            "model.backbone=resnet18",
            "model.pretrained=null",
            "model.reduced_dim=32",
            "optim.lr=0.02",
            "optim.backbone_lr_mult=1.0",
            "optim.epochs=2",
            "optim.milestones=[1]",
            "train.device=cpu",
            "train.amp=none",  # float32 on every host (auto would pick bf16 on some), as the exactness tests expect
            "train.eval_every=0",
            "train.log_every=1",
            "train.max_steps_per_epoch=2",
            "train.progress=false",
            *extra,
        ],
    )


# validation on 3 held-out training identities after every epoch, the test split once at the end
VALIDATED = ("train.eval_every=1", "data.val_ids=3")


@pytest.fixture(scope="module")
def straight_run(tiny_market: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two epochs in one go, evaluated after each epoch: the reference the other tests compare with."""
    out = tmp_path_factory.mktemp("straight")
    summary = train_module.train(tiny_config(tiny_market, *VALIDATED), output_dir=out)
    return {"out": out, "summary": summary, "state": {k: v.clone() for k, v in summary["model"].state_dict().items()}}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_run_writes_config_logs_and_checkpoints(straight_run: dict, tiny_market: Path) -> None:
    out, summary = straight_run["out"], straight_run["summary"]
    config = tiny_config(tiny_market, *VALIDATED)
    assert load_config(out / "config.yaml") == config
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds.count("step") == 4 and kinds.count("epoch") == 2 and kinds.count("val") == 2
    assert kinds.count("test") == 1 and "eval" not in kinds
    assert kinds[kinds.index("test") + 1 :] == ["calibration"] * len(list(out.glob("*calibration.json")))
    step = next(r for r in records if r["type"] == "step")
    assert {"epoch", "step", "loss", "terms", "lr", "images_per_s"} <= step.keys() and step["terms"]
    evals = [r for r in records if r["type"] == "val"]
    assert all(0.0 <= r["rank1"] <= 1.0 and 0.0 <= r["mAP"] <= 1.0 for r in evals)
    assert any((out / "tb").iterdir())
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 2 and last["config"] == config_to_dict(config) and last["input_size"] == [64, 32]
    assert {"optimizer", "scheduler", "scaler", "rng", "metrics", "model_args"} <= last.keys()
    best = load_checkpoint(out / "best.pt")
    best_eval = max(evals, key=lambda r: r["mAP"])
    assert best["epoch"] == best_eval["epoch"] and best["best_metric"] == pytest.approx(best_eval["mAP"])
    assert summary["best_mAP"] == pytest.approx(best_eval["mAP"])
    test = next(r for r in records if r["type"] == "test")
    assert summary["final_metrics"]["mAP"] == test["mAP"] and last["test_metrics"]["mAP"] == test["mAP"]
    model, _ = load_model(out / "last.pt")
    assert not model.training
    assert_same_weights(model.state_dict(), straight_run["state"])


def test_validation_ids_write_each_checkpoints_threshold(straight_run: dict, tiny_market: Path) -> None:
    """With data.val_ids, last.pt's and best.pt's same-person thresholds are chosen on the validation identities by
    `spanet calibrate`'s method and default target, each with its own checkpoint's fingerprints, and found by
    `--threshold auto` for either checkpoint."""
    import numpy as np

    from spanet.data.datasets import load_dataset
    from spanet.data.split import hold_out_identities
    from spanet.evaluation.calibration import DEFAULT_TARGET_FPR, resolve_threshold
    from spanet.evaluation.verification import calibrate_threshold
    from spanet.features import FeatureExtractor

    out = straight_run["out"]
    _, validation = hold_out_identities(load_dataset("synthetic", tiny_market), num_ids=3, seed=0)
    samples = [*validation.query, *validation.gallery]
    logged = {r["checkpoint"]: r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
              if r["type"] == "calibration"}  # fmt: skip
    assert set(logged) == {"last.pt", "best.pt"}
    for name, file in (("last.pt", "calibration.json"), ("best.pt", "best.calibration.json")):
        record = json.loads((out / file).read_text())
        extractor = FeatureExtractor(out / name, device="cpu")
        info = extractor.info
        assert (record["weights_fingerprint"], record["args_fingerprint"]) == (info["weights_fingerprint"],
                                                                               info["args_fingerprint"])
        expected = calibrate_threshold(extractor([s.path for s in samples]), np.array([s.pid for s in samples]),
                                       np.array([s.camid for s in samples]), target_fpr=DEFAULT_TARGET_FPR)
        assert record["threshold"] == pytest.approx(expected["threshold"], rel=1e-5)
        assert record["target"] == {"fpr": DEFAULT_TARGET_FPR} and record["checkpoint"] == str(out / name)
        assert record["calibration_data"]["identities"] == 3 and "validation" in record["calibration_data"]["dataset"]
        assert logged[name]["threshold"] == record["threshold"] and logged[name]["file"] == file
        assert resolve_threshold("auto", checkpoint=out / name, info=info) == record["threshold"]
    last, best = (load_checkpoint(out / n) for n in ("last.pt", "best.pt"))
    same = all(torch.equal(last["model"][k], best["model"][k]) for k in last["model"])
    assert same == (json.loads((out / "calibration.json").read_text())["weights_fingerprint"]
                    == json.loads((out / "best.calibration.json").read_text())["weights_fingerprint"])


def test_training_changes_the_weights(straight_run: dict, tiny_market: Path) -> None:
    num_classes = load_checkpoint(straight_run["out"] / "last.pt")["model_args"]["num_classes"]
    torch.manual_seed(0)  # the loop seeds the initial weights with train.seed
    initial = train_module.build_model(tiny_config(tiny_market).model, num_classes=num_classes).state_dict()
    changed = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, straight_run["state"][k])]
    assert len(changed) > len(initial) // 2


def test_one_epoch_then_resume_equals_two_epochs(straight_run: dict, tiny_market: Path, tmp_path: Path) -> None:
    first = train_module.train(tiny_config(tiny_market, "optim.epochs=1", *VALIDATED), output_dir=tmp_path)
    assert not first["interrupted"]
    resumed = train_module.train(tiny_config(tiny_market, *VALIDATED), output_dir=tmp_path, resume=True)
    assert_same_weights(resumed["model"].state_dict(), straight_run["state"])
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def test_sigint_mid_epoch_checkpoints_and_resumes_exactly(
    straight_run: dict, tiny_market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import spanet.losses

    real = spanet.losses.weigh_terms
    calls = []

    def weigh_and_interrupt(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 1:  # a real signal arrives during the first step of epoch 1
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(spanet.losses, "weigh_terms", weigh_and_interrupt)
    config = tiny_config(tiny_market, *VALIDATED)
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
    stopped = train_module.train(config, output_dir=tmp_path)
    assert stopped["interrupted"] and len(calls) == 1
    assert "--resume" in capsys.readouterr().err
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert (checkpoint["epoch"], checkpoint["step_in_epoch"]) == (0, 1)  # the step in flight was finished
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers restored
    monkeypatch.setattr(spanet.losses, "weigh_terms", real)
    resumed = train_module.train(config, output_dir=tmp_path, resume=True)
    assert not resumed["interrupted"]
    assert_same_weights(resumed["model"].state_dict(), straight_run["state"])


def test_nan_loss_stops_and_keeps_last_checkpoint(
    straight_run: dict, tiny_market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spanet.losses

    train_module.train(tiny_config(tiny_market, "optim.epochs=1"), output_dir=tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    real = spanet.losses.weigh_terms
    monkeypatch.setattr(spanet.losses, "weigh_terms", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(train_module.TrainingDiverged, match="nan.*epoch 2"):
        train_module.train(tiny_config(tiny_market), output_dir=tmp_path, resume=True)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_huge_lr_diverges_cleanly(tiny_market: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_market, "optim.lr=1e12", "optim.epochs=3", "optim.milestones=[]")
    with pytest.raises(SpanetError, match="nan|inf"):
        train_module.train(config, output_dir=tmp_path)


def test_resume_with_other_model_names_the_keys(straight_run: dict, tiny_market: Path) -> None:
    config = tiny_config(tiny_market, "model.dropout=0.3", "model.num_parts=3")
    with pytest.raises(SpanetError) as info:
        train_module.train(config, output_dir=straight_run["out"], resume=True)
    assert "model.dropout" in str(info.value) and "model.num_parts" in str(info.value)
    assert "model.backbone" not in str(info.value)


def test_output_folder_guards(straight_run: dict, tiny_market: Path, tmp_path: Path) -> None:
    with pytest.raises(SpanetError, match="--resume"):
        train_module.train(tiny_config(tiny_market), output_dir=straight_run["out"])
    with pytest.raises(SpanetError, match="does not exist"):
        train_module.train(tiny_config(tiny_market), output_dir=tmp_path / "empty", resume=True)
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(SpanetError, match="is a file"):
        train_module.train(tiny_config(tiny_market), output_dir=tmp_path / "a_file")


def test_a_finished_run_without_last_pt_is_never_overwritten(tiny_market: Path, tmp_path: Path) -> None:
    """People delete last.pt to save disk: the folder still holds a run, refused unless --overwrite moves it aside."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"the user's best model")
    (run / "config.yaml").write_text("the user's config")
    config = tiny_config(tiny_market, "optim.epochs=1", "train.max_steps_per_epoch=1")
    with pytest.raises(SpanetError, match="is not empty"):
        train_module.train(config, output_dir=run)
    assert (run / "best.pt").read_bytes() == b"the user's best model"
    train_module.train(config, output_dir=run, overwrite=True)
    (aside,) = tmp_path.glob("run.replaced-*")
    assert (aside / "best.pt").read_bytes() == b"the user's best model" and (aside / "config.yaml").is_file()
    assert (run / "last.pt").is_file() and len((run / "log.jsonl").read_text().splitlines()) >= 1


def test_bf16_autocast_and_channels_last_on_cpu(tiny_market: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_market, "train.amp=bf16", "train.channels_last=true", "optim.epochs=1",
                         "train.max_steps_per_epoch=1")  # fmt: skip
    summary = train_module.train(config, output_dir=tmp_path)
    run, record = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()[:2]]
    assert run["type"] == "run" and run["precision"]["amp"] == "bf16" and run["precision"]["channels_last"]
    assert record["type"] == "step" and torch.isfinite(torch.tensor(record["loss"]))
    assert summary["model"].state_dict()  # trained in bf16 autocast, weights stay fp32
    assert all(p.dtype == torch.float32 for p in summary["model"].parameters())


def test_fp16_on_cpu_is_refused(tiny_market: Path, tmp_path: Path) -> None:
    with pytest.raises(SpanetError, match="fp16 needs CUDA"):
        train_module.train(tiny_config(tiny_market, "train.amp=fp16"), output_dir=tmp_path)


def test_lr_schedule_warmup_and_milestones() -> None:
    optim = OptimConfig(lr=0.1, milestones=(4, 6), gamma=0.1, warmup_epochs=2.0)
    assert train_module.lr_factor(0.0, optim) < 0.01
    assert train_module.lr_factor(1.0, optim) == pytest.approx(0.5, abs=1e-3)
    assert train_module.lr_factor(3.0, optim) == 1.0
    assert train_module.lr_factor(4.0, optim) == pytest.approx(0.1)
    assert train_module.lr_factor(7.5, optim) == pytest.approx(0.01)


def test_optimizer_backbone_at_reduced_rate(tiny_market: Path) -> None:
    config = tiny_config(tiny_market, "optim.backbone_lr_mult=0.1", "optim.lr=0.1")
    model = train_module.build_model(config.model, num_classes=4)
    optimizer = train_module.build_optimizer(model, config.optim)
    backbone, heads = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(0.01) and heads["lr"] == pytest.approx(0.1)
    grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert grouped == {id(p) for p in model.parameters()}  # every parameter trained, none twice
    assert len(backbone["params"]) + len(heads["params"]) == len(grouped)


def test_cli_train_and_one_line_errors(tiny_market: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from spanet.cli import main

    config_file = tmp_path / "tiny.yaml"
    from spanet.config import save_config

    save_config(tiny_config(tiny_market), config_file)
    out = tmp_path / "run"
    code = main(["train", "--config", str(config_file), "--output", str(out), "--epochs", "1",
                 "--set", "train.max_steps_per_epoch=1", "--set", "train.eval_every=1", "--set", "data.val_ids=3"])
    assert code == 0 and (out / "last.pt").is_file() and (out / "best.pt").is_file()
    assert load_config(out / "config.yaml").optim.epochs == 1
    printed = capsys.readouterr().out
    assert "test (final model): rank-1" in printed and "best validation mAP" in printed
    code = main(["train", "--output", str(out), "--resume", "--epochs", "2"])  # config.yaml of the run is reused
    assert code == 0 and load_checkpoint(out / "last.pt")["epoch"] == 2
    capsys.readouterr()
    code = main(["train", "--config", str(config_file), "--output", str(tmp_path / "x"), "--set", "optim.lrr=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "optim.lrr" in err


def test_train_step_updates_the_weights_and_returns_the_weighted_terms() -> None:
    from spanet.config import LossConfig
    from spanet.losses import weigh_terms
    from spanet.model import SPANet
    from spanet.training.loop import StepSettings, train_step

    torch.manual_seed(0)
    model = SPANet(num_classes=5, backbone="resnet18").train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    settings = StepSettings(loss=LossConfig(weighting="official"), optim=OptimConfig())
    loss, terms = train_step(model, optimizer, torch.rand(4, 3, 64, 32), torch.tensor([0, 1, 2, 3]), settings=settings)
    assert not loss.requires_grad and set(terms) >= {"global", "part1", "ds1"}
    assert torch.allclose(loss, weigh_terms(terms, weighting="official"))
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert len(changed) > len(before) // 2


def test_the_official_code_preset_trains_and_its_resolved_config_says_so(tiny_market: Path, tmp_path: Path) -> None:
    from spanet.cli import main

    out = tmp_path / "official"
    tiny = ["data.height=64", "data.width=32", "data.batch_size=8", "data.num_workers=0", "model.backbone=resnet18",
            "model.pretrained=null", "train.max_steps_per_epoch=1", "train.eval_every=0", "train.progress=false"]
    code = main(["train", "--config", "configs/market1501_official.yaml", "--dataset", "synthetic", "--data-root",
                 str(tiny_market), "--output", str(out), "--epochs", "1", "--device", "cpu",
                 *(arg for item in tiny for arg in ("--set", item))])  # fmt: skip
    assert code == 0
    resolved = load_config(out / "config.yaml")
    assert (resolved.model.attention, resolved.model.sa_pooling, resolved.model.head_init) == ("l1", "mean", "official")
    assert resolved.loss.weighting == "official" and resolved.data.erasing_p == 0.0 and resolved.model.dropout == 0.5
    assert resolved.optim.milestones == (40, 80)
    model, _ = load_model(out / "last.pt")
    assert model.ds_heads[0].sa_ds.mode == "l1" and model.ds_heads[0].sa_ds.pooling == "mean"


def test_best_pt_holds_only_what_using_the_model_needs(straight_run: dict) -> None:
    out = straight_run["out"]
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert "optimizer" not in best and "rng" not in best and "optimizer" in last
    assert (out / "best.pt").stat().st_size < (out / "last.pt").stat().st_size
    load_model(out / "best.pt")  # still a complete model


def test_a_failing_evaluation_keeps_the_epoch_it_evaluates(
    tiny_market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def evaluation_that_fails(*args, **kwargs):
        raise SpanetError("evaluation failed")

    import spanet.training.measure as measure

    monkeypatch.setattr(measure, "evaluate_run", evaluation_that_fails)
    with pytest.raises(SpanetError, match="evaluation failed"):
        train_module.train(tiny_config(tiny_market, "train.eval_every=1", "optim.epochs=1"), output_dir=tmp_path)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # the trained epoch was saved before evaluating it


def test_attention_spread_is_logged_every_epoch_and_plotted(straight_run: dict, tmp_path: Path) -> None:
    from spanet.run_dir import read_log
    from spanet.viz.figures import plot_training_curves

    records, _ = read_log(straight_run["out"] / "log.jsonl")
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    spread = epochs[0]["attention"]
    assert set(spread) >= {"ds1", "ds2", "ds3"} and 0 < spread["ds1"]["fraction"] <= 1 <= spread["ds1"]["positions"]
    assert "attention" in plot_training_curves(records, out_dir=tmp_path)


def test_without_validation_identities_no_checkpoint_is_picked_and_the_test_split_is_evaluated_once(
    tiny_market: Path, tmp_path: Path
) -> None:
    """No model selection on the test split: with data.val_ids=0 there is no periodic evaluation and no best.pt."""
    summary = train_module.train(tiny_config(tiny_market, "train.eval_every=1"), output_dir=tmp_path)
    kinds = [json.loads(line)["type"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert kinds.count("test") == 1 and "val" not in kinds and "eval" not in kinds
    assert not (tmp_path / "best.pt").exists() and summary["best_checkpoint"] is None
    assert summary["final_metrics"]["rank1"] >= 0.0


def test_validation_identities_are_held_out_of_training() -> None:
    from spanet.data.datasets import ReidDataset, Sample
    from spanet.data.split import hold_out_identities

    train = tuple(Sample(f"{pid}_{cam}_{i}.jpg", pid, cam) for pid in range(10, 16) for cam in (0, 1) for i in range(2))
    dataset = ReidDataset(name="d", root=Path("."), train=train, query=(), gallery=())
    kept, val = hold_out_identities(dataset, num_ids=2, seed=0)
    held = {s.pid for s in val.query + val.gallery}
    assert len(held) == 2 and kept.num_train_ids == 4
    assert {s.path for s in kept.train}.isdisjoint({s.path for s in val.query + val.gallery})
    assert sorted({s.pid for s in kept.train}) == [0, 1, 2, 3]  # relabelled
    assert len(val.query) == 4 and len(val.gallery) == 4  # one query per identity and camera
    again, _ = hold_out_identities(dataset, num_ids=2, seed=0)
    assert again == kept  # seeded
    with pytest.raises(SpanetError, match="val_ids"):
        hold_out_identities(dataset, num_ids=6, seed=0)


def test_a_failed_final_test_is_evaluated_on_resume(
    straight_run: dict, tiny_market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every epoch trained, then the final test failed: resuming trains nothing and produces the test metrics."""
    real = train_module.final_test  # (imported from spanet.training.measure)

    def final_test_that_fails(*args, **kwargs):
        raise SpanetError("gallery image unreadable")

    monkeypatch.setattr(train_module, "final_test", final_test_that_fails)
    with pytest.raises(SpanetError, match="unreadable"):
        train_module.train(tiny_config(tiny_market, *VALIDATED), output_dir=tmp_path)
    assert not load_checkpoint(tmp_path / "last.pt")["test_metrics"]
    monkeypatch.setattr(train_module, "final_test", real)
    resumed = train_module.train(tiny_config(tiny_market, *VALIDATED), output_dir=tmp_path, resume=True)
    assert resumed["final_metrics"] == straight_run["summary"]["final_metrics"]
    assert load_checkpoint(tmp_path / "last.pt")["test_metrics"] == resumed["final_metrics"]
    again = train_module.train(tiny_config(tiny_market, *VALIDATED), output_dir=tmp_path, resume=True)
    assert again["final_metrics"] == resumed["final_metrics"]  # kept, not evaluated a second time
    kinds = [json.loads(line)["type"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert kinds.count("test") == 1


def test_resume_applies_the_configs_optimiser_settings(tiny_market: Path, tmp_path: Path) -> None:
    """`--resume --set optim.lr=…` (what a divergence message advises) trains at the new rate, as the log says."""
    train_module.train(tiny_config(tiny_market, "optim.epochs=1"), output_dir=tmp_path)
    config = tiny_config(tiny_market, "optim.lr=0.005", "optim.weight_decay=0.001")
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    state = train_module._build_state(config, num_classes=checkpoint["model_args"]["num_classes"],
                                      device=torch.device("cpu"), checkpoint=checkpoint)  # fmt: skip
    assert [g["base_lr"] for g in state.optimizer.param_groups] == [0.005, 0.005]
    assert {g["weight_decay"] for g in state.optimizer.param_groups} == {0.001}
    assert state.optimizer.state_dict()["state"]  # the momentum buffers still come from the checkpoint


def test_resume_neither_downloads_nor_compares_the_initial_weights(
    tiny_market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started from ImageNet weights resumes on a node without network (and with a local weights path)."""
    import spanet.model

    train_module.train(tiny_config(tiny_market, "optim.epochs=1"), output_dir=tmp_path)

    def no_download(*args, **kwargs):
        raise SpanetError("could not download the ImageNet weights")

    monkeypatch.setattr(spanet.model, "_load_backbone_weights", no_download)
    resumed = train_module.train(tiny_config(tiny_market, "model.pretrained=/nowhere/resnet18.pth"),
                                 output_dir=tmp_path, resume=True)  # fmt: skip
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2 and not resumed["interrupted"]


def test_a_stop_at_the_end_of_an_epoch_due_for_validation_validates_it_on_resume(
    straight_run: dict, tiny_market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT during the last step of epoch 1: the run stops at once, and the resumed run validates epoch 1 before
    training epoch 2, so best.pt is chosen among every validated epoch (as in the straight run)."""
    import spanet.losses

    real = spanet.losses.weigh_terms
    calls = []

    def weigh_and_interrupt(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:  # the second and last step of epoch 1
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(spanet.losses, "weigh_terms", weigh_and_interrupt)
    stopped = train_module.train(tiny_config(tiny_market, *VALIDATED), output_dir=tmp_path)
    assert stopped["interrupted"] and load_checkpoint(tmp_path / "last.pt")["validation_pending"]
    monkeypatch.setattr(spanet.losses, "weigh_terms", real)
    resumed = train_module.train(tiny_config(tiny_market, *VALIDATED), output_dir=tmp_path, resume=True)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "val"] == [1, 2]
    assert resumed["best_epoch"] == straight_run["summary"]["best_epoch"]
    assert resumed["best_mAP"] == pytest.approx(straight_run["summary"]["best_mAP"])
    assert not load_checkpoint(tmp_path / "last.pt")["validation_pending"]
