"""The ablation runner: row selection, real (tiny) training runs per row and seed, resumability, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import spanet.training.loop
from spanet.training.ablation import ROW_GROUPS, ROWS, format_markdown, resolve_rows, run_ablation
from spanet.errors import SpanetError


def test_groups_expand_in_order_without_repeats() -> None:
    assert resolve_rows(["table3"]) == ["with-sa", "without-sa"]
    assert resolve_rows(["ds", "table2"])[:2] == ["ds", "backbone"]
    assert len(resolve_rows(["all", "ds"])) == len(ROWS) == len(ROW_GROUPS["all"])


def test_unknown_row_lists_the_valid_ones() -> None:
    with pytest.raises(SpanetError, match="unknown ablation row 'p-sa'.*table2.*p-ds-sa2"):
        resolve_rows(["p-sa"])


def test_table3_differs_only_by_the_attention_on_the_ds_branches() -> None:
    with_sa, without_sa = ROWS["with-sa"].flags, ROWS["without-sa"].flags
    assert {k for k in with_sa if with_sa[k] != without_sa[k]} == {"sa_ds"}


TINY = [
    "data.height=64",
    "data.width=32",
    "data.batch_size=8",
    "data.num_workers=0",
    "model.backbone=resnet18",
    "model.reduced_dim=32",
    "optim.lr=0.02",
    "optim.backbone_lr_mult=1.0",
    "optim.epochs=1",
    "optim.milestones=[1]",
    "train.device=cpu",
    "train.eval_every=0",  # the runner must still evaluate the last epoch
    "train.eval_batch_size=32",
    "train.max_steps_per_epoch=1",
    "train.progress=false",
]


def test_runs_every_row_and_seed_and_resumes(tiny_market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ["data.dataset=synthetic", f"data.root={tiny_market}", *TINY]
    result = run_ablation(config_path=None, rows=["backbone", "with-sa"], seeds=2, output_dir=tmp_path, overrides=overrides)

    assert list(result["rows"]) == ["backbone", "with-sa"]
    for key, row in result["rows"].items():
        assert len(row["rank1"]["values"]) == 2 and len(row["mAP"]["values"]) == 2
        assert all(0.0 <= v <= 100.0 for v in row["rank1"]["values"] + row["mAP"]["values"])
        for seed in range(2):
            (run_dir,) = (tmp_path / "runs" / key).glob(f"*/seed{seed}")  # runs/ROW/SETTINGS-DIGEST/seedN
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
            assert config["train"]["seed"] == seed
            assert {name: config["model"][name] for name in ROWS[key].flags} == ROWS[key].flags
            # Table 2 rows are trained without random erasing (paper §5.3), Table 3 rows with it.
            assert config["data"]["erasing_p"] == (0.0 if ROWS[key].table == 2 else 0.5)
            stored = json.loads((run_dir / "result.json").read_text())
            assert 100.0 * stored["rank1"] == pytest.approx(row["rank1"]["values"][seed])

    assert json.loads((tmp_path / "ablation.json").read_text()) == result
    markdown = (tmp_path / "ablation.md").read_text()
    assert "| Backbone |" in markdown and "| +SA (full model) |" in markdown and "84.8 / 67.0" in markdown

    # A second call with the same settings finds every result.json and trains nothing: make training impossible.
    (result_file,) = (tmp_path / "runs" / "backbone").glob("*/seed1/result.json")
    stored = json.loads(result_file.read_text())
    result_file.write_text(json.dumps({**stored, "rank1": 0.5, "mAP": 0.25}))
    monkeypatch.setattr(spanet.training.loop, "train", _no_training)
    again = run_ablation(config_path=None, rows=["backbone"], seeds=2, output_dir=tmp_path, overrides=overrides)
    assert again["rows"]["backbone"]["rank1"]["values"][1] == pytest.approx(50.0)


def _no_training(*args: object, **kwargs: object) -> None:
    raise AssertionError("trained although every cell had a result for these settings")


def test_markdown_shows_mean_and_std() -> None:
    result = {
        "seeds": 2,
        "rows": {
            "ds": {
                "label": "Backbone + DS",
                "table": 2,
                "flags": ROWS["ds"].flags,
                "paper": {"rank1": 86.2, "mAP": 68.3},
                "rank1": {"values": [50.0, 60.0], "mean": 55.0, "std": 7.0710678},
                "mAP": {"values": [40.0, 40.0], "mean": 40.0, "std": 0.0},
            }
        },
    }
    text = format_markdown(result)
    assert "| Backbone + DS |  | ✓ |  |  | 55.0 ± 7.1 | 40.0 ± 0.0 | 86.2 / 68.3 |" in text
    assert "Table 3" not in text


def test_a_diverged_run_is_recorded_and_the_other_rows_go_on(
    tiny_market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spanet.training.loop

    real_train = spanet.training.loop.train

    def train_that_diverges_without_parts(config, *, output_dir, resume=False, overwrite=False):
        if not config.model.parts:
            raise spanet.training.loop.TrainingDiverged("the loss became nan at epoch 1, step 1")
        return real_train(config, output_dir=output_dir, resume=resume, overwrite=overwrite)

    monkeypatch.setattr(spanet.training.loop, "train", train_that_diverges_without_parts)
    overrides = ["data.dataset=synthetic", f"data.root={tiny_market}", *TINY]
    result = run_ablation(config_path=None, rows=["ds", "with-sa"], seeds=1, output_dir=tmp_path, overrides=overrides)

    assert result["rows"]["ds"]["diverged_seeds"] == [0] and result["rows"]["ds"]["rank1"]["mean"] is None
    assert result["rows"]["with-sa"]["diverged_seeds"] == [] and result["rows"]["with-sa"]["rank1"]["mean"] is not None
    assert "| Backbone + DS |  | ✓ |  |  | diverged (1/1) | diverged (1/1) |" in (tmp_path / "ablation.md").read_text()


def test_variants_run_the_same_rows_under_each_reading(tiny_market: Path, tmp_path: Path) -> None:
    from spanet.cli import main

    args = ["ablation", "--config", "configs/cpu_demo.yaml", "--rows", "with-sa", "--seeds", "1", "--output",
            str(tmp_path), "--data-root", str(tiny_market), "--variant", "sum", "model.sa_pooling=sum",
            "--variant", "official", "model.attention=l1", "model.sa_pooling=mean"]  # fmt: skip
    tiny = [item for key in TINY for item in ("--set", key)]
    assert main([*args, *tiny]) == 0
    for label, (attention, pooling) in {"sum": ("softmax", "sum"), "official": ("l1", "mean")}.items():
        (config_file,) = (tmp_path / label / "runs" / "with-sa").glob("*/seed0/config.yaml")
        config = yaml.safe_load(config_file.read_text())
        assert (config["model"]["attention"], config["model"]["sa_pooling"]) == (attention, pooling)
        assert (tmp_path / label / "ablation.json").is_file()
    combined = json.loads((tmp_path / "ablation.json").read_text())
    assert list(combined["results"]) == ["sum", "official"]
    markdown = (tmp_path / "ablation.md").read_text()
    assert "Variant `sum` (model.sa_pooling=sum)" in markdown and "Variant `official`" in markdown


def test_changed_settings_train_new_cells_and_never_reuse_numbers(tiny_market: Path, tmp_path: Path) -> None:
    """Bug: a re-run into the same output with changed --set values reused the cells trained with the old values
    and labelled the table with the new settings."""
    trained = []
    real_train = spanet.training.loop.train

    def counting_train(config: object, **kwargs: object) -> dict:
        trained.append(config)
        return real_train(config, **kwargs)

    overrides = ["data.dataset=synthetic", f"data.root={tiny_market}", *TINY]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spanet.training.loop, "train", counting_train)
        first = run_ablation(config_path=None, rows=["backbone"], seeds=1, output_dir=tmp_path, overrides=overrides)
        assert len(trained) == 1
        second = run_ablation(config_path=None, rows=["backbone"], seeds=1, output_dir=tmp_path,
                              overrides=[*overrides, "optim.lr=0.001"])  # fmt: skip
        assert len(trained) == 2 and trained[1].optim.lr == 0.001
        again = run_ablation(config_path=None, rows=["backbone"], seeds=1, output_dir=tmp_path, overrides=overrides)
        assert len(trained) == 2  # the first settings' cell is still there and is reused
    assert first["rows"]["backbone"]["settings"] != second["rows"]["backbone"]["settings"]
    assert again["rows"]["backbone"] == first["rows"]["backbone"]
    assert len(list((tmp_path / "runs" / "backbone").iterdir())) == 2


def test_one_seed_shows_no_spread_instead_of_plus_minus_zero() -> None:
    row = {"label": "Backbone", "table": 2, "flags": ROWS["backbone"].flags, "paper": {"rank1": 84.8, "mAP": 67.0},
           "rank1": {"values": [50.0], "mean": 50.0, "std": None}, "mAP": {"values": [40.0], "mean": 40.0, "std": None}}
    text = format_markdown({"seeds": 1, "rows": {"backbone": row}})
    assert "± 0.0" not in text and "50.0 (1 seed, no spread)" in text
