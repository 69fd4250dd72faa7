"""Which same-person threshold a gallery command uses, and where it came from: one rule for `serve`, `ingest` and
`search --gallery`.

In this order: a number given (`--threshold`), a calibration file given (`--calibration`), the calibration stored
beside the checkpoint (`evaluation.calibration.default_calibration_path`: `calibration.json`, or
`best.calibration.json` for a run's best.pt; written by `spanet calibrate` or by training with validation
identities), the threshold stored in the gallery folder (`spanet ingest` records the one it used in `gallery.json`),
else none. Every calibration is checked against the model's fingerprints and feature kind before it is used. With
none, every hit is ranked and none is marked unknown: the conservative choice for a search, which hides no true
match behind a number on another model's scale.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanet.errors import SpanetError

__all__ = ["Threshold", "choose_threshold", "store_threshold"]

_NONE_RULE = "every hit is ranked, none is marked unknown"


@dataclass(frozen=True)
class Threshold:
    """A squared-Euclidean distance beyond which a match is an unknown person (None: no such limit) and its origin."""

    value: float | None
    source: str  # "--threshold", "--calibration FILE", a file, or why there is none
    from_gallery: bool = False  # the gallery's own stored threshold (storing it again would change nothing)

    def describe(self) -> str:
        """The line a command prints before it uses the threshold."""
        if self.value is None:
            return f"threshold: none ({self.source}): {_NONE_RULE}"
        return f"threshold {self.value:g} " + (f"({self.source})" if self.source.startswith("--") else f"from {self.source}")

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}


def choose_threshold(
    *, checkpoint: str | Path, info: dict[str, Any], threshold: float | None = None,
    calibration: str | Path | None = None, gallery: str | Path | None = None,
) -> Threshold:  # fmt: skip
    """The threshold by the module's order; `info` is the model's `FeatureExtractor.info` (fingerprints, kind) and
    `gallery` the gallery folder whose stored threshold is the last resort. A calibration file given is checked
    even when `threshold` wins (a wrong file is a mistake worth a line)."""
    from spanet.evaluation.calibration import default_calibration_path
    from spanet.evaluation.verification import load_calibration

    calibrated = None
    if calibration is not None:
        calibrated = float(load_calibration(calibration, info=info)["threshold"])
    if threshold is not None:
        if not threshold >= 0:  # NaN too
            raise SpanetError(f"--threshold must be a distance >= 0, got {threshold}")
        return Threshold(float(threshold), "--threshold")
    if calibrated is not None:
        return Threshold(calibrated, f"--calibration {calibration}")
    beside = default_calibration_path(checkpoint)
    if beside.is_file():
        value = float(load_calibration(beside, info=info)["threshold"])
        return Threshold(value, f"{beside} (the calibration stored with this checkpoint; fingerprints checked)")
    stored = _stored(gallery, info) if gallery is not None else None
    if stored is not None:
        return stored
    return Threshold(None, f"{beside} does not exist; `spanet calibrate` or training with data.val_ids writes it")


def store_threshold(directory: str | Path, chosen: Threshold, *, info: dict[str, Any]) -> None:
    """Record `chosen` in the gallery folder's `gallery.json` with the model's fingerprints, so later searches of the
    gallery (`serve`, `search --gallery`) use it when nothing else is given. None leaves a stored one as it is."""
    from spanet.deploy.folder import read_meta, write_meta

    if chosen.value is None or chosen.from_gallery:
        return
    meta = read_meta(directory)
    if meta is None:
        raise SpanetError(f"{directory} is not a spanet gallery (no readable gallery.json)")
    meta["threshold"] = {
        "value": chosen.value, "source": chosen.source, "stored": dt.datetime.now(dt.timezone.utc).isoformat(),
        **{key: info.get(key) for key in ("weights_fingerprint", "args_fingerprint", "kind")},
    }  # fmt: skip
    write_meta(directory, meta)


def _stored(directory: str | Path, info: dict[str, Any]) -> Threshold | None:
    """The threshold `spanet ingest` recorded in the gallery, if any and if it is this model's (fingerprints and
    kind checked)."""
    from spanet.deploy.folder import read_meta

    record = (read_meta(directory) or {}).get("threshold")
    if not isinstance(record, dict) or record.get("value") is None:
        return None
    if any(info.get(key) is not None and record.get(key) != info.get(key)
           for key in ("weights_fingerprint", "args_fingerprint", "kind")):  # fmt: skip
        return None  # another model's gallery: opening it is refused with the reason
    return Threshold(float(record["value"]), f"{Path(directory) / 'gallery.json'} (stored by spanet ingest, "
                     f"from {record.get('source')})", from_gallery=True)  # fmt: skip
