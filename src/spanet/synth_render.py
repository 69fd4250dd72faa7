"""Drawing one synthetic pedestrian crop for `spanet.synth`.

An identity is a combination of cues, each drawn from a small palette, so any single cue (a red shirt, a backpack,
blond hair) is shared by many people and only the combination tells them apart. Some cues show only from some
viewpoints: a chest logo from the front, a backpack from the back, a handbag from its own side. A camera fixes the
imaging conditions (colour cast, brightness, background, blur, noise, viewpoint mix, how often things occlude), so
a model that keys on one region or on the camera's look fails across cameras and has to combine cues.

Shapes are drawn with PIL at twice the output size and reduced (cheap anti-aliasing); camera effects are numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["Identity", "Camera", "VIEWS", "build_identities", "build_cameras", "random_identity", "render_image"]

RGB = tuple[int, int, int]
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
_OCCLUDERS = ("pole", "car", "person", "box")


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


def _pick(rng: np.random.Generator, options: tuple, p: tuple[float, ...] | None = None):
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
            )
        )
    return tuple(cameras)


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(min(255, max(0, c * factor))) for c in colour)


@dataclass(frozen=True)
class _Frame:
    """Body coordinates (u across, v down, in person heights) -> canvas pixels; mirror=-1 flips left/right."""

    cx: float
    top: float
    ph: float
    mirror: int

    def pt(self, u: float, v: float) -> tuple[float, float]:
        return (self.cx + self.mirror * u * self.ph, self.top + v * self.ph)

    def box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[float, float, float, float]:
        xa, xb = sorted((self.cx + self.mirror * u0 * self.ph, self.cx + self.mirror * u1 * self.ph))
        return (xa, self.top + v0 * self.ph, xb, self.top + v1 * self.ph)

    def poly(self, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [self.pt(u, v) for u, v in points]

    def angles(self, start: float, end: float) -> tuple[float, float]:
        if self.mirror == 1:
            return start, end
        return (180 - end) % 360, (180 - end) % 360 + (end - start)


def _draw_torso(draw: ImageDraw.ImageDraw, f: _Frame, p: Identity, top_half: float, bottom_half: float) -> None:
    """Torso as a trapezoid from shoulders (v=.16) to waist (v=.53) with the clothing pattern inside it."""
    v0, v1 = 0.16, 0.53
    draw.polygon(f.poly([(-top_half, v0), (top_half, v0), (bottom_half, v1), (-bottom_half, v1)]), fill=p.upper)

    def half(v: float) -> float:
        return top_half + (bottom_half - top_half) * (v - v0) / (v1 - v0)

    if p.upper_pattern == "stripes":
        for v in np.arange(v0 + 0.03, v1 - 0.02, 0.055):
            draw.rectangle(f.box(-half(v), v, half(v), v + 0.025), fill=p.pattern)
    elif p.upper_pattern == "checks":
        cell = 0.045
        for row, v in enumerate(np.arange(v0, v1 - 0.01, cell)):
            h = half(v + cell / 2)
            for col, u in enumerate(np.arange(-h, h - 0.005, cell)):
                if (row + col) % 2 == 0:
                    draw.rectangle(f.box(u, v, min(u + cell, h), min(v + cell, v1)), fill=p.pattern)
    elif p.upper_pattern == "yoke":
        draw.polygon(f.poly([(-top_half, v0), (top_half, v0), (half(0.3), 0.3), (-half(0.3), 0.3)]), fill=p.pattern)


def _draw_head(draw: ImageDraw.ImageDraw, f: _Frame, p: Identity, view: str) -> None:
    draw.rectangle(f.box(-0.022, 0.11, 0.022, 0.17), fill=_shade(p.skin, 0.9))
    if view in ("front", "back"):
        if p.long_hair:
            draw.rectangle(f.box(-0.066, 0.04, 0.066, 0.235 if view == "back" else 0.2), fill=p.hair)
        draw.ellipse(f.box(-0.055, 0.0, 0.055, 0.135), fill=p.skin if view == "front" else p.hair)
        if view == "front":
            draw.chord(f.box(-0.06, -0.012, 0.06, 0.11), 180, 360, fill=p.hair)
    else:  # profile facing +u; the frame mirrors it for the other side
        if p.long_hair:
            draw.rectangle(f.box(-0.068, 0.04, 0.0, 0.235), fill=p.hair)
        draw.ellipse(f.box(-0.05, 0.0, 0.062, 0.135), fill=p.skin)
        draw.chord(f.box(-0.058, -0.012, 0.066, 0.125), *f.angles(115, 335), fill=p.hair)
    if p.hat != "none":
        draw.chord(f.box(-0.063, -0.016, 0.068 if view in ("left", "right") else 0.063, 0.1), 180, 360,
                   fill=p.hat_colour)
        if p.hat == "cap" and view == "front":
            draw.ellipse(f.box(-0.07, 0.035, 0.07, 0.06), fill=_shade(p.hat_colour, 0.75))
        elif p.hat == "cap" and view in ("left", "right"):
            draw.polygon(f.poly([(0.03, 0.03), (0.115, 0.045), (0.03, 0.058)]), fill=_shade(p.hat_colour, 0.75))


def _draw_frontal(draw: ImageDraw.ImageDraw, f: _Frame, p: Identity, view: str, rng: np.random.Generator) -> None:
    """Front or back view. Logo only in front, backpack body only from the back (straps from the front)."""
    ws = p.width_scale
    sh, hip = 0.135 * ws, 0.105 * ws
    spread = float(rng.uniform(-0.01, 0.03))
    legs = [(-hip - spread / 2, -0.008), (0.008, hip + spread / 2)]
    for u0, u1 in legs:
        if p.lower_style == "trousers":
            draw.rectangle(f.box(u0, 0.5, u1, 0.935), fill=p.lower)
        else:
            draw.rectangle(f.box(u0 + 0.015, 0.6, u1 - 0.015, 0.935), fill=p.skin)
            if p.lower_style == "shorts":
                draw.rectangle(f.box(u0, 0.5, u1, 0.69), fill=p.lower)
        draw.ellipse(f.box(u0 - 0.004, 0.915, u1 + 0.004, 0.99), fill=p.shoes)
    if p.lower_style == "skirt":
        draw.polygon(f.poly([(-hip, 0.49), (hip, 0.49), (hip * 1.4, 0.72), (-hip * 1.4, 0.72)]), fill=p.lower)
    else:
        draw.rectangle(f.box(-hip, 0.49, hip, 0.57), fill=p.lower)
    _draw_torso(draw, f, p, sh, hip * 1.05)
    for sign in (-1, 1):
        outer, inner = sign * (sh + 0.052), sign * (sh - 0.002)
        sleeve_end = 0.47 if p.long_sleeves else 0.27
        draw.rectangle(f.box(min(outer, inner), 0.17, max(outer, inner), 0.5), fill=p.skin)
        draw.rectangle(f.box(min(outer, inner), 0.165, max(outer, inner), sleeve_end), fill=p.upper)
    if view == "front" and p.logo != "none":
        c, r = 0.27, 0.032
        if p.logo == "circle":
            draw.ellipse(f.box(-r, c - r, r, c + r), fill=p.logo_colour)
        elif p.logo == "square":
            draw.rectangle(f.box(-r, c - r, r, c + r), fill=p.logo_colour)
        else:
            draw.polygon(f.poly([(-r * 1.2, c + r), (r * 1.2, c + r), (0, c - r)]), fill=p.logo_colour)
    _draw_head(draw, f, p, view)
    if p.bag == "backpack":
        if view == "back":
            draw.rounded_rectangle(f.box(-0.1 * ws, 0.17, 0.1 * ws, 0.43), radius=0.02 * f.ph, fill=p.bag_colour)
            draw.rectangle(f.box(-0.06 * ws, 0.31, 0.06 * ws, 0.41), fill=_shade(p.bag_colour, 0.75))
        else:
            for sign in (-1, 1):
                draw.rectangle(f.box(sign * 0.06 * ws, 0.16, sign * 0.088 * ws, 0.33), fill=p.bag_colour)
    elif p.bag == "handbag":
        # Facing the camera, the person's left is on the image right; seen from the back it is on the left.
        sign = (1 if p.bag_side == "left" else -1) * (1 if view == "front" else -1)
        draw.line([f.pt(sign * (sh - 0.02), 0.17), f.pt(sign * (sh + 0.05), 0.42)], fill=p.bag_colour,
                  width=max(1, int(0.012 * f.ph)))
        draw.rectangle(f.box(sign * (sh + 0.005), 0.41, sign * (sh + 0.1), 0.55), fill=p.bag_colour)


def _draw_profile(draw: ImageDraw.ImageDraw, f: _Frame, p: Identity, view: str, rng: np.random.Generator) -> None:
    """Side view facing +u. A handbag shows only on its own side, a backpack sticks out behind."""
    d = 0.075 * p.width_scale
    stride = float(rng.uniform(-1.0, 1.0)) * 0.11
    if p.bag == "backpack":
        draw.rounded_rectangle(f.box(-d - 0.08, 0.18, -d + 0.01, 0.44), radius=0.02 * f.ph, fill=p.bag_colour)
    for foot, shade in ((-stride, 0.78), (stride, 1.0)):
        def leg(v0: float, v1: float, w: float) -> list[tuple[float, float]]:
            t0, t1 = (v0 - 0.5) / 0.435, (v1 - 0.5) / 0.435
            return f.poly([(foot * t0 - w, v0), (foot * t0 + w, v0), (foot * t1 + w, v1), (foot * t1 - w, v1)])

        skin, lower = _shade(p.skin, shade), _shade(p.lower, shade)
        draw.polygon(leg(0.5, 0.935, 0.042), fill=lower if p.lower_style == "trousers" else skin)
        if p.lower_style == "shorts":
            draw.polygon(leg(0.5, 0.69, 0.045), fill=lower)
        draw.ellipse(f.box(foot - 0.04, 0.915, foot + 0.065, 0.985), fill=_shade(p.shoes, shade))
    if p.lower_style == "skirt":
        draw.polygon(f.poly([(-d, 0.49), (d, 0.49), (d + 0.05, 0.72), (-d - 0.05, 0.72)]), fill=p.lower)
    else:
        draw.ellipse(f.box(-d, 0.47, d, 0.58), fill=p.lower)
    _draw_torso(draw, f, p, d, d * 0.95)
    _draw_head(draw, f, p, view)
    swing = -stride * 0.8
    sleeve_end = 0.47 if p.long_sleeves else 0.27

    def arm(v0: float, v1: float, w: float) -> list[tuple[float, float]]:
        t0, t1 = (v0 - 0.17) / 0.33, (v1 - 0.17) / 0.33
        return f.poly([(swing * t0 - w, v0), (swing * t0 + w, v0), (swing * t1 + w, v1), (swing * t1 - w, v1)])

    draw.polygon(arm(0.17, 0.5, 0.024), fill=p.skin)
    draw.polygon(arm(0.165, sleeve_end, 0.028), fill=p.upper)
    if p.bag == "handbag" and p.bag_side == view:
        draw.rectangle(f.box(swing - 0.05, 0.44, swing + 0.05, 0.57), fill=p.bag_colour)


def _draw_background(draw: ImageDraw.ImageDraw, cam: Camera, w: int, h: int, rng: np.random.Generator) -> None:
    horizon = int(h * (cam.horizon + rng.uniform(-0.04, 0.04)))
    dark = _shade(cam.wall, 0.8)
    shift = int(rng.integers(0, 40))
    if cam.texture == "bricks":
        for y in range(shift % 14, horizon, 14):
            draw.line([(0, y), (w, y)], fill=dark, width=2)
            for x in range((y // 14 % 2) * 14 - shift % 28, w, 28):
                draw.line([(x, y), (x, y + 14)], fill=dark, width=2)
    elif cam.texture == "panels":
        for x in range(-shift, w, 40):
            draw.rectangle((x, 0, x + 18, horizon), fill=dark)
            draw.rectangle((x + 4, h * 0.12, x + 14, horizon * 0.7), fill=_shade(cam.wall, 1.25))
    elif cam.texture == "trees":
        green = (60, 110 + shift, 60)
        for _ in range(3):
            x, y = rng.uniform(0, w), rng.uniform(0, horizon * 0.6)
            draw.ellipse((x - 30, y - 24, x + 30, y + 24), fill=green)
            draw.rectangle((x - 3, y + 20, x + 3, horizon), fill=(80, 60, 40))
    else:
        for _ in range(5):
            x, y = rng.uniform(-10, w), rng.uniform(0, horizon)
            colour = tuple(int(v) for v in rng.integers(40, 220, 3))
            draw.rectangle((x, y, x + rng.uniform(8, 40), y + rng.uniform(8, 50)), fill=colour)
    draw.rectangle((0, horizon, w, h), fill=cam.floor)
    for y in range(horizon + 6, h, 18):
        draw.line([(0, y), (w, y)], fill=_shade(cam.floor, 0.85), width=1)


def _draw_occluder(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    kind = _pick(rng, _OCCLUDERS, (0.3, 0.3, 0.25, 0.15))
    colour = tuple(int(v) for v in rng.integers(20, 235, 3))
    side = 1 if rng.random() < 0.5 else -1
    if kind == "pole":
        x, pw = rng.uniform(0.1, 0.9) * w, rng.uniform(0.07, 0.14) * w
        draw.rectangle((x - pw / 2, 0, x + pw / 2, h), fill=_shade(colour, 0.6))
    elif kind == "car":
        top = h * rng.uniform(0.55, 0.75)
        x0, x1 = (-0.2 * w, rng.uniform(0.5, 1.1) * w) if side < 0 else (rng.uniform(-0.1, 0.5) * w, 1.2 * w)
        draw.rounded_rectangle((x0, top, x1, h + 20), radius=12, fill=colour)
        draw.rectangle((x0 + 10, top + 6, x1 - 10, top + (h - top) * 0.35), fill=(70, 90, 110))
    elif kind == "person":
        cx, top = (0.05 if side < 0 else 0.95) * w + rng.uniform(-0.1, 0.1) * w, h * rng.uniform(0.05, 0.3)
        draw.ellipse((cx - 0.1 * w, top, cx + 0.1 * w, top + 0.1 * h), fill=_shade(colour, 0.5))
        draw.rounded_rectangle((cx - 0.24 * w, top + 0.1 * h, cx + 0.24 * w, h + 10), radius=10, fill=colour)
    else:
        x = rng.uniform(0.0, 0.7) * w
        draw.rectangle((x, h * rng.uniform(0.6, 0.8), x + rng.uniform(0.3, 0.5) * w, h), fill=colour)


def _placement(rng: np.random.Generator, p: Identity, w: int, h: int, framing: str) -> tuple[float, float, float]:
    """Where the detector's box put the person: jitter, sometimes cut-off ("fragment"/"far" for bad boxes)."""
    if framing == "fragment":
        ph = h * rng.uniform(1.4, 2.4)
        return w * rng.uniform(0.2, 0.8), rng.uniform(-ph + 0.35 * h, 0.15 * h), ph
    if framing == "far":
        ph = h * rng.uniform(0.25, 0.5)
        return w * rng.uniform(0.15, 0.85), h * rng.uniform(0.1, 0.6), ph
    ph = h * 0.88 * p.height_scale * rng.uniform(0.9, 1.06)
    cx = w * (0.5 + rng.uniform(-0.1, 0.1))
    top = (h - ph) / 2 + h * rng.uniform(-0.05, 0.05)
    if rng.random() < 0.12:
        cut = int(rng.integers(3))
        if cut == 0:
            top += h * rng.uniform(0.12, 0.28)
        elif cut == 1:
            top -= h * rng.uniform(0.08, 0.16)
        else:
            cx += w * rng.choice([-1, 1]) * rng.uniform(0.25, 0.4)
    return cx, top, ph


