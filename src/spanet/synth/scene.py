"""Who and what the synthetic dataset shows: identities as cue combinations, cameras as imaging conditions.

Each cue comes from a small palette, so any single cue (a red shirt, a backpack, blond hair) is shared by many
people and only the combination tells them apart. A camera fixes its colour cast, brightness, background, blur,
noise, viewpoint mix and how often things occlude. Both are drawn from seeded generators: same seed, same cast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

__all__ = ["RGB", "VIEWS", "Identity", "Camera", "random_identity", "build_identities", "build_cameras"]

RGB = tuple[int, int, int]
T = TypeVar("T")
VIEWS = ("front", "back", "left", "right")

UPPER_COLOURS: tuple[RGB, ...] = (
    (30, 30, 34), (228, 228, 222), (128, 128, 134), (176, 34, 40),
    (44, 84, 172), (46, 122, 70), (224, 186, 52), (222, 140, 172),
)
LOWER_COLOURS: tuple[RGB, ...] = (
    (32, 32, 36), (60, 80, 126), (118, 118, 124), (178, 158, 112), (104, 70, 46), (216, 216, 208),
)
HAIR_COLOURS: tuple[RGB, ...] = ((22, 20, 20), (94, 58, 34), (206, 170, 100), (166, 166, 166))
SKIN_TONES: tuple[RGB, ...] = ((238, 202, 172), (198, 150, 112), (122, 86, 62))
SHOE_COLOURS: tuple[RGB, ...] = ((24, 24, 24), (236, 236, 236), (112, 72, 42), (178, 40, 40))
ACCENT_COLOURS: tuple[RGB, ...] = ((26, 26, 30), (190, 40, 36), (40, 70, 170), (230, 200, 40), (240, 240, 240))
UPPER_PATTERNS = ("plain", "stripes", "checks", "yoke")
LOWER_STYLES = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "handbag")
LOGOS = ("none", "circle", "square", "triangle")
HATS = ("none", "cap", "beanie")
HEIGHT_SCALES = (0.92, 0.96, 1.0)
WIDTH_SCALES = (0.85, 1.0, 1.2)

# (front, back, left, right) probabilities: camera 1 sees mostly fronts, 2 backs, 3 and 4 sides, 5 and 6 a mix.
VIEW_MIXES = (
    (0.70, 0.10, 0.10, 0.10),
    (0.10, 0.70, 0.10, 0.10),
    (0.10, 0.10, 0.60, 0.20),
    (0.10, 0.10, 0.20, 0.60),
    (0.25, 0.25, 0.25, 0.25),
    (0.35, 0.35, 0.15, 0.15),
)
COLOUR_CASTS = (
    (1.00, 1.00, 1.00), (1.14, 1.00, 0.80), (0.84, 0.97, 1.16),
    (0.92, 1.10, 0.88), (1.08, 0.88, 1.06), (1.16, 1.06, 0.68),
)
TEXTURES = ("bricks", "panels", "clutter", "trees")


@dataclass(frozen=True)
class Identity:
    """One person as a combination of cues; every field comes from a small palette above."""

    upper: RGB
    upper_pattern: str
    pattern: RGB
    long_sleeves: bool
    lower: RGB
    lower_style: str
    hair: RGB
    long_hair: bool
    skin: RGB
    shoes: RGB
    bag: str
    bag_colour: RGB
    bag_side: str  # "left" | "right": the person's side a handbag hangs on
    logo: str
    logo_colour: RGB
    hat: str
    hat_colour: RGB
    height_scale: float
    width_scale: float


@dataclass(frozen=True)
class Camera:
    """Imaging conditions shared by every picture one camera takes."""

    view_probs: tuple[float, float, float, float]
    gain: tuple[float, float, float]
    brightness: float
    wall: RGB
    floor: RGB
    horizon: float
    texture: str
    blur: float
    pixelate: float
    noise: float
    occlusion_p: float
    light: tuple[float, float]  # brightness slope across and down the picture (a lamp or window to one side)


def _pick(rng: np.random.Generator, options: tuple[T, ...], p: tuple[float, ...] | None = None) -> T:
    return options[int(rng.choice(len(options), p=p))]


def random_identity(rng: np.random.Generator) -> Identity:
    """Draw every cue independently; used for real identities and for distractor passers-by."""
    upper = _pick(rng, UPPER_COLOURS)
    others = tuple(c for c in UPPER_COLOURS if c != upper)
    accents = tuple(c for c in ACCENT_COLOURS if c != upper)
    return Identity(
        upper=upper,
        upper_pattern=_pick(rng, UPPER_PATTERNS, (0.4, 0.2, 0.2, 0.2)),
        pattern=_pick(rng, others),
        long_sleeves=bool(rng.random() < 0.6),
        lower=_pick(rng, LOWER_COLOURS),
        lower_style=_pick(rng, LOWER_STYLES, (0.6, 0.2, 0.2)),
        hair=_pick(rng, HAIR_COLOURS),
        long_hair=bool(rng.random() < 0.4),
        skin=_pick(rng, SKIN_TONES),
        shoes=_pick(rng, SHOE_COLOURS),
        bag=_pick(rng, BAGS, (0.4, 0.3, 0.3)),
        bag_colour=_pick(rng, ACCENT_COLOURS[:4]),
        bag_side=_pick(rng, ("left", "right")),
        logo=_pick(rng, LOGOS, (0.5, 0.17, 0.17, 0.16)),
        logo_colour=_pick(rng, accents),
        hat=_pick(rng, HATS, (0.6, 0.2, 0.2)),
        hat_colour=_pick(rng, ACCENT_COLOURS),
        height_scale=_pick(rng, HEIGHT_SCALES),
        width_scale=_pick(rng, WIDTH_SCALES),
    )


def _visible_key(person: Identity) -> tuple:
    """The cues that show in a picture (e.g. a bag's side matters only if there is a handbag)."""
    return (
        person.upper, person.upper_pattern, person.pattern if person.upper_pattern != "plain" else None,
        person.long_sleeves, person.lower, person.lower_style, person.hair, person.long_hair, person.skin,
        person.shoes, person.bag, person.bag_colour if person.bag != "none" else None,
        person.bag_side if person.bag == "handbag" else None, person.logo,
        person.logo_colour if person.logo != "none" else None, person.hat,
        person.hat_colour if person.hat != "none" else None, person.height_scale, person.width_scale,
    )


def build_identities(count: int, *, seed: int) -> tuple[Identity, ...]:
    """`count` people whose cue combinations all differ (redrawn on a clash), the same for the same seed."""
    rng = np.random.default_rng([seed, 1])
    people: list[Identity] = []
    seen: set[tuple] = set()
    while len(people) < count:
        person = random_identity(rng)
        key = _visible_key(person)
        if key not in seen:
            seen.add(key)
            people.append(person)
    return tuple(people)


def build_cameras(count: int, *, seed: int) -> tuple[Camera, ...]:
    """Cameras with distinct colour casts, backgrounds and viewpoint mixes (shuffled by the seed)."""
    order = np.random.default_rng([seed, 2]).permutation(len(COLOUR_CASTS))
    textures = np.random.default_rng([seed, 3]).permutation(len(TEXTURES))
    cameras = []
    for index in range(count):
        rng = np.random.default_rng([seed, 4, index])
        views = VIEW_MIXES[index] if index < len(VIEW_MIXES) else tuple(rng.dirichlet(np.full(4, 2.0)))
        cast = np.asarray(COLOUR_CASTS[order[index % len(order)]]) * rng.normal(1.0, 0.03, 3)
        grey = rng.integers(70, 190)
        cameras.append(
            Camera(
                view_probs=tuple(float(v) for v in views),
                gain=tuple(float(g) for g in cast),
                brightness=float(rng.uniform(0.72, 1.22)),
                wall=tuple(int(v) for v in rng.integers(60, 200, 3)),
                floor=tuple(int(v) for v in np.clip(grey + rng.integers(-25, 25, 3), 0, 255)),
                horizon=float(rng.uniform(0.5, 0.75)),
                texture=TEXTURES[textures[index % len(textures)]],
                blur=float(rng.choice([0.0, 0.4, 0.8, 1.2])),
                pixelate=float(rng.choice([1.0, 1.0, 0.55])),
                noise=float(rng.uniform(2.0, 9.0)),
                occlusion_p=float(rng.uniform(0.15, 0.45)),
                light=(float(rng.uniform(-0.35, 0.35)), float(rng.uniform(-0.3, 0.2))),
            )
        )
    return tuple(cameras)
