"""The run folder: every file name in it, the JSONL/TensorBoard log, and the readers and writers of its JSON files.

A run folder is what `spanet train` writes and what `evaluate`, `cam` and `report` add to:

```
RUN/config.yaml  log.jsonl  tb/  last.pt  best.pt  report.html  report_files/  split.csv (own data)
RUN/calibration.json  best.calibration.json        (last.pt's and best.pt's threshold: training with data.val_ids,
                                                   or spanet calibrate; beside the checkpoint)
RUN/eval/metrics.json  eval/features.npz  eval/per_query.csv  eval/ranked/*.png  eval/worst/*.png  eval/analysis/*.png
                                                                   (spanet evaluate; eval/ lies beside the checkpoint)
RUN/cam/*.png  cam/spread.json  cam/spread.csv                      (spanet cam --out RUN/cam)
ABLATION/ablation.md  ablation.json  runs/ROW/DIGEST/seedN/ (a run folder + result.json)   (spanet ablation)
ADAPTED/last.pt  adapt.json  log.jsonl  tb/  rounds/NN.json  rounds/NN/ (a training run)     (spanet adapt)
```

Every module that reads or writes one of these names asks this one. Only the main process of a run holds an open
`RunLog`; the others get a disabled one, so the training loop never branches on the rank to log.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spanet import outputs
from spanet.errors import SpanetError
from spanet.outputs import atomic_path, write_json, write_text

__all__ = [
    "CONFIG_FILE",
    "LOG_FILE",
    "TB_DIR",
    "LAST_CHECKPOINT",
    "BEST_CHECKPOINT",
    "EVAL_DIR",
    "METRICS_FILE",
    "FEATURES_FILE",
    "RANKED_DIR",
    "CAM_DIR",
    "SPREAD_FILE",
    "SPREAD_CSV",
    "REPORT_FILE",
    "REPORT_FILES_DIR",
    "RunLog",
    "read_log",
    "SPLIT_FILE",
    "ANALYSIS_DIR",
    "WORST_DIR",
    "PER_QUERY_FILE",
    "CALIBRATION_FILE",
    "BEST_CALIBRATION_FILE",
    "RESULT_FILE",
    "ABLATION_TABLE",
    "ABLATION_JSON",
    "ADAPT_FILE",
    "ROUNDS_DIR",
    "check_output_dir",
    "failed_start",
    "move_aside",
    "remove_stale_temp_files",
    "default_eval_dir",
    "check_eval_dir",
    "write_metrics",
    "read_metrics",
    "write_spread",
    "read_spread",
]

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
TB_DIR = "tb"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
FEATURES_FILE = "features.npz"
RANKED_DIR = "ranked"
CAM_DIR = "cam"
SPREAD_FILE = "spread.json"
SPREAD_CSV = "spread.csv"
REPORT_FILE = "report.html"
REPORT_FILES_DIR = "report_files"
SPLIT_FILE = "split.csv"  # own data (folders/list): the split used, readable with `--dataset list`
ANALYSIS_DIR = "analysis"  # in eval/: camera pairs, distance histograms, embedding
WORST_DIR = "worst"  # in eval/: ranked lists of the lowest-AP queries
PER_QUERY_FILE = "per_query.csv"  # in eval/
CALIBRATION_FILE = "calibration.json"  # beside the checkpoint (spanet calibrate; training with data.val_ids)
BEST_CALIBRATION_FILE = "best.calibration.json"  # best.pt's: other weights than last.pt, so another threshold
RESULT_FILE = "result.json"  # an ablation cell's run folder: its final metrics and settings digest
ABLATION_TABLE = "ablation.md"  # an ablation's output folder
ABLATION_JSON = "ablation.json"
ADAPT_FILE = "adapt.json"  # `spanet adapt`'s run folder: parent checkpoint, sources, settings (checked on resume)
ROUNDS_DIR = "rounds"  # `spanet adapt`: rounds/NN.json (pseudo-labels, statistics) and rounds/NN/ (a training run)
_SPREAD_COLUMNS = ("image", "stage", "variant", "class", "class_source", "area_above_half", "entropy",
                   "rows_above_half")  # fmt: skip


class RunLog:
    """Append records to `<dir>/log.jsonl` and mirror their numbers as TensorBoard scalars under `<dir>/tb/`."""

    def __init__(self, output_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        output_dir = Path(output_dir)
        self._jsonl = open(output_dir / LOG_FILE, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(output_dir / TB_DIR))

    def write(self, record: dict[str, Any], *, step: int) -> None:
        """Log one record ({"type": "step" | "epoch" | "eval", ...}); nested dicts become `parent/child` scalars."""
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        self._jsonl.write(json.dumps(record, default=_plain) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in _scalars(record, prefix=record["type"]):
                self._tb.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_log(path: str | Path) -> tuple[list[dict], list[str]]:
    """Read a log.jsonl: the records that parse, and a note per line that does not (never raises for content)."""
    records, problems = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"{Path(path).name} line {number} is not JSON; skipped")
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            problems.append(f"{Path(path).name} line {number} is not a JSON object; skipped")
    return records, problems


def check_output_dir(output_dir: str | Path, *, resume: bool, overwrite: bool) -> None:
    """A run never lands in a folder holding anything else: `resume` continues the run there, `overwrite` moves the
    old content aside first (`move_aside`), otherwise a non-empty folder is refused. Writes nothing."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise SpanetError(f"output {output_dir} is a file; pass a folder for the run")
    if resume and overwrite:
        raise SpanetError("resume and overwrite exclude each other: resume continues the run, overwrite starts anew")
    if resume:
        if not (output_dir / LAST_CHECKPOINT).is_file():
            raise SpanetError(f"--resume: {output_dir / LAST_CHECKPOINT} does not exist; start a new run without --resume"
                              + (" (what the failed first run left is moved aside)" if failed_start(output_dir) else ""))
        return
    held = sorted(p.name for p in output_dir.iterdir()) if output_dir.is_dir() else []
    if held and not overwrite and not failed_start(output_dir):
        shown = ", ".join(held[:5]) + (" …" if len(held) > 5 else "")
        raise SpanetError(
            f"{output_dir} is not empty ({shown}); pass --resume to continue the run in it, --overwrite to move it "
            "aside and start anew, or choose a new --output"
        )


