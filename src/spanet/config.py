"""One dataclass tree for a training run, loaded from YAML and overridden from the command line.

A run is described by plain values only, so the resolved tree can be written next to the run (`config.yaml`) and
stored inside every checkpoint as a dict. Unknown keys and wrong types are user mistakes: they raise `SpanetError`
naming the key and listing what is valid, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from spanet.errors import SpanetError

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "LossConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "config_to_dict",
    "config_from_dict",
    "apply_overrides",
    "save_config",
    "yaml_scalar",
    "RENAMED_MODEL_KEYS",
    "upgrade_model_keys",
]

# Model keys renamed so that one concept has one name (config key = SPANet keyword = attribute); the old ones still
# load, with a warning. SA1 acts on the stage-4 stripes (parts), SA2 on the deeply supervised branches (ds).
RENAMED_MODEL_KEYS = {"sa_backbone": "sa_parts", "sa_branches": "sa_ds"}


@dataclass(frozen=True)
class DataConfig:
    """Which images, at what size, in what batches."""

    dataset: str = "market1501"
    root: str = ""  # empty: must come from the YAML file or --data-root
    height: int = 384
    width: int = 128
    batch_size: int = 48  # global batch; each of N processes gets batch_size / N
    num_instances: int = 0  # 0: plain shuffling; K > 0: P×K identity batches with K images per identity
    num_workers: int = 4
    flip_p: float = 0.5
    erasing_p: float = 0.5
    skip_corrupt: bool = False  # decode every image first and leave out (and list) the corrupt ones
    val_ids: int = 0  # training identities held out for validation (periodic evaluation, best.pt); 0: none
    test_fraction: float = 0.5  # folders/list without a given split: identities held out for testing
    split_seed: int = 0  # ... and the seed of that identity split


@dataclass(frozen=True)
class ModelConfig:
    """Exactly the keyword arguments of `spanet.model.SPANet` except `num_classes` (taken from the data)."""

    backbone: str = "resnet50"
    pretrained: str | None = None
    parts: bool = True
    deep_supervision: bool = True
    sa_ds: bool = True
    sa_parts: bool = False
    attention: Literal["softmax", "softmax_mean", "l1"] = "softmax"
    sa_pooling: Literal["mean", "sum"] = "mean"  # the paper's GAP of F ⊙ A; "sum" = Σ A F (checkpoints before it)
    head_init: Literal["spanet", "official"] = "spanet"  # official: PyTorch's default init for the DS 1×1 convs
    num_parts: int = 6
    reduced_dim: int = 256
    dropout: float = 0.5


@dataclass(frozen=True)
class OptimConfig:
    """SGD with a step schedule (paper §4); epochs are counted from 0."""

    lr: float = 0.1
    backbone_lr_mult: float = 0.1  # pretrained layers train at this fraction of lr
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (40,)
    gamma: float = 0.1
    epochs: int = 60
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many epochs (0: none)


@dataclass(frozen=True)
class LossConfig:
    """How the named classification terms are combined."""

    weighting: Literal["paper", "official", "means"] = "paper"
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything about running the loop that does not change the maths."""

    seed: int = 0
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:N
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"  # fp16 on CUDA, bf16 on CPUs with native bf16, else fp32
    channels_last: bool | Literal["auto"] = "auto"  # with fp16 on CUDA and bf16 on AMX (runtime.choose_precision)
    compile: bool = False  # torch.compile the model: fp32 steps ~1.2x faster on CPU, costs ~60-80 s at the start
    eval_every: int = 10  # evaluate every N epochs and after the last one; 0: never
    eval_batch_size: int = 64
    eval_flip: bool = False  # average features of the image and its mirror at evaluation
    log_every: int = 20  # steps between log lines, which are also the only host reads of the loss
    max_steps_per_epoch: int | None = None  # cut epochs short (tests, demos); None: the whole sampler
    progress: bool = True


