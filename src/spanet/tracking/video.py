"""Camera footage as numbered BGR frames: a video file (decoded by OpenCV) or a folder of frame images.

A folder is either a MOTChallenge sequence (`img1/` and `seqinfo.ini`, as `spanet synth-video` writes) or a plain
folder of images in name order. Frames are numbered from 0 here; `frames(start, stop)` decodes only the frames it
gives (a video skips the ones before `start` with `grab`, which reads without decoding pixels).

What can be wrong with footage is said in one line naming the file: a file OpenCV cannot open, a video with no
frame, a frame rate that is missing or not believable (give `--fps`), an empty folder. A video that ends before the
frame count in its header (truncated) stops where decoding stops: `FrameSource.decoded` says how far it got.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spanet.errors import SpanetError

__all__ = ["FrameSource", "open_footage", "VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_MAX_FPS = 1000.0


@dataclass
class FrameSource:
    """One camera's footage: `length` frames (from the header for a video) of `width`×`height` at `fps`."""

    path: Path
    fps: float
    length: int
    width: int
    height: int
    fingerprint: str  # changes when the footage changes; names the footage in the gallery's segment keys
    files: list[Path] = field(default_factory=list)  # a folder's frames in order; empty for a video
    decoded: int = 0  # frames actually decoded so far (a truncated video stops early)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(index, H×W×3 uint8 BGR frame) for index in [start, stop)."""
        stop = self.length if stop is None else min(stop, self.length)
        if self.files:
            yield from self._folder_frames(start, stop)
        else:
            yield from self._video_frames(start, stop)

    def _folder_frames(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        import cv2

        for index in range(start, stop):
            frame = cv2.imread(str(self.files[index]), cv2.IMREAD_COLOR)
            if frame is None:
                raise SpanetError(f"frame {self.files[index]} could not be read (corrupt or not an image); remove it")
            if frame.shape[:2] != (self.height, self.width):
                raise SpanetError(f"frame {self.files[index]} is {frame.shape[1]}x{frame.shape[0]} but {self.path} is "
                                  f"{self.width}x{self.height}; all frames of a camera must have one size")  # fmt: skip
            self.decoded = max(self.decoded, index + 1)
            yield index, frame

    def _video_frames(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        try:
            for _ in range(start):
                if not capture.grab():
                    return
            for index in range(start, stop):
                ok, frame = capture.read()
                if not ok or frame is None:
                    return  # truncated: the header promised more frames than the file holds
                self.decoded = max(self.decoded, index + 1)
                yield index, frame
        finally:
            capture.release()


def open_footage(path: str | os.PathLike[str], *, fps: float | None = None) -> FrameSource:
    """The footage at `path` (video file or frames folder); `fps` overrides (or, for plain folders, supplies) the
    frame rate."""
    path = Path(path)
    if fps is not None and not 0 < fps <= _MAX_FPS:
        raise SpanetError(f"--fps must be between 0 and {_MAX_FPS:g}, got {fps}")
    if path.is_dir():
        return _open_folder(path, fps=fps)
    if not path.is_file():
        raise SpanetError(f"footage {path} does not exist (give a video file or a folder of frames)")
    return _open_video(path, fps=fps)


def _open_video(path: Path, *, fps: float | None) -> FrameSource:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise SpanetError(f"video {path} cannot be opened: unreadable, truncated, empty (no frames) or not a video "
                              "OpenCV can decode")  # fmt: skip
        ok, first = capture.read()
        if not ok or first is None:
            raise SpanetError(f"video {path} has no frame that can be decoded (empty or truncated file)")
        stated = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        capture.release()
    if fps is None:
        if not (np.isfinite(stated) and 0 < stated <= _MAX_FPS):
            raise SpanetError(f"video {path} states a frame rate of {stated:g} frames/s, which cannot be right; "
                              "give the real one with --fps")  # fmt: skip
        fps = stated
    return FrameSource(path=path, fps=fps, length=max(count, 1), width=first.shape[1], height=first.shape[0],
                       fingerprint=_file_fingerprint(path))  # fmt: skip


def _open_folder(path: Path, *, fps: float | None) -> FrameSource:
    import cv2

    frame_rate = 0.0
    image_dir = path
    if (path / "seqinfo.ini").is_file() or (path / "img1").is_dir():
        from spanet.tracking.mot import read_sequence

        sequence = read_sequence(path)
        image_dir, frame_rate = sequence.image_dir, sequence.frame_rate
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise SpanetError(f"folder {path} holds no frames ({', '.join(_IMAGE_SUFFIXES)} files); give a video or frames")
    if fps is None:
        if not 0 < frame_rate <= _MAX_FPS:
            raise SpanetError(f"frames folder {path} does not say its frame rate (no frameRate in seqinfo.ini); "
                              "give it with --fps")  # fmt: skip
        fps = frame_rate
    first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
    if first is None:
        raise SpanetError(f"frame {files[0]} could not be read (corrupt or not an image); remove it")
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file.stat().st_size}\n".encode())
    return FrameSource(path=path, fps=fps, length=len(files), width=first.shape[1], height=first.shape[0],
                       fingerprint=digest.hexdigest()[:16], files=files)  # fmt: skip


def _file_fingerprint(path: Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 (16 hex digits) of a file's size, first and last MiB: cheap on long videos, changes with the footage."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(chunk))
        if size > chunk:
            handle.seek(max(chunk, size - chunk))
            digest.update(handle.read(chunk))
    return digest.hexdigest()[:16]
