"""A synthetic cross-view re-ID dataset in the Market-1501 layout: the one dataset every machine has.

Each identity appears in at least two cameras; test identities give one query per camera they appear in (Market
style) and the rest of their pictures go to the gallery, so every query has a true match from another camera. The
gallery also holds distractors (id 0000: passers-by cut off by bad boxes, or background) and junk (id -1: tiny or
empty boxes) like the real dataset. Every picture has its own random generator seeded from (seed, kind, person,
camera, index), so the bytes written depend only on the options, never on the order or the machine's load.

`spanet_synth.json` records the options and the counts written, in the `spanet check-data --json` shape.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spanet.data.datasets import SYNTH_MANIFEST
from spanet.errors import SpanetError
from spanet.synth.domain import Domain, get_domain
from spanet.synth.scene import Camera, Identity, build_cameras, build_identities, random_identity
from spanet.synth.render import render_image

__all__ = ["SYNTH_PRESETS", "SynthSummary", "generate_dataset"]
SPLIT_DIRS = {"train": "bounding_box_train", "gallery": "bounding_box_test", "query": "query"}
JPEG_QUALITY = 90
_FORMAT_VERSION = 1
# Seed-stream tags, so identities, cameras, plans and pictures never share random numbers.
_PLAN, _PICTURE, _DISTRACTOR, _JUNK, _PASSER_BY, _CROWD = 10, 11, 12, 13, 14, 15

SYNTH_PRESETS: dict[str, dict] = {
    "tiny": dict(train_ids=8, test_ids=6, cameras=3, images_per_id=6, height=128, width=64, distractors=6, junk=4),
    "demo": dict(
        train_ids=100, test_ids=100, cameras=6, images_per_id=10, height=128, width=64, distractors=100, junk=40
    ),
    # Market-1501: 751 / 750 ids, 6 cameras, ~17 train and ~22 test pictures per id, 2,793 distractors, 3,819 junk.
    "market": dict(
        train_ids=751, test_ids=750, cameras=6, images_per_id=18, height=128, width=64, distractors=2793, junk=3819
    ),
}


@dataclass(frozen=True)
class SynthSummary:
    """What `generate_dataset` wrote: counts in the `check-data --json` shape, plus timing."""

    out_dir: Path
    statistics: dict[str, dict[str, int]]
    distractor_images: int
    junk_images: int
    total_images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.total_images / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class _Job:
    """One picture to render: where it goes and which random stream draws it."""

    split: str
    pid: int
    camera: int  # 0-based
    filename: str
    seed_key: tuple[int, ...]
    framing: str


def _file_name(pid: int, camera: int, sequence: int, frame: int, box: int) -> str:
    person = "-1" if pid < 0 else f"{pid:04d}"
    return f"{person}_c{camera + 1}s{sequence}_{frame:06d}_{box:02d}.jpg"


def _identity_jobs(pid: int, *, test: bool, seed: int, cameras: int, images: int) -> list[_Job]:
    """Spread one identity's pictures over ≥2 cameras (≥2 each for a test id: a query and a gallery picture)."""
    rng = np.random.default_rng([seed, _PLAN, pid])
    per_camera_min = 2 if test else 1
    most = min(cameras, images // per_camera_min)
    visited = np.sort(rng.choice(cameras, size=int(rng.integers(2, most + 1)), replace=False))
    spare = images - per_camera_min * len(visited)
    counts = per_camera_min + rng.multinomial(spare, rng.dirichlet(np.full(len(visited), 2.0)))
    jobs = []
    for camera, count in zip(visited.tolist(), counts.tolist()):
        sequence, frame = int(rng.integers(1, 7)), int(rng.integers(0, 200_000))
        for index in range(count):
            frame += int(rng.integers(5, 150))
            split = ("query" if index == 0 else "gallery") if test else "train"
            name = _file_name(pid, camera, sequence, frame, int(rng.integers(1, 5)))
            jobs.append(_Job(split, pid, camera, name, (seed, _PICTURE, pid, camera, index), "normal"))
    return jobs


def _extra_jobs(pid: int, count: int, *, tag: int, seed: int, cameras: int) -> list[_Job]:
    """Distractors (pid 0) or junk (pid -1) spread over the cameras with distinct, increasing frame numbers."""
    rng = np.random.default_rng([seed, _PLAN, tag])
    step = max(1, min(150, 900_000 // max(1, count)))
    jobs = []
    for index in range(count):
        camera = int(rng.integers(cameras))
        frame = 1 + index * step + int(rng.integers(0, step))
        name = _file_name(pid, camera, int(rng.integers(1, 7)), frame, int(rng.integers(1, 9)))
        framing = "far" if tag == _JUNK else "fragment"
        jobs.append(_Job("gallery", pid, camera, name, (seed, tag, camera, index), framing))
    return jobs


def _check_options(*, train_ids: int, test_ids: int, cameras: int, images_per_id: int, height: int, width: int,
                   distractors: int, junk: int, seed: int, crowd: float = 0.0, occlusion: float | None = None) -> None:
    problems = []
    if train_ids < 1 or test_ids < 1:
        problems.append("train_ids and test_ids must be ≥ 1")
    if train_ids + test_ids > 9999:
        problems.append("train_ids + test_ids must be ≤ 9999 (ids are written with 4 digits)")
    if not 2 <= cameras <= 9:
        problems.append("cameras must be between 2 and 9 (each identity needs two cameras; names hold one digit)")
    if images_per_id < 4:
        problems.append("images_per_id must be ≥ 4 (test ids need a query and a gallery picture in 2 cameras)")
    if height < 16 or width < 8:
        problems.append("height must be ≥ 16 and width ≥ 8 pixels")
    if distractors < 0 or junk < 0 or distractors > 100_000 or junk > 100_000:
        problems.append("distractors and junk must be between 0 and 100000")
    if seed < 0:
        problems.append("seed must be ≥ 0")
    if not 0.0 <= crowd <= 1.0 or (occlusion is not None and not 0.0 <= occlusion <= 1.0):
        problems.append("crowd and occlusion are probabilities: between 0 and 1")
    if problems:
        raise SpanetError("invalid synth options: " + "; ".join(problems))


def _prepare_output(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse to mix synthetic pictures into a folder that holds something else, unless told to."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SpanetError(f"{out_dir} exists and is not a folder: choose another output folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / SYNTH_MANIFEST).is_file() and not overwrite:
            raise SpanetError(
                f"{out_dir} is not empty and is not a previous `spanet synth` output (no {SYNTH_MANIFEST}): "
                "choose an empty or new folder, or pass --overwrite to replace its "
                + ", ".join(f"{name}/" for name in SPLIT_DIRS.values())
            )
        for name in SPLIT_DIRS.values():
            if (out_dir / name).is_dir():
                shutil.rmtree(out_dir / name)
    for name in SPLIT_DIRS.values():
        (out_dir / name).mkdir(parents=True, exist_ok=True)


def _statistics(jobs: list[_Job]) -> dict[str, dict[str, int]]:
    """Counts as a dataset reader reports them: junk (-1) left out, the distractor id 0 counted as an id."""
    stats = {}
    for split in ("train", "query", "gallery"):
        kept = [job for job in jobs if job.split == split and job.pid >= 0]
        stats[split] = {
            "images": len(kept),
            "ids": len({job.pid for job in kept}),
            "cameras": len({job.camera for job in kept}),
        }
    return stats


def _render_all(jobs: list[_Job], *, out_dir: Path, people: dict[int, Identity], cameras: tuple[Camera, ...],
                height: int, width: int, progress: bool, crowd: float, domain: Domain) -> None:
    for job in tqdm(jobs, desc="synth", unit="img", disable=not progress, leave=False):
        companion = None
        if crowd > 0 and job.pid > 0:  # its own stream: the picture's other draws do not move
            crowd_rng = np.random.default_rng([_CROWD, *job.seed_key])
            companion = random_identity(crowd_rng, domain) if crowd_rng.random() < crowd else None
        rng = np.random.default_rng(list(job.seed_key))
        if job.pid > 0:
            person = people[job.pid]
        elif rng.random() < 0.65:  # a bad box around a passer-by (not one of the ids), else background only
            person = random_identity(np.random.default_rng([_PASSER_BY, *job.seed_key]), domain)
        else:
            person = None
        image = render_image(person=person, camera=cameras[job.camera], rng=rng, height=height, width=width,
                             framing=job.framing, companion=companion)
        image.save(out_dir / SPLIT_DIRS[job.split] / job.filename, format="JPEG", quality=JPEG_QUALITY)


def generate_dataset(
    out_dir: str | Path,
    *,
    train_ids: int,
    test_ids: int,
    cameras: int,
    images_per_id: int,
    height: int = 128,
    width: int = 64,
    distractors: int,
    junk: int,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    crowd: float = 0.0,
    occlusion: float | None = None,
    domain: str = "a",
) -> SynthSummary:
    """Render the dataset into `out_dir` (Market-1501 layout) and write `spanet_synth.json` beside it.

    Train ids are 1..train_ids, test ids follow them; the same options always give the same bytes.
    Harder scenes (both off by default, and then the bytes are those of a dataset made without them): `crowd`, the
    probability that an identity's picture also holds a second, random pedestrian half inside the box behind the
    person; `occlusion`, every camera's probability of an occluder (pole, car, passer-by, bag) in place of the
    camera's own 0.15-0.45. `domain`: the site's look (`spanet.synth.domain`: "a", the default, or "b"), recorded in
    the manifest's options.
    """
    options = dict(train_ids=train_ids, test_ids=test_ids, cameras=cameras, images_per_id=images_per_id,
                   height=height, width=width, distractors=distractors, junk=junk, seed=seed)
    options.update({k: v for k, v in (("crowd", crowd), ("occlusion", occlusion)) if v not in (0.0, None)})
    _check_options(**options)
    site = get_domain(domain)
    options["domain"] = domain
    out_dir = Path(out_dir)
    _prepare_output(out_dir, overwrite=overwrite)
    manifest = out_dir / SYNTH_MANIFEST
    # Written first, so that an interrupted run is still recognised as ours and can be regenerated in place.
    manifest.write_text(json.dumps({"generator": "spanet synth", "complete": False, "options": options}) + "\n")

    identities = build_identities(train_ids + test_ids, seed=seed, domain=site)
    people = {pid: identities[pid - 1] for pid in range(1, train_ids + test_ids + 1)}
    jobs: list[_Job] = []
    for pid in people:
        jobs += _identity_jobs(pid, test=pid > train_ids, seed=seed, cameras=cameras, images=images_per_id)
    jobs += _extra_jobs(0, distractors, tag=_DISTRACTOR, seed=seed, cameras=cameras)
    jobs += _extra_jobs(-1, junk, tag=_JUNK, seed=seed, cameras=cameras)

    start = time.perf_counter()
    views = build_cameras(cameras, seed=seed, domain=site)
    if occlusion is not None:
        views = tuple(dataclasses.replace(camera, occlusion_p=occlusion) for camera in views)
    _render_all(jobs, out_dir=out_dir, people=people, cameras=views, height=height, width=width, progress=progress,
                crowd=crowd, domain=site)
    seconds = time.perf_counter() - start

    statistics = _statistics(jobs)
    record = {
        "generator": "spanet synth",
        "format_version": _FORMAT_VERSION,
        "complete": True,
        "options": options,
        **statistics,
        "distractor_images": sum(job.pid == 0 for job in jobs),
        "junk_images": sum(job.pid < 0 for job in jobs),
        "total_images": len(jobs),
    }
    manifest.write_text(json.dumps(record, indent=2) + "\n")
    return SynthSummary(
        out_dir=out_dir,
        statistics=statistics,
        distractor_images=record["distractor_images"],
        junk_images=record["junk_images"],
        total_images=len(jobs),
        seconds=seconds,
    )
