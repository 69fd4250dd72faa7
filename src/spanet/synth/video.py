"""Synthetic multi-camera footage with ground truth, in the MOTChallenge layout: what tracking tests and demos run on.

People are the synthetic dataset's identities (`scene.build_identities`), cameras its cameras (`scene.build_cameras`:
colour cast, background, blur, noise, viewpoint mix). Each person walks across one to three camera views, one after
the other with a gap between cameras, at a depth of their own (farther is smaller and higher in the picture); people
at different depths walking opposite ways pass in front of each other, so boxes overlap and occlude.

Speed: each walk's sprites (the person drawn once per stride phase, camera cast applied) and each camera's background
are rendered once; a frame is the background, the sprites alpha-blended far to near, a noise frame from a small bank,
and a JPEG encode. Output per camera `camN/`: `img1/000001.jpg…`, `gt/gt.txt` (frame, GLOBAL person id, x, y, w, h,
1, -1, -1, -1; boxes clipped to the frame), `seqinfo.ini`; plus `spanet_video.json` with the options. The same
options give the same files.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spanet.errors import SpanetError
from spanet.synth.domain import get_domain
from spanet.synth.render import render_background, render_person
from spanet.synth.scene import Camera, Identity, build_cameras, build_identities

__all__ = ["VideoOptions", "VideoSummary", "Walk", "plan_walks", "generate_video", "MARKER_FILE"]

MARKER_FILE = "spanet_video.json"
PHASES = 4  # stride phases drawn per walk; the walk cycles through them
FRAMES_PER_PHASE = 2
NOISE_FRAMES = 4


@dataclass(frozen=True)
class VideoOptions:
    """What to render: `cameras` views of `people` walkers for `seconds` at `fps`, frames `width`×`height`."""

    cameras: int = 3
    people: int = 24
    seconds: float = 20.0
    fps: int = 10
    width: int = 640
    height: int = 360
    seed: int = 0
    jpeg_quality: int = 90
    domain: str = "a"  # the site's look: `spanet.synth.domain` ("a" or "b")

    @property
    def frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))


@dataclass(frozen=True)
class Walk:
    """One person crossing one camera view: horizontal position `x0 + speed·(t − start)`, feet at `foot_y`."""

    pid: int
    camera: int
    start: int  # first frame index (0-based) of the walk, may lie before 0 or after the end
    end: int  # last frame index
    x0: float
    speed: float  # pixels per frame, signed
    foot_y: float
    person_height: int
    view: str


@dataclass(frozen=True)
class VideoSummary:
    out_dir: Path
    frames: int  # over all cameras
    boxes: int
    seconds: float
    walks: int

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def _check(options: VideoOptions) -> None:
    problems = [
        (not 1 <= options.cameras <= 9, f"--cameras must be 1-9, got {options.cameras}"),
        (options.people < 1, f"--people must be at least 1, got {options.people}"),
        (options.seconds <= 0, f"--seconds must be positive, got {options.seconds}"),
        (not 1 <= options.fps <= 120, f"--fps must be 1-120, got {options.fps}"),
        (options.width < 64 or options.height < 64, f"--size must be at least 64x64, got {options.width}x{options.height}"),
    ]  # fmt: skip
    for bad, message in problems:
        if bad:
            raise SpanetError(message)


def _view(rng: np.random.Generator, camera: Camera, direction: float) -> str:
    """Side view facing the walking direction, or front/back (walking diagonally) by the camera's viewpoint mix."""
    front, back, left, right = camera.view_probs
    if rng.random() < left + right:
        return "right" if direction > 0 else "left"
    return "front" if rng.random() < front / (front + back) else "back"