def failed_start(output_dir: str | Path) -> bool:
    """Whether `output_dir` holds only what a run writes before its first checkpoint (config, log, TensorBoard, the
    split list): a first run that failed, e.g. on a corrupt image. A new run may start there (moving it aside)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return False
    held = {p.name for p in output_dir.iterdir()}
    return bool(held) and held <= {CONFIG_FILE, LOG_FILE, TB_DIR, SPLIT_FILE}


def remove_stale_temp_files(output_dir: str | Path) -> list[Path]:
    """Delete the `.last.pt.*.tmp` / `.best.pt.*.tmp` files that a checkpoint write killed by `kill -9` left; return
    them. Call it only where nothing else writes into `output_dir` (the main process, as a run starts)."""
    output_dir = Path(output_dir)
    stale = [p for name in (LAST_CHECKPOINT, BEST_CHECKPOINT) for p in output_dir.glob(f".{name}.*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def move_aside(output_dir: str | Path) -> Path | None:
    """Rename a non-empty folder to `<name>.replaced-<time>` (never deleted); return the new name, or None."""
    return outputs.move_aside(output_dir) if Path(output_dir).is_dir() else None


def default_eval_dir(checkpoint: str | Path) -> Path:
    """Where `spanet evaluate` writes when no --out is given: `eval/` beside the checkpoint."""
    return Path(checkpoint).parent / EVAL_DIR


def check_eval_dir(eval_dir: str | Path, *, checkpoint: str | Path, overwrite: bool = False) -> Path:
    """Refuse to mix evaluations: `eval_dir` may already hold one only of the same checkpoint (or `overwrite`)."""
    eval_dir = Path(eval_dir)
    if eval_dir.exists() and not eval_dir.is_dir():
        raise SpanetError(f"evaluation output {eval_dir} is a file; pass a folder")
    metrics_path = eval_dir / METRICS_FILE
    if overwrite or not metrics_path.is_file():
        return eval_dir
    try:
        previous = json.loads(metrics_path.read_text(encoding="utf-8")).get("checkpoint")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        previous = None
    if previous is None or Path(previous).resolve() != Path(checkpoint).resolve():
        raise SpanetError(
            f"{eval_dir} already holds the evaluation of {previous or 'another checkpoint'}; pass --out DIR for "
            f"{checkpoint}, or --overwrite to replace it"
        )
    return eval_dir


def write_metrics(eval_dir: str | Path, metrics: Mapping[str, Any], *, source: Mapping[str, Any]) -> Path:
    """Write `eval_dir/metrics.json`: an evaluation's metrics (`EvaluationResult.to_metrics_file()`) and what made
    them (`source`: checkpoint, dataset, flip, kind)."""
    return write_json(Path(eval_dir) / METRICS_FILE, {**metrics, **source}, default=_plain)


def read_metrics(eval_dir: str | Path) -> dict[str, Any]:
    """Read `eval_dir/metrics.json`; a missing or broken file raises `SpanetError` naming it."""
    return _read_json(Path(eval_dir) / METRICS_FILE, hint="run `spanet evaluate` again")


def write_spread(cam_dir: str | Path, spread: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Path:
    """Write `cam_dir/spread.json` (summary and variants) and `cam_dir/spread.csv` (one row per image × stage × variant)."""
    cam_dir = Path(cam_dir)
    path = write_text(cam_dir / SPREAD_FILE, json.dumps(spread, indent=2, default=_plain))
    with atomic_path(cam_dir / SPREAD_CSV) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(_SPREAD_COLUMNS))
        writer.writeheader()
        writer.writerows(records)
    return path


def read_spread(cam_dir: str | Path) -> dict[str, Any]:
    """Read `cam_dir/spread.json`; a missing or broken file raises `SpanetError` naming it."""
    return _read_json(Path(cam_dir) / SPREAD_FILE, hint="run `spanet cam` again")


def _read_json(path: Path, *, hint: str) -> dict[str, Any]:
    if not path.is_file():
        raise SpanetError(f"{path} does not exist; {hint}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpanetError(f"{path} is not valid JSON ({exc}); {hint}") from None
    if not isinstance(value, dict):
        raise SpanetError(f"{path} does not hold a JSON object; {hint}")
    return value


def _scalars(record: dict[str, Any], *, prefix: str) -> list[tuple[str, float]]:
    found = []
    for key, value in record.items():
        if key in ("type", "time", "epoch", "step"):
            continue
        if isinstance(value, dict):
            found.extend(_scalars(value, prefix=f"{prefix}/{key}"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found.append((f"{prefix}/{key}", float(value)))
    return found


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and tensors that slip into a record."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
