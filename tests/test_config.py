"""Config tree: YAML + overrides, type checking, round trips, and the shipped configs."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml

from spanet.config import Config, ModelConfig, config_from_dict, config_to_dict, load_config, save_config
from spanet.errors import SpanetError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_round_trip_through_dict_and_yaml(tmp_path: Path) -> None:
    config = load_config(None, ["optim.milestones=[10, 20]", "train.amp=bf16"])
    assert config_from_dict(config_to_dict(config)) == config
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_file_then_overrides_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.5\n  weight_decay: 5e-4\ndata:\n  height: 64\n")
    config = load_config(path, ["optim.lr=0.01", "model.pretrained=null", "train.max_steps_per_epoch=3"])
    assert config.optim.lr == 0.01
    assert config.optim.weight_decay == pytest.approx(5e-4)  # PyYAML reads 5e-4 as a string; it must still work
    assert config.data.height == 64 and config.data.width == Config().data.width
    assert config.model.pretrained is None and config.train.max_steps_per_epoch == 3


@pytest.mark.parametrize(
    ("override", "expected_words"),
    [
        ("optim.lrr=0.1", ["optim.lrr", "lr", "backbone_lr_mult"]),
        ("optimizer.lr=0.1", ["optimizer", "data", "model", "optim"]),
        ("optim.lr=fast", ["optim.lr", "number"]),
        ("data.height=12.5", ["data.height", "integer"]),
        ("model.parts=yes please", ["model.parts", "true or false"]),
        ("train.amp=fp8", ["train.amp", "'bf16'"]),
        ("optim.milestones=[a]", ["optim.milestones", "list of an integer"]),
        ("optim.lr", ["section.key=value"]),
    ],
)
def test_bad_overrides_name_the_key(override: str, expected_words: list[str]) -> None:
    with pytest.raises(SpanetError) as info:
        load_config(None, [override])
    for word in expected_words:
        assert word in str(info.value)


def test_unknown_key_in_file_names_file_and_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbone: resnet18\n  dropuot: 0.3\n")
    with pytest.raises(SpanetError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "model.dropuot" in message and "dropout" in message


def test_missing_or_non_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(SpanetError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpanetError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_model_section_matches_spanet_keywords() -> None:
    """`SPANet(num_classes=n, **asdict(cfg.model))` must work: same names as the constructor's keywords."""
    from spanet.model import SPANet

    params = inspect.signature(SPANet).parameters
    config_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert config_fields <= set(params)
    missing = {name for name, p in params.items() if p.kind == p.KEYWORD_ONLY} - config_fields - {"num_classes"}
    assert not missing