def _walk(rng: np.random.Generator, *, pid: int, cam: int, camera: Camera, start: int, duration: int,
          options: VideoOptions, person: Identity) -> Walk:  # fmt: skip
    """Depth, size, direction and speed of one crossing from edge to edge in `duration` frames."""
    w, h = options.width, options.height
    horizon = camera.horizon * h
    depth = rng.uniform(0.3, 1.0)  # 0 = at the horizon, 1 = at the bottom edge
    foot_y = horizon + depth * (h - horizon) - 0.02 * h
    person_height = int(round(min(foot_y - 0.02 * h, h * (0.2 + 0.4 * depth)) * person.height_scale))
    direction = 1.0 if rng.random() < 0.5 else -1.0
    margin = 0.3 * person_height
    speed = direction * (w + 2 * margin) / duration
    x0 = -margin if direction > 0 else w + margin
    return Walk(
        pid=pid, camera=cam, start=start, end=start + duration, x0=float(x0), speed=float(speed),
        foot_y=float(foot_y), person_height=max(8, person_height), view=_view(rng, camera, direction),
    )  # fmt: skip


def plan_walks(options: VideoOptions, people: tuple[Identity, ...], cameras: tuple[Camera, ...]) -> list[Walk]:
    """Every person visits 1-3 distinct cameras in turn, each crossing 3-6 s with 1-3 s between cameras (shortened
    to fit short footage), starting at a random time so that the whole visit fits when it can."""
    rng = np.random.default_rng([options.seed, 10])
    frames, fps = options.frames, options.fps
    walks = []
    for index, person in enumerate(people):
        visits = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        order = rng.permutation(len(cameras))[: min(visits, len(cameras))]
        longest = max(2.0, frames / (len(order) + 0.5))
        durations = [int(round(min(rng.uniform(3.0, 6.0) * fps, longest))) for _ in order]
        gaps = [int(round(min(rng.uniform(1.0, 3.0) * fps, frames / 10))) for _ in order]
        slack = frames - sum(durations) - sum(gaps[:-1])
        start = int(rng.integers(-(durations[0] // 4), max(1, slack) + 1))
        for cam, duration, gap in zip(order, durations, gaps):
            walk = _walk(rng, pid=index + 1, cam=int(cam), camera=cameras[cam], start=start, duration=duration,
                         options=options, person=person)  # fmt: skip
            walks.append(walk)
            start = walk.end + gap
    return walks


@dataclass
class _Sprite:
    """A walk's drawings: colour (h, w, 3) float32 with the camera cast, alpha (h, w, 1), body box in the canvas."""

    colour: list[np.ndarray]
    alpha: list[np.ndarray]
    body: list[tuple[int, int, int, int]]  # x0, y0, x1, y1 of alpha > 0


def _sprites(walk: Walk, person: Identity, camera: Camera, seed: int, index: int) -> _Sprite:
    rng = np.random.default_rng([seed, 11, index])
    gain = np.asarray(camera.gain, dtype=np.float32) * np.float32(camera.brightness)
    sprite = _Sprite(colour=[], alpha=[], body=[])
    for _ in range(PHASES):
        rgba = np.asarray(render_person(person=person, view=walk.view, height=walk.person_height, rng=rng))
        alpha = rgba[:, :, 3:].astype(np.float32) / 255
        cols, rows = np.flatnonzero(alpha.any(axis=(0, 2))), np.flatnonzero(alpha.any(axis=(1, 2)))
        sprite.colour.append(rgba[:, :, :3].astype(np.float32) * gain * alpha)  # premultiplied
        sprite.alpha.append(alpha)
        sprite.body.append((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
    return sprite


def _paste(frame: np.ndarray, colour: np.ndarray, alpha: np.ndarray, left: int, top: int) -> None:
    """Alpha-blend a premultiplied sprite into `frame` at (left, top), cut at the frame's edges."""
    height, width = frame.shape[:2]
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + colour.shape[1]), min(height, top + colour.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    sx, sy = x0 - left, y0 - top
    region = frame[y0:y1, x0:x1]
    a = alpha[sy : sy + y1 - y0, sx : sx + x1 - x0]
    region *= 1 - a
    region += colour[sy : sy + y1 - y0, sx : sx + x1 - x0]


def _render_camera(walks: list[tuple[Walk, _Sprite]], background: np.ndarray, noise: np.ndarray,
                   options: VideoOptions, seq_dir: Path) -> int:  # fmt: skip
    """Write one camera's frames and gt.txt; return the number of boxes."""
    height, width = background.shape[:2]
    lines = []
    walks = sorted(walks, key=lambda item: item[0].foot_y)  # far first, near ones drawn over them
    for t in range(options.frames):
        frame = background.copy()
        for walk, sprite in walks:
            if not walk.start <= t <= walk.end:
                continue
            phase = ((t - walk.start) // FRAMES_PER_PHASE) % PHASES
            colour, alpha = sprite.colour[phase], sprite.alpha[phase]
            left = int(round(walk.x0 + walk.speed * (t - walk.start) - colour.shape[1] / 2))
            top = int(round(walk.foot_y - colour.shape[0]))
            _paste(frame, colour, alpha, left, top)
            bx0, by0, bx1, by1 = sprite.body[phase]
            full_w = bx1 - bx0
            x0, y0 = max(0, left + bx0), max(0, top + by0)
            x1, y1 = min(width, left + bx1), min(height, top + by1)
            if x1 - x0 >= max(4, 0.3 * full_w) and y1 - y0 >= 4:
                lines.append(f"{t + 1},{walk.pid},{x0},{y0},{x1 - x0},{y1 - y0},1,-1,-1,-1")
        frame += noise[t % len(noise)]
        pixels = np.clip(frame, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(seq_dir / "img1" / f"{t + 1:06d}.jpg", quality=options.jpeg_quality)
    (seq_dir / "gt" / "gt.txt").write_text("".join(line + "\n" for line in lines))
    return len(lines)


def _write_seqinfo(seq_dir: Path, options: VideoOptions) -> None:
    (seq_dir / "seqinfo.ini").write_text(
        f"[Sequence]\nname={seq_dir.name}\nimDir=img1\nframeRate={options.fps}\nseqLength={options.frames}\n"
        f"imWidth={options.width}\nimHeight={options.height}\nimExt=.jpg\n"
    )


def _prepare(out_dir: Path, cameras: int) -> None:
    """Refuse a non-empty folder that no earlier synth-video wrote; clear the camera folders of one that did."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SpanetError(f"{out_dir} is a file; give a folder for the footage")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / MARKER_FILE).is_file():
            raise SpanetError(f"{out_dir} is not empty and was not written by `spanet synth-video`; choose a new folder")
        for seq in out_dir.glob("cam*"):
            if (seq / "seqinfo.ini").is_file():
                shutil.rmtree(seq)
    for cam in range(cameras):
        for sub in ("img1", "gt"):
            (out_dir / f"cam{cam + 1}" / sub).mkdir(parents=True, exist_ok=True)


def generate_video(out_dir: str | Path, options: VideoOptions = VideoOptions()) -> VideoSummary:
    """Render the footage of `options` into `out_dir` (see the module docstring for the layout)."""
    _check(options)
    site = get_domain(options.domain)
    out_dir = Path(out_dir)
    _prepare(out_dir, options.cameras)
    began = time.perf_counter()
    people = build_identities(options.people, seed=options.seed, domain=site)
    cameras = build_cameras(options.cameras, seed=options.seed, domain=site)
    walks = plan_walks(options, people, cameras)
    per_camera: dict[int, list[tuple[Walk, _Sprite]]] = {cam: [] for cam in range(options.cameras)}
    for index, walk in enumerate(walks):
        if walk.end >= 0 and walk.start < options.frames:
            sprite = _sprites(walk, people[walk.pid - 1], cameras[walk.camera], options.seed, index)
            per_camera[walk.camera].append((walk, sprite))
    boxes = 0
    for cam, camera in enumerate(cameras):
        rng = np.random.default_rng([options.seed, 12, cam])
        background = render_background(camera=camera, height=options.height, width=options.width, rng=rng)
        shape = (NOISE_FRAMES, options.height, options.width, 3)
        noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(camera.noise)
        seq_dir = out_dir / f"cam{cam + 1}"
        _write_seqinfo(seq_dir, options)
        boxes += _render_camera(per_camera[cam], background, noise, options, seq_dir)
    seconds = time.perf_counter() - began
    (out_dir / MARKER_FILE).write_text(json.dumps({"options": asdict(options), "walks": len(walks)}, indent=2) + "\n")
    return VideoSummary(
        out_dir=out_dir, frames=options.frames * options.cameras, boxes=boxes, seconds=seconds, walks=len(walks)
    )
