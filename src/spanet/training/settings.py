"""Which settings change what a run learns: the keys a resume may not change, and the digest an ablation cell is
filed under.

A resumed run continues the weights and the optimiser state of its checkpoint; changing the data, the loss, the
optimiser schedule or the seed half-way makes a model that belongs to neither config, so `spanet train --resume`
refuses such a change unless `--allow-changed` (a changed model section is refused by `check_model_config`: the
weights would not fit). The keys in `RESUME_MAY_CHANGE` are the exceptions: the learning
rate, momentum and weight decay (the divergence message advises `--resume --set optim.lr=…`), more epochs, where the
data lies and how it is read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spanet.config import Config, config_to_dict
from spanet.errors import SpanetError

__all__ = ["LEARNING_SECTIONS", "RESUME_MAY_CHANGE", "NOT_IN_RESULTS", "changed_learning_keys", "check_resume_settings",
           "trained_settings", "settings_digest"]  # fmt: skip

# the model section is `checkpoint.check_model_config`'s, which knows old keys
LEARNING_SECTIONS = ("data", "optim", "loss")
RESUME_MAY_CHANGE = frozenset({"data.root", "data.num_workers", "data.skip_corrupt", "model.pretrained", "optim.lr",
                               "optim.momentum", "optim.weight_decay", "optim.epochs"})  # fmt: skip
# keys that change neither the weights nor the reported numbers: left out of an ablation cell's digest
NOT_IN_RESULTS = frozenset({"data.num_workers", "train.device", "train.progress", "train.log_every",
                            "train.eval_batch_size", "train.seed"})  # fmt: skip


def _flat(values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, keys in values.items() if isinstance(keys, Mapping)
            for key, value in keys.items()}  # fmt: skip


def changed_learning_keys(trained: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """`section.key` of every learning setting that differs between two config dicts (as `config_to_dict` gives).
    Keys only one of them holds (added to or renamed in spanet since the run) are not compared."""
    old, new = _flat(trained), _flat(now)
    both = sorted(set(old) & set(new))
    learning = [key for key in both if key.split(".")[0] in LEARNING_SECTIONS or key == "train.seed"]
    return [key for key in learning if key not in RESUME_MAY_CHANGE and _plain(old.get(key)) != _plain(new.get(key))]


def check_resume_settings(output_dir: str | Path, config: Config, *, allow_changed: bool) -> list[str]:
    """Refuse to resume the run in `output_dir` under `config` if its model differs (always: the weights would not
    fit) or a learning setting changed (unless `allow_changed`); return the changed keys."""
    from spanet.checkpoint import check_model_config
    from spanet.run_dir import LAST_CHECKPOINT

    trained, now = trained_settings(output_dir), config_to_dict(config)
    check_model_config(dict(trained.get("model") or {}), now["model"], path=Path(output_dir) / LAST_CHECKPOINT)
    changed = changed_learning_keys(trained, now)
    if changed and not allow_changed:
        old, new = _flat(trained), _flat(now)
        shown = ", ".join(f"{key} {_plain(old.get(key))!r} -> {_plain(new.get(key))!r}" for key in changed)
        raise SpanetError(
            f"--resume: {shown} differ from the run in {output_dir}; these change what is learned, so the resumed "
            "model would belong to neither setting. Resume with the run's settings, start a new --output, or pass "
            "--allow-changed to continue anyway"
        )
    return changed


def trained_settings(output_dir: str | Path) -> dict[str, Any]:
    """The config a run folder's last segment was trained with: its config.yaml, else the one in last.pt."""
    import yaml

    from spanet.checkpoint import load_checkpoint
    from spanet.run_dir import CONFIG_FILE, LAST_CHECKPOINT

    try:
        values = yaml.safe_load((Path(output_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        values = None
    if isinstance(values, dict):
        return values
    return dict(load_checkpoint(Path(output_dir) / LAST_CHECKPOINT).get("config") or {})


def settings_digest(config: Config) -> str:
    """A short hash of every resolved setting that can change a run's results (the seed excepted): an ablation cell
    is filed under it, so changed settings never reuse a cell trained with others."""
    values = {key: _plain(value) for key, value in _flat(config_to_dict(config)).items() if key not in NOT_IN_RESULTS}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _plain(value: Any) -> Any:
    """Tuples and lists compare equal (YAML gives lists, dataclasses tuples)."""
    return list(value) if isinstance(value, (list, tuple)) else value