def render_image(
    *,
    person: Identity | None,
    camera: Camera,
    rng: np.random.Generator,
    height: int,
    width: int,
    framing: str = "normal",
) -> Image.Image:
    """One crop of `person` (or of background only when None) as `camera` sees it; every random draw uses `rng`."""
    w, h = 2 * width, 2 * height
    canvas = Image.new("RGB", (w, h), camera.wall)
    draw = ImageDraw.Draw(canvas)
    _draw_background(draw, camera, w, h, rng)
    if person is not None:
        view = VIEWS[int(rng.choice(4, p=camera.view_probs))]
        cx, top, ph = _placement(rng, person, w, h, framing)
        frame = _Frame(cx=cx, top=top, ph=ph, mirror=-1 if view == "left" else 1)
        if view in ("front", "back"):
            _draw_frontal(draw, frame, person, view, rng)
        else:
            _draw_profile(draw, frame, person, view, rng)
    if rng.random() < camera.occlusion_p:
        _draw_occluder(draw, w, h, rng)
    image = canvas.reduce(2)
    if camera.pixelate < 1.0:
        small = (max(8, int(width * camera.pixelate)), max(8, int(height * camera.pixelate)))
        image = image.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    if camera.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(camera.blur))
    gain = np.asarray(camera.gain, dtype=np.float32) * np.float32(camera.brightness * rng.uniform(0.88, 1.12))
    pixels = np.asarray(image, dtype=np.float32) * gain
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(camera.noise)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