@dataclass(frozen=True)
class Config:
    """The resolved description of one training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_SECTIONS: dict[str, type] = typing.get_type_hints(Config)

# Allowed ranges, checked with the key named: (lowest, lowest allowed?, highest, highest allowed?); None = unbounded.
_RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "data.height": (1, True, None, False),
    "data.width": (1, True, None, False),
    "data.batch_size": (1, True, None, False),
    "data.num_instances": (0, True, None, False),
    "data.num_workers": (0, True, None, False),
    "data.val_ids": (0, True, None, False),
    "data.flip_p": (0, True, 1, True),
    "data.erasing_p": (0, True, 1, True),
    "model.num_parts": (1, True, None, False),
    "model.reduced_dim": (1, True, None, False),
    "model.dropout": (0, True, 1, False),
    "optim.lr": (0, False, None, False),
    "optim.backbone_lr_mult": (0, True, None, False),
    "optim.momentum": (0, True, 1, False),
    "optim.weight_decay": (0, True, None, False),
    "optim.milestones": (0, True, None, False),
    "optim.gamma": (0, False, None, False),
    "optim.epochs": (1, True, None, False),
    "optim.warmup_epochs": (0, True, None, False),
    "loss.label_smoothing": (0, True, 1, False),
    "train.eval_every": (0, True, None, False),
    "train.eval_batch_size": (1, True, None, False),
    "train.log_every": (1, True, None, False),
    "train.max_steps_per_epoch": (1, True, None, False),
}


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dict (lists instead of tuples) that YAML and `torch.load(weights_only=True)` both accept."""

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    return {
        section: {key: plain(value) for key, value in dataclasses.asdict(getattr(config, section)).items()}
        for section in _SECTIONS
    }


def config_from_dict(values: dict[str, Any], *, source: str = "config") -> Config:
    """Build a `Config` from a (possibly partial) nested dict; missing keys take their defaults."""
    if not isinstance(values, dict):
        raise SpanetError(f"{source}: expected a mapping of sections ({', '.join(_SECTIONS)}), got {values!r}")
    unknown = sorted(set(values) - set(_SECTIONS))
    if unknown:
        raise SpanetError(f"{source}: unknown section {unknown[0]!r}; valid sections: {', '.join(_SECTIONS)}")
    sections = {}
    for name, cls in _SECTIONS.items():
        raw = values.get(name) or {}
        if not isinstance(raw, dict):
            raise SpanetError(f"{source}: section {name!r} must be a mapping of keys, got {raw!r}")
        sections[name] = _build_section(cls, raw, prefix=name, source=source)
    config = Config(**sections)
    _check_ranges(config, source=source)
    return config


