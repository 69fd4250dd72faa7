"""Market-1501-style file names, `PID_cCAMsSEQ_FRAME_BOX.jpg` (e.g. `0002_c1s1_000451_03.jpg`): the one place that
reads a person id or a camera number out of a file name. Letters match in either case (`_C3` is camera 3).

The dataset reader (`spanet.data.datasets`) matches whole names with `MARKET_PATTERN`; enrolment, own data and CAM
labels read single fields with the functions below.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["MARKET_PATTERN", "MARKET_EXAMPLE", "person_id_from_name", "person_label_from_name", "camera_from_name"]

# pid -1 = junk, 0 = distractor; the camera number is 1-based
MARKET_PATTERN = r"(?P<pid>-1|\d+)_c(?P<camid>\d+)s\d+_\d+_\d+\.jpe?g"
MARKET_EXAMPLE = "0002_c1s1_000451_03.jpg"
_PERSON = re.compile(r"^(-?\d+)_c\d", re.IGNORECASE)  # a person id, then the camera
_CAMERA = re.compile(r"_c(\d+)", re.IGNORECASE)


def person_id_from_name(name: str | Path) -> int | None:
    """The person id a Market-style file name starts with (`0002_c3...` -> 2, `-1_c1...` -> -1), or None."""
    match = _PERSON.match(Path(name).name)
    return int(match[1]) if match else None


def person_label_from_name(name: str | Path) -> str | None:
    """The person id as written (`0002_c3...` -> "0002"), None for junk (-1) and names without one."""
    match = _PERSON.match(Path(name).name)
    return match[1] if match and not match[1].startswith("-") else None


def camera_from_name(name: str | Path) -> int | None:
    """The 1-based camera number of a Market-style file name (`0002_c3s1_000551_01.jpg` -> 3), or None."""
    match = _CAMERA.search(Path(name).stem)
    return int(match[1]) if match else None
