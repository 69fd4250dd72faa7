"""MOTChallenge sequences and track files: read them with every mistake named by file and line, write them back.

A sequence is a folder with `img1/000001.jpg…` (the frames) and usually `seqinfo.ini` (name, frame rate, length,
size, image extension); without the ini the frames found in `img1/` define it. A track file holds one box per line:
`frame, id, x, y, w, h[, conf, …]` with 1-based frames and pixel boxes (x, y = top-left). A tracker's output, or a
sequence's `gt/gt.txt` (then association is given perfect tracks: an upper bound).
"""

from __future__ import annotations

import configparser
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spanet.data.images import IMAGE_EXTENSIONS
from spanet.errors import SpanetError

__all__ = ["Sequence", "Tracks", "read_frame", "read_sequence", "read_tracks", "write_tracks"]


@dataclass(frozen=True)
class Sequence:
    """One camera's frames: `frame_path(n)` for 1-based frame n; `width`×`height` is every frame's size."""

    name: str
    root: Path
    image_dir: Path
    extension: str
    length: int
    width: int
    height: int
    frame_rate: float = 0.0

    def frame_path(self, frame: int) -> Path:
        return self.image_dir / f"{frame:06d}{self.extension}"


@dataclass(frozen=True)
class Tracks:
    """Rows of a track file: `frames` and `ids` (N,) int64, `boxes` (N, 4) x, y, w, h float64, `scores` (N,)."""

    path: Path
    frames: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    line_numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.frames)

    def track_ids(self) -> list[int]:
        return sorted(int(i) for i in np.unique(self.ids))


def read_sequence(root: str | os.PathLike[str]) -> Sequence:
    """A MOTChallenge sequence folder; the size comes from seqinfo.ini, or else from its first frame."""
    root = Path(root)
    if not root.is_dir():
        raise SpanetError(f"sequence folder {root} does not exist")
    ini = root / "seqinfo.ini"
    info: dict[str, str] = {}
    if ini.is_file():
        parser = configparser.ConfigParser()
        try:
            parser.read(ini)
        except configparser.Error as exc:
            raise SpanetError(f"{ini} is not a valid ini file ({str(exc).splitlines()[0]})") from None
        info = dict(parser["Sequence"]) if parser.has_section("Sequence") else {}
    image_dir = root / info.get("imdir", "img1")
    frames = sorted(p for p in image_dir.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS) if image_dir.is_dir() else []
    if not frames:
        raise SpanetError(f"sequence {root} has no frames in {image_dir} (expected 000001.jpg, ...): an empty sequence")
    extension = info.get("imext", frames[0].suffix)
    try:
        length = int(info.get("seqlength", len(frames)))
        width, height = int(info.get("imwidth", 0)), int(info.get("imheight", 0))
        frame_rate = float(info.get("framerate", 0))
    except ValueError as exc:
        raise SpanetError(f"{ini}: a number in [Sequence] could not be read ({exc})") from None
    if not width or not height:
        from PIL import Image

        with Image.open(frames[0]) as image:
            width, height = image.size
    name = info.get("name", root.name) or root.name
    return Sequence(name=name, root=root, image_dir=image_dir, extension=extension, length=length, width=width,
                    height=height, frame_rate=frame_rate)  # fmt: skip


def read_frame(sequence: Sequence, frame: int) -> np.ndarray:
    """The frame as BGR uint8 (what trackers hand their re-ID model); a frame of another size is an error."""
    path = sequence.frame_path(frame)
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except OSError as exc:
        raise SpanetError(f"frame {path} could not be read ({exc})") from None
    if rgb.shape[:2] != (sequence.height, sequence.width):
        raise SpanetError(
            f"frame {path} is {rgb.shape[1]}x{rgb.shape[0]} but sequence {sequence.name} is "
            f"{sequence.width}x{sequence.height}; all frames of a sequence must have one size"
        )
    return rgb[:, :, ::-1]