@pytest.mark.parametrize("name", ["market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected", "msmt17", "cpu_demo"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    assert isinstance(config, Config)


@pytest.mark.parametrize("name", ["market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected", "msmt17"])
def test_paper_recipe_configs(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    assert (config.data.height, config.data.width, config.data.batch_size) == (384, 128, 48)
    assert config.model.backbone == "resnet50" and config.model.pretrained is not None
    assert (config.optim.lr, config.optim.backbone_lr_mult, config.optim.momentum) == (0.1, 0.1, 0.9)
    assert config.optim.nesterov and config.optim.weight_decay == pytest.approx(5e-4)
    assert config.optim.milestones == (40,) and config.optim.gamma == pytest.approx(0.1) and config.optim.epochs == 60
    assert config.model.dropout == (0.47 if name == "market1501" else 0.5)
    assert config.loss.weighting == "paper" and config.data.flip_p == 0.5 and config.data.erasing_p == 0.5
    assert (config.model.attention, config.model.sa_pooling) == ("softmax", "mean")
    _every_value_has_a_source_comment(CONFIGS / f"{name}.yaml")


@pytest.mark.parametrize("name", ["market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected", "msmt17"])
def test_official_code_configs(name: str) -> None:
    """configs/<dataset>_official.yaml is the official code: L1 SA with mean pooling, unweighted sum of the terms,
    no random erasing, dropout 0.5, lr ×0.1 at 40 and 80 over 100 epochs, PyTorch's default init for DS convs."""
    paper, official = load_config(CONFIGS / f"{name}.yaml"), load_config(CONFIGS / f"{name}_official.yaml")
    assert (official.model.attention, official.model.sa_pooling, official.model.head_init) == ("l1", "mean", "official")
    assert official.loss.weighting == "official" and official.data.erasing_p == 0.0 and official.model.dropout == 0.5
    assert official.optim.milestones == (40, 80) and official.optim.epochs == 100
    same = {"data": ("dataset", "height", "width", "batch_size", "flip_p"), "optim": ("lr", "momentum", "weight_decay")}
    for section, keys in same.items():
        for key in keys:
            assert getattr(getattr(official, section), key) == getattr(getattr(paper, section), key), f"{section}.{key}"
    _every_value_has_a_source_comment(CONFIGS / f"{name}_official.yaml")


def _every_value_has_a_source_comment(path: Path) -> None:
    text = path.read_text()
    for section in ("model", "optim", "loss"):
        for key in yaml.safe_load(text)[section]:
            line = next(line for line in text.splitlines() if line.strip().startswith(f"{key}:"))
            assert "#" in line, f"{path.name}: {section}.{key} has no source comment"


def test_renamed_model_keys_still_load_with_a_warning(tmp_path: Path) -> None:
    """SA1/SA2 were `sa_backbone`/`sa_branches`; old files and overrides keep working and say the new name."""
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  sa_branches: false\n  sa_backbone: true\n")
    with pytest.warns(FutureWarning, match="model.sa_branches is now model.sa_ds"):
        config = load_config(path)
    assert config.model.sa_ds is False and config.model.sa_parts is True
    with pytest.warns(FutureWarning, match="model.sa_backbone is now model.sa_parts"):
        assert load_config(None, ["model.sa_backbone=true"]).model.sa_parts is True
    assert "sa_branches" not in config_to_dict(config)["model"]


@pytest.mark.parametrize(
    "override",
    ["optim.lr=-0.1", "optim.lr=0", "data.batch_size=0", "data.num_workers=-1", "train.eval_every=-1",
     "train.max_steps_per_epoch=0", "optim.epochs=0", "optim.epochs=-1", "data.erasing_p=1.5", "model.dropout=1",
     "optim.milestones=[10, -1]", "train.log_every=0"],
)
def test_values_out_of_range_name_their_key(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(SpanetError, match=key.replace(".", r"\.") + " must be"):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["optim.lr=.nan", "optim.lr=.inf", "data.flip_p=.nan", "optim.gamma=-.inf"])
def test_non_finite_numbers_are_out_of_range(override: str) -> None:
    """NaN compares False with every bound, so `optim.lr=.nan` passed the range check and trained into NaN."""
    key = override.split("=")[0]
    with pytest.raises(SpanetError, match=key.replace(".", r"\.") + " must be a finite number"):
        load_config(None, [override])


def test_an_out_of_range_override_is_blamed_not_the_file_it_overrides(tmp_path: Path) -> None:
    """`--config good.yaml --epochs 0` said `good.yaml: optim.epochs must be ≥ 1`, sending the user to a file that
    holds `epochs: 24`."""
    good = tmp_path / "good.yaml"
    good.write_text("optim:\n  epochs: 24\n")
    with pytest.raises(SpanetError) as info:
        load_config(good, ["optim.epochs=0"])
    assert str(info.value).startswith("--set 'optim.epochs=0': optim.epochs must be ≥ 1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  epochs: 0\n")
    with pytest.raises(SpanetError, match=f"^{bad}: optim.epochs must be ≥ 1"):
        load_config(bad, ["optim.lr=0.05"])  # a mistake in the file is still the file's


def test_epochs_zero_from_the_cli_is_an_error_not_a_silent_success(tmp_path: Path, capsys) -> None:
    from spanet.cli import main

    code = main(["train", "--data-root", str(tmp_path), "--output", str(tmp_path / "run"), "--epochs", "0"])
    assert code == 2 and "optim.epochs must be ≥ 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_bad_flag_value_is_blamed_on_the_flag_not_on_set(tmp_path: Path, capsys) -> None:
    """Poor: `--epochs -1` said "--set 'optim.epochs=-1'", an option the user never typed."""
    from spanet.cli import main

    assert main(["train", "--data-root", str(tmp_path), "--output", str(tmp_path / "run"), "--epochs", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --epochs") and "--set" not in err and "optim.epochs must be ≥ 1" in err


def test_yaml_syntax_error_keeps_line_and_column_and_a_folder_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  milestones: [40\n")
    with pytest.raises(SpanetError, match=r"bad\.yaml is not valid YAML: .* at line 4, column 1"):
        load_config(bad)
    with pytest.raises(SpanetError, match="is a folder; pass a YAML file"):
        load_config(tmp_path)
