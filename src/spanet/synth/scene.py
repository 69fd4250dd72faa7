"""Who and what the synthetic dataset shows: identities as cue combinations, cameras as imaging conditions.

Each cue comes from a small palette of the site's `spanet.synth.domain.Domain`, so any single cue (a red shirt, a
backpack, blond hair) is shared by many people and only the combination tells them apart. A camera fixes its colour
cast, brightness, background, blur, noise, viewpoint mix and how often things occlude. Both are drawn from seeded
generators: same seed, same cast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from spanet.synth.domain import DOMAINS, RGB, Domain

__all__ = ["RGB", "VIEWS", "Identity", "Camera", "random_identity", "build_identities", "build_cameras"]

T = TypeVar("T")
VIEWS = ("front", "back", "left", "right")
BAGS = ("none", "backpack", "handbag")
LOGOS = ("none", "circle", "square", "triangle")
HATS = ("none", "cap", "beanie")

# (front, back, left, right) probabilities: camera 1 sees mostly fronts, 2 backs, 3 and 4 sides, 5 and 6 a mix.
VIEW_MIXES = (
    (0.70, 0.10, 0.10, 0.10),
    (0.10, 0.70, 0.10, 0.10),
    (0.10, 0.10, 0.60, 0.20),
    (0.10, 0.10, 0.20, 0.60),
    (0.25, 0.25, 0.25, 0.25),
    (0.35, 0.35, 0.15, 0.15),
)


@dataclass(frozen=True)
class Identity:
    """One person as a combination of cues; every field comes from a small palette of its domain."""

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


def random_identity(rng: np.random.Generator, domain: Domain = DOMAINS["a"]) -> Identity:
    """Draw every cue independently from `domain`; used for real identities and for distractor passers-by."""
    d = domain
    upper = _pick(rng, d.upper_colours)
    others = tuple(c for c in d.upper_colours if c != upper)
    accents = tuple(c for c in d.accent_colours if c != upper)
    return Identity(
        upper=upper,
        upper_pattern=_pick(rng, d.upper_patterns, d.upper_pattern_p),
        pattern=_pick(rng, others),
        long_sleeves=bool(rng.random() < d.long_sleeves_p),
        lower=_pick(rng, d.lower_colours),
        lower_style=_pick(rng, d.lower_styles, d.lower_style_p),
        hair=_pick(rng, d.hair_colours),
        long_hair=bool(rng.random() < d.long_hair_p),
        skin=_pick(rng, d.skin_tones),
        shoes=_pick(rng, d.shoe_colours),
        bag=_pick(rng, BAGS, d.bag_p),
        bag_colour=_pick(rng, d.accent_colours[:4]),
        bag_side=_pick(rng, ("left", "right")),
        logo=_pick(rng, LOGOS, d.logo_p),
        logo_colour=_pick(rng, accents),
        hat=_pick(rng, HATS, d.hat_p),
        hat_colour=_pick(rng, d.accent_colours),
        height_scale=_pick(rng, d.height_scales),
        width_scale=_pick(rng, d.width_scales),
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


def build_identities(count: int, *, seed: int, domain: Domain = DOMAINS["a"]) -> tuple[Identity, ...]:
    """`count` people of `domain` whose cue combinations all differ (redrawn on a clash), the same for the same seed."""
    rng = np.random.default_rng([seed, 1])
    people: list[Identity] = []
    seen: set[tuple] = set()
    while len(people) < count:
        person = random_identity(rng, domain)
        key = _visible_key(person)
        if key not in seen:
            seen.add(key)
            people.append(person)
    return tuple(people)


def build_cameras(count: int, *, seed: int, domain: Domain = DOMAINS["a"]) -> tuple[Camera, ...]:
    """Cameras of `domain` with distinct colour casts, backgrounds and viewpoint mixes (shuffled by the seed)."""
    d = domain
    order = np.random.default_rng([seed, 2]).permutation(len(d.colour_casts))
    textures = np.random.default_rng([seed, 3]).permutation(len(d.textures))
    cameras = []
    for index in range(count):
        rng = np.random.default_rng([seed, 4, index])
        views = VIEW_MIXES[index] if index < len(VIEW_MIXES) else tuple(rng.dirichlet(np.full(4, 2.0)))
        cast = np.asarray(d.colour_casts[order[index % len(order)]]) * rng.normal(1.0, 0.03, 3)
        grey = rng.integers(*d.floor_grey)
        cameras.append(
            Camera(
                view_probs=tuple(float(v) for v in views),
                gain=tuple(float(g) for g in cast),
                brightness=float(rng.uniform(*d.brightness)),
                wall=tuple(int(v) for v in rng.integers(*d.wall, 3)),
                floor=tuple(int(v) for v in np.clip(grey + rng.integers(-25, 25, 3), 0, 255)),
                horizon=float(rng.uniform(0.5, 0.75)),
                texture=d.textures[textures[index % len(textures)]],
                blur=float(rng.choice(list(d.blur))),
                pixelate=float(rng.choice(list(d.pixelate))),
                noise=float(rng.uniform(*d.noise)),
                occlusion_p=float(rng.uniform(*d.occlusion)),
                light=(float(rng.uniform(-d.light_across, d.light_across)), float(rng.uniform(*d.light_down))),
            )
        )
    return tuple(cameras)
