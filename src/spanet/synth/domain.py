"""Named imaging domains for the synthetic data: the look of a whole site, for domain-shift experiments.

A domain fixes the distributions that `spanet.synth.scene` draws people and cameras from: clothing palettes and
styles, body shapes, and the cameras' colour casts, lighting, backgrounds and optics. Domain "a" is the synthetic
data spanet always made (every value below is the one it used, drawn in the same order, so its bytes are
unchanged); domain "b" is another site — other clothes, other bodies, amber and green colour casts, other walls, on
cameras as clean as a's — so that a model trained on one and tested on the other loses clearly, while b itself is as
easy to learn as a (docs/adapt.md measures both).
"""

from __future__ import annotations

from dataclasses import dataclass

from spanet.errors import SpanetError

__all__ = ["RGB", "Domain", "DOMAINS", "get_domain"]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Domain:
    """The distributions one site's people and cameras are drawn from (probabilities in the order of the options)."""

    name: str
    # People: palettes, clothing styles and how often each cue shows.
    upper_colours: tuple[RGB, ...]
    lower_colours: tuple[RGB, ...]
    hair_colours: tuple[RGB, ...]
    skin_tones: tuple[RGB, ...]
    shoe_colours: tuple[RGB, ...]
    accent_colours: tuple[RGB, ...]  # bags (the first four), logos, hats
    upper_patterns: tuple[str, ...]  # names `render` draws: plain, stripes, checks, yoke, vstripes, band
    upper_pattern_p: tuple[float, ...]
    lower_styles: tuple[str, ...]  # trousers, shorts, skirt
    lower_style_p: tuple[float, ...]
    long_sleeves_p: float
    long_hair_p: float
    bag_p: tuple[float, float, float]  # none, backpack, handbag
    logo_p: tuple[float, float, float, float]  # none, circle, square, triangle
    hat_p: tuple[float, float, float]  # none, cap, beanie
    height_scales: tuple[float, ...]
    width_scales: tuple[float, ...]
    # Cameras: colour casts (RGB gains), lighting, background and optics ranges.
    colour_casts: tuple[tuple[float, float, float], ...]
    brightness: tuple[float, float]
    wall: tuple[int, int]  # per-channel range of the wall colour
    floor_grey: tuple[int, int]
    textures: tuple[str, ...]  # bricks, panels, clutter, trees
    blur: tuple[float, ...]
    pixelate: tuple[float, ...]
    noise: tuple[float, float]
    occlusion: tuple[float, float]
    light_across: float  # brightness slope across the picture drawn from ±this
    light_down: tuple[float, float]


DOMAIN_A = Domain(
    name="a",
    upper_colours=(
        (30, 30, 34), (228, 228, 222), (128, 128, 134), (176, 34, 40),
        (44, 84, 172), (46, 122, 70), (224, 186, 52), (222, 140, 172),
    ),
    lower_colours=((32, 32, 36), (60, 80, 126), (118, 118, 124), (178, 158, 112), (104, 70, 46), (216, 216, 208)),
    hair_colours=((22, 20, 20), (94, 58, 34), (206, 170, 100), (166, 166, 166)),
    skin_tones=((238, 202, 172), (198, 150, 112), (122, 86, 62)),
    shoe_colours=((24, 24, 24), (236, 236, 236), (112, 72, 42), (178, 40, 40)),
    accent_colours=((26, 26, 30), (190, 40, 36), (40, 70, 170), (230, 200, 40), (240, 240, 240)),
    upper_patterns=("plain", "stripes", "checks", "yoke"),
    upper_pattern_p=(0.4, 0.2, 0.2, 0.2),
    lower_styles=("trousers", "shorts", "skirt"),
    lower_style_p=(0.6, 0.2, 0.2),
    long_sleeves_p=0.6,
    long_hair_p=0.4,
    bag_p=(0.4, 0.3, 0.3),
    logo_p=(0.5, 0.17, 0.17, 0.16),
    hat_p=(0.6, 0.2, 0.2),
    height_scales=(0.92, 0.96, 1.0),
    width_scales=(0.85, 1.0, 1.2),
    colour_casts=(
        (1.00, 1.00, 1.00), (1.14, 1.00, 0.80), (0.84, 0.97, 1.16),
        (0.92, 1.10, 0.88), (1.08, 0.88, 1.06), (1.16, 1.06, 0.68),
    ),
    brightness=(0.72, 1.22),
    wall=(60, 200),
    floor_grey=(70, 190),
    textures=("bricks", "panels", "clutter", "trees"),
    blur=(0.0, 0.4, 0.8, 1.2),
    pixelate=(1.0, 1.0, 0.55),
    noise=(2.0, 9.0),
    occlusion=(0.15, 0.45),
    light_across=0.35,
    light_down=(-0.3, 0.2),
)  # fmt: skip

