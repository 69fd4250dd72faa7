"""Where a training run reports progress: one JSON object per line in `log.jsonl` and TensorBoard scalars.

Only the main process of a run holds an open `RunLog`; the others get a disabled one, so the loop never branches
on the rank to log.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["RunLog"]


class RunLog:
    """Append records to `<dir>/log.jsonl` and mirror their numbers as TensorBoard scalars under `<dir>/tb/`."""

    def __init__(self, output_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        output_dir = Path(output_dir)
        self._jsonl = open(output_dir / "log.jsonl", "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(output_dir / "tb"))

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