def apply_overrides(values: dict[str, Any], overrides: list[str], *, source: str = "--set") -> dict[str, Any]:
    """Return a copy of the nested dict with each `section.key=value` applied (values parsed as YAML scalars)."""
    result = {section: dict(content or {}) for section, content in values.items()}
    for item in overrides:
        dotted, sep, text = item.partition("=")
        parts = dotted.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise SpanetError(f"{source} {item!r}: expected section.key=value, e.g. optim.lr=0.05")
        section, key = parts
        if section == "model" and key in RENAMED_MODEL_KEYS:
            key = next(iter(upgrade_model_keys({key: None}, source=source)))
            dotted = f"model.{key}"
        if section not in _SECTIONS:
            raise SpanetError(f"{source} {item!r}: unknown section {section!r}; valid sections: {', '.join(_SECTIONS)}")
        valid = [f.name for f in dataclasses.fields(_SECTIONS[section])]
        if key not in valid:
            raise SpanetError(f"{source} {item!r}: unknown key {dotted!r}; valid keys in {section}: {', '.join(valid)}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise SpanetError(f"{source} {item!r}: value is not valid YAML ({exc.__class__.__name__})") from None
        expected = typing.get_type_hints(_SECTIONS[section])[key]
        value = _check_value(value, expected, key=dotted, source=f"{source} {item!r}")
        _check_range(dotted, value, source=f"{source} {item!r}")  # blame the override, not the file it overrides
        result.setdefault(section, {})[key] = value
    return result


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then `section.key=value` overrides, checked against the field types."""
    values: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if path.is_dir():
            raise SpanetError(f"config {path} is a folder; pass a YAML file such as configs/market1501.yaml")
        if not path.is_file():
            raise SpanetError(f"config file {path} does not exist; pass an existing YAML config file")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise SpanetError(f"config file {path} is not a text file; pass a YAML config file") from None
        except yaml.YAMLError as exc:
            raise SpanetError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
        if not isinstance(values, dict):
            raise SpanetError(f"config file {path} must hold a mapping of sections ({', '.join(_SECTIONS)})")
    config_from_dict(values, source=source)  # report file mistakes against the file, before overrides
    values = apply_overrides(values, list(overrides or []))
    return config_from_dict(values, source=source)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (the format `load_config` reads back)."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)
    Path(path).write_text(text, encoding="utf-8")


def yaml_scalar(value: object) -> str:
    """`value` as YAML text for a `section.key=value` override; strings are quoted so that a folder named e.g.
    `1e5` or `null` stays a string."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def upgrade_model_keys(values: dict[str, Any], *, source: str) -> dict[str, Any]:
    """A copy of a model section / model_args with renamed keys under their new names (a `FutureWarning` per key)."""
    upgraded = dict(values)
    for old, new in RENAMED_MODEL_KEYS.items():
        if old in upgraded:
            warnings.warn(f"{source}: model.{old} is now model.{new}; the old name still works but will be removed",
                          FutureWarning, stacklevel=3)  # fmt: skip
            value = upgraded.pop(old)
            upgraded.setdefault(new, value)
    return upgraded


def _build_section(cls: type, raw: dict[str, Any], *, prefix: str, source: str) -> Any:
    if cls is ModelConfig:
        raw = upgrade_model_keys(raw, source=source)
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise SpanetError(
            f"{source}: unknown key {prefix}.{unknown[0]}; valid keys in {prefix}: {', '.join(valid)}"
        )
    checked = {key: _check_value(value, hints[key], key=f"{prefix}.{key}", source=source) for key, value in raw.items()}
    return cls(**checked)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's problem with its line and column (1-based), on one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def _check_ranges(config: Config, *, source: str) -> None:
    """Raise naming the first key whose value is outside its range (e.g. a negative lr, an empty batch)."""
    for dotted in _RANGES:
        section, key = dotted.split(".")
        _check_range(dotted, getattr(getattr(config, section), key), source=source)


def _check_range(dotted: str, value: Any, *, source: str) -> None:
    """Raise unless every number in `value` (one number or a list) is finite and inside the range of `dotted`."""
    if dotted not in _RANGES:
        return
    low, low_ok, high, high_ok = _RANGES[dotted]
    for item in value if isinstance(value, (tuple, list)) else (value,):
        if item is None:
            continue
        too_low = low is not None and (item < low or (item == low and not low_ok))
        too_high = high is not None and (item > high or (item == high and not high_ok))
        if too_low or too_high or not math.isfinite(item):  # NaN compares False with every bound
            lower = "" if low is None else f"{'≥' if low_ok else '>'} {low}"
            upper = "" if high is None else f"{'≤' if high_ok else '<'} {high}"
            bounds = " and ".join(b for b in (lower, upper) if b)
            finite = "" if math.isfinite(item) else "a finite number "
            raise SpanetError(f"{source}: {dotted} must be {finite}{bounds}, got {value!r}")


def _check_value(value: Any, expected: Any, *, key: str, source: str) -> Any:
    """Return `value` converted to the field type, or raise naming the key and the expected type."""
    converted = _convert(value, expected)
    if converted is _INVALID:
        raise SpanetError(f"{source}: {key} must be {_describe(expected)}, got {value!r}")
    return converted


_INVALID = object()


def _convert(value: Any, expected: Any) -> Any:
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            converted = _convert(value, option)
            if converted is not _INVALID:
                return converted
        return _INVALID
    if origin is Literal:
        return value if isinstance(value, str) and value in args else _INVALID
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value] if isinstance(value, int) and not isinstance(value, bool) else None
            if value is None:
                return _INVALID
        items = [_convert(item, args[0]) for item in value]
        return _INVALID if any(item is _INVALID for item in items) else tuple(items)
    if expected is bool:
        return value if isinstance(value, bool) else _INVALID
    if expected is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `5e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return _INVALID
        return _INVALID
    if expected is str:
        return value if isinstance(value, str) else _INVALID
    return _INVALID


def _describe(expected: Any) -> str:
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(expected, str(expected))