def _parse_line(text: str, *, path: Path, number: int) -> tuple[int, int, float, float, float, float, float]:
    fields = [f.strip() for f in text.split(",")] if "," in text else text.split()
    if len(fields) < 6:
        raise SpanetError(f"{path}:{number}: expected 'frame, id, x, y, w, h[, conf, ...]', got {text.strip()!r}")
    try:
        values = [float(f) for f in fields[:7]]
    except ValueError:
        raise SpanetError(f"{path}:{number}: not a number in {text.strip()!r}") from None
    frame, track_id = values[0], values[1]
    if np.isfinite(values[:2]).all() and not np.isfinite(values[2:6]).all():
        raise SpanetError(f"{path}:{number}: the box x, y, w, h must be finite numbers (NaN/inf is not a box), got "
                          f"{text.strip()!r}")  # fmt: skip
    if not np.isfinite(values[:2]).all() or frame != int(frame) or track_id != int(track_id) or frame < 1:
        raise SpanetError(f"{path}:{number}: frame must be an integer >= 1 and id an integer, got {text.strip()!r}")
    score = values[6] if len(values) > 6 else 1.0
    return int(frame), int(track_id), values[2], values[3], values[4], values[5], score


def read_tracks(path: str | os.PathLike[str], *, sequence: Sequence | None = None) -> Tracks:
    """A MOTChallenge track file; with `sequence`, frames must exist and boxes must touch the frame.

    Zero-area boxes and boxes wholly outside the frame are errors naming the line: a tracker that writes them has a
    bug the user should see, and a crop of them would be empty.
    """
    path = Path(path)
    if not path.is_file():
        raise SpanetError(f"track file {path} does not exist")
    rows, numbers = [], []
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        row = _parse_line(text, path=path, number=number)
        if sequence is not None:
            _check_row(row, sequence=sequence, path=path, number=number)
        rows.append(row)
        numbers.append(number)
    if not rows:
        warnings.warn(f"track file {path} holds no boxes: its camera contributes no tracks", stacklevel=2)
    table = np.array(rows, dtype=np.float64).reshape(-1, 7)
    return Tracks(
        path=path, frames=table[:, 0].astype(np.int64), ids=table[:, 1].astype(np.int64), boxes=table[:, 2:6],
        scores=table[:, 6], line_numbers=np.array(numbers, dtype=np.int64),
    )  # fmt: skip


def _check_row(row: tuple, *, sequence: Sequence, path: Path, number: int) -> None:
    frame, _, x, y, w, h, _ = row
    if w <= 0 or h <= 0:
        raise SpanetError(f"{path}:{number}: box of zero or negative size ({w:g} x {h:g})")
    if x >= sequence.width or y >= sequence.height or x + w <= 0 or y + h <= 0:
        raise SpanetError(
            f"{path}:{number}: box ({x:g}, {y:g}, {w:g}, {h:g}) lies outside the {sequence.width}x{sequence.height} frame"
        )
    if frame > sequence.length or not sequence.frame_path(frame).is_file():
        raise SpanetError(f"{path}:{number}: frame {frame} does not exist in {sequence.image_dir}")


def write_tracks(path: str | os.PathLike[str], tracks: Tracks, *, ids: np.ndarray | None = None) -> Path:
    """Write MOTChallenge lines `frame, id, x, y, w, h, conf, -1, -1, -1` sorted by frame then id; `ids` replaces
    the track ids row by row (e.g. with global ids)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = tracks.ids if ids is None else np.asarray(ids, dtype=np.int64)
    order = np.lexsort((ids, tracks.frames))
    lines = [
        f"{tracks.frames[i]},{ids[i]},{_num(tracks.boxes[i, 0])},{_num(tracks.boxes[i, 1])},"
        f"{_num(tracks.boxes[i, 2])},{_num(tracks.boxes[i, 3])},{_num(tracks.scores[i])},-1,-1,-1\n"
        for i in order
    ]
    path.write_text("".join(lines))
    return path


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"