# Another site: half of the clothing colours are hues domain a never uses (olive, teal, orange, purple), vertical
# stripes and chest bands, more shorts and skirts, taller and slimmer people; amber, green and violet light casts and
# other walls and floors. Its cameras are as clean as a's (the same brightness, blur, pixelation, noise, occlusion and
# lighting slopes): with b's earlier dimmer, softer, noisier cameras a model trained on b with labels learned more
# slowly than one trained on a, so supervised training on b was no upper bound (docs/adapt.md).
DOMAIN_B = Domain(
    name="b",
    upper_colours=(
        (30, 30, 34), (228, 228, 222), (128, 128, 134), (176, 34, 40),
        (112, 118, 42), (38, 128, 128), (214, 112, 36), (110, 52, 140),
    ),
    lower_colours=((32, 32, 36), (60, 80, 126), (118, 118, 124), (84, 92, 52), (146, 64, 48), (60, 44, 84)),
    hair_colours=((22, 20, 20), (94, 58, 34), (60, 30, 26), (140, 60, 30)),
    skin_tones=((250, 218, 190), (170, 116, 84), (92, 62, 44)),
    shoe_colours=((90, 60, 110), (60, 110, 80), (200, 170, 120), (40, 60, 110)),
    accent_colours=((26, 26, 30), (190, 40, 36), (220, 90, 160), (40, 160, 90), (240, 140, 40)),
    upper_patterns=("plain", "vstripes", "band", "checks"),
    upper_pattern_p=(0.25, 0.3, 0.3, 0.15),
    lower_styles=("trousers", "shorts", "skirt"),
    lower_style_p=(0.3, 0.35, 0.35),
    long_sleeves_p=0.3,
    long_hair_p=0.6,
    bag_p=(0.2, 0.4, 0.4),
    logo_p=(0.3, 0.1, 0.3, 0.3),
    hat_p=(0.3, 0.35, 0.35),
    height_scales=(0.98, 1.02, 1.06),
    width_scales=(0.72, 0.8, 0.9),
    # amber, green, orange, teal, yellow-green and violet, no stronger than a's casts (gains 0.68-1.16): b's
    # earlier casts (gains 0.60-1.25) made its people harder to match across cameras than a's (docs/adapt.md)
    colour_casts=(
        (1.12, 1.02, 0.80), (0.86, 1.14, 0.92), (1.14, 0.92, 0.78),
        (0.84, 1.02, 1.14), (1.06, 1.12, 0.72), (0.98, 0.86, 1.14),
    ),
    wall=(40, 230),
    floor_grey=(50, 160),
    textures=("clutter", "trees", "bricks", "panels"),
    # a's lighting, optics and occlusion, so that b's cameras make it no slower to learn than a
    brightness=DOMAIN_A.brightness,
    blur=DOMAIN_A.blur,
    pixelate=DOMAIN_A.pixelate,
    noise=DOMAIN_A.noise,
    occlusion=DOMAIN_A.occlusion,
    light_across=DOMAIN_A.light_across,
    light_down=DOMAIN_A.light_down,
)  # fmt: skip

DOMAINS: dict[str, Domain] = {domain.name: domain for domain in (DOMAIN_A, DOMAIN_B)}


def get_domain(name: str) -> Domain:
    """The domain called `name`; a clear error naming the known ones otherwise."""
    if name not in DOMAINS:
        raise SpanetError(f"unknown synthetic domain {name!r}: choose one of {', '.join(sorted(DOMAINS))}")
    return DOMAINS[name]
