"""Drawing one synthetic pedestrian crop for `spanet.synth.generate`.

Some cues show only from some viewpoints: a chest logo from the front, a backpack from the back, a handbag from its
own side; the camera (see `spanet.synth.scene`) adds its colour cast, background, blur, noise and occluders, and the
"detector" jitters and sometimes cuts the box. So a model that keys on one region or on the camera's look fails
across cameras and has to combine cues.

Shapes are drawn with PIL at twice the output size and reduced (cheap anti-aliasing); camera effects are numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from spanet.synth.scene import RGB, VIEWS, Camera, Identity

__all__ = ["render_image", "render_person", "render_background"]

_OCCLUDERS = ("pole", "car", "person", "box")


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
    elif p.upper_pattern == "vstripes":  # vertical stripes, within the waist's width
        for u in np.arange(-bottom_half + 0.01, bottom_half - 0.01, 0.05):
            draw.rectangle(f.box(u, v0, u + 0.022, v1), fill=p.pattern)
    elif p.upper_pattern == "band":  # one wide band across the chest
        draw.polygon(f.poly([(-half(0.26), 0.26), (half(0.26), 0.26), (half(0.37), 0.37), (-half(0.37), 0.37)]),
                     fill=p.pattern)


def _draw_head(draw: ImageDraw.ImageDraw, f: _Frame, p: Identity, view: str) -> None:
    draw.rectangle(f.box(-0.022, 0.11, 0.022, 0.17), fill=_shade(p.skin, 0.9))
    if view in ("front", "back"):
        if p.long_hair and view == "back":
            draw.rectangle(f.box(-0.066, 0.04, 0.066, 0.235), fill=p.hair)
        elif p.long_hair:  # strands beside the face, not across the chin
            for u in (-0.066, 0.036):
                draw.rectangle(f.box(u, 0.04, u + 0.03, 0.2), fill=p.hair)
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


def _limb(f: _Frame, v0: float, v1: float, root: float, end: float, reach: float, half_width: float
          ) -> list[tuple[float, float]]:
    """The stretch v0..v1 of a straight limb hanging from (0, root) to (reach, end), as a polygon."""
    t0, t1 = (v0 - root) / (end - root), (v1 - root) / (end - root)
    return f.poly([(reach * t0 - half_width, v0), (reach * t0 + half_width, v0),
                   (reach * t1 + half_width, v1), (reach * t1 - half_width, v1)])


def _draw_profile(draw: ImageDraw.ImageDraw, f: _Frame, p: Identity, view: str, rng: np.random.Generator) -> None:
    """Side view facing +u. A handbag shows only on its own side, a backpack sticks out behind."""
    d = 0.075 * p.width_scale
    stride = float(rng.uniform(-1.0, 1.0)) * 0.11
    if p.bag == "backpack":
        draw.rounded_rectangle(f.box(-d - 0.08, 0.18, -d + 0.01, 0.44), radius=0.02 * f.ph, fill=p.bag_colour)
    for foot, shade in ((-stride, 0.78), (stride, 1.0)):  # far leg darker, near leg on top
        skin, lower = _shade(p.skin, shade), _shade(p.lower, shade)
        draw.polygon(_limb(f, 0.5, 0.935, 0.5, 0.935, foot, 0.042), fill=lower if p.lower_style == "trousers" else skin)
        if p.lower_style == "shorts":
            draw.polygon(_limb(f, 0.5, 0.69, 0.5, 0.935, foot, 0.045), fill=lower)
        draw.ellipse(f.box(foot - 0.04, 0.915, foot + 0.065, 0.985), fill=_shade(p.shoes, shade))
    if p.lower_style == "skirt":
        draw.polygon(f.poly([(-d, 0.49), (d, 0.49), (d + 0.05, 0.72), (-d - 0.05, 0.72)]), fill=p.lower)
    else:
        draw.ellipse(f.box(-d, 0.47, d, 0.58), fill=p.lower)
    _draw_torso(draw, f, p, d, d * 0.95)
    _draw_head(draw, f, p, view)
    swing = -stride * 0.8  # the near arm swings against the near leg
    sleeve_end = 0.47 if p.long_sleeves else 0.27
    draw.polygon(_limb(f, 0.17, 0.5, 0.17, 0.5, swing, 0.024), fill=p.skin)
    draw.polygon(_limb(f, 0.165, sleeve_end, 0.17, 0.5, swing, 0.028), fill=p.upper)
    if p.bag == "handbag" and p.bag_side == view:
        draw.rectangle(f.box(swing - 0.05, 0.44, swing + 0.05, 0.57), fill=p.bag_colour)


def _draw_background(draw: ImageDraw.ImageDraw, cam: Camera, w: int, h: int, rng: np.random.Generator,
                     unit: float | None = None) -> None:  # fmt: skip
    """The camera's fixed scene (wall texture, floor, horizon), shifted a little per picture."""
    unit = w / 128 if unit is None else unit  # texture sizes are tuned for the default 2 x 64 pixel wide canvas
    horizon = int(h * (cam.horizon + rng.uniform(-0.04, 0.04)))
    dark = _shade(cam.wall, 0.8)
    shift = int(rng.integers(0, 40))
    if cam.texture == "bricks":
        row, line = max(4, round(14 * unit)), max(1, round(2 * unit))
        for y in range(shift % row, horizon, row):
            draw.line([(0, y), (w, y)], fill=dark, width=line)
            for x in range((y // row % 2) * row - shift % (2 * row), w, 2 * row):
                draw.line([(x, y), (x, y + row)], fill=dark, width=line)
    elif cam.texture == "panels":
        for x in np.arange(-shift * unit, w, 40 * unit):
            draw.rectangle((x, 0, x + 18 * unit, horizon), fill=dark)
            draw.rectangle((x + 4 * unit, h * 0.12, x + 14 * unit, horizon * 0.7), fill=_shade(cam.wall, 1.25))
    elif cam.texture == "trees":
        green = (60, 110 + shift, 60)
        for _ in range(3):
            x, y = rng.uniform(0, w), rng.uniform(0, horizon * 0.6)
            draw.ellipse((x - 30 * unit, y - 24 * unit, x + 30 * unit, y + 24 * unit), fill=green)
            draw.rectangle((x - 3 * unit, y + 20 * unit, x + 3 * unit, horizon), fill=(80, 60, 40))
    else:
        for _ in range(5):
            x, y = rng.uniform(-10 * unit, w), rng.uniform(0, horizon)
            colour = tuple(int(v) for v in rng.integers(40, 220, 3))
            draw.rectangle((x, y, x + rng.uniform(8, 40) * unit, y + rng.uniform(8, 50) * unit), fill=colour)
    draw.rectangle((0, horizon, w, h), fill=cam.floor)
    for y in np.arange(horizon + 6 * unit, h, 18 * unit):
        draw.line([(0, y), (w, y)], fill=_shade(cam.floor, 0.85), width=1)


def _draw_occluder(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    kind = _OCCLUDERS[int(rng.choice(len(_OCCLUDERS), p=(0.3, 0.3, 0.25, 0.15)))]
    grey = rng.integers(40, 200)
    colour = tuple(int(v) for v in np.clip(grey + rng.integers(-50, 50, 3), 0, 255))
    side = 1 if rng.random() < 0.5 else -1
    if kind == "pole":
        x, pw = rng.uniform(0.1, 0.9) * w, rng.uniform(0.07, 0.14) * w
        draw.rectangle((x - pw / 2, 0, x + pw / 2, h), fill=_shade(colour, 0.6))
    elif kind == "car":
        top = h * rng.uniform(0.55, 0.75)
        x0, x1 = (-0.2 * w, rng.uniform(0.5, 1.1) * w) if side < 0 else (rng.uniform(-0.1, 0.5) * w, 1.2 * w)
        draw.rounded_rectangle((x0, top, x1, h + 0.1 * w), radius=0.1 * w, fill=colour)
        draw.rectangle((x0 + 0.08 * w, top + 0.05 * w, x1 - 0.08 * w, top + (h - top) * 0.35), fill=(70, 90, 110))
    elif kind == "person":
        cx, top = (0.05 if side < 0 else 0.95) * w + rng.uniform(-0.1, 0.1) * w, h * rng.uniform(0.05, 0.3)
        draw.ellipse((cx - 0.1 * w, top, cx + 0.1 * w, top + 0.1 * h), fill=_shade(colour, 0.5))
        draw.rounded_rectangle((cx - 0.24 * w, top + 0.1 * h, cx + 0.24 * w, h + 0.1 * w), radius=0.08 * w, fill=colour)
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


def _draw_person(draw: ImageDraw.ImageDraw, person: Identity, camera: Camera, w: int, h: int, rng: np.random.Generator,
                 *, framing: str, shift: float = 0.0) -> None:  # fmt: skip
    """`person` in a viewpoint the camera favours, placed by the detector's box (moved sideways by `shift` widths)."""
    view = VIEWS[int(rng.choice(4, p=camera.view_probs))]
    cx, top, ph = _placement(rng, person, w, h, framing)
    frame = _Frame(cx=cx + shift * w, top=top, ph=ph, mirror=-1 if view == "left" else 1)
    if view in ("front", "back"):
        _draw_frontal(draw, frame, person, view, rng)
    else:
        _draw_profile(draw, frame, person, view, rng)


def render_image(
    *,
    person: Identity | None,
    camera: Camera,
    rng: np.random.Generator,
    height: int,
    width: int,
    framing: str = "normal",
    companion: Identity | None = None,
) -> Image.Image:
    """One crop of `person` (or of background only when None) as `camera` sees it; every random draw uses `rng`.

    `companion`: another pedestrian standing half inside the box, to one side and behind `person` (a crowded scene);
    None (the default) draws nothing and no random numbers, so the picture is exactly the one without the option.
    """
    w, h = 2 * width, 2 * height
    canvas = Image.new("RGB", (w, h), camera.wall)
    draw = ImageDraw.Draw(canvas)
    _draw_background(draw, camera, w, h, rng)
    if companion is not None:
        shift = rng.choice([-1, 1]) * rng.uniform(0.35, 0.6)  # widths to the left or right of the box's centre
        _draw_person(draw, companion, camera, w, h, rng, framing="normal", shift=shift)
    if person is not None:
        _draw_person(draw, person, camera, w, h, rng, framing=framing)
    if rng.random() < camera.occlusion_p:
        _draw_occluder(draw, w, h, rng)
    image = canvas.reduce(2)
    if camera.pixelate < 1.0:
        small = (max(8, int(width * camera.pixelate)), max(8, int(height * camera.pixelate)))
        image = image.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    if camera.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(camera.blur))
    gain = np.asarray(camera.gain, dtype=np.float32) * np.float32(camera.brightness * rng.uniform(0.88, 1.12))
    across = 1 + np.float32(camera.light[0]) * np.linspace(-0.5, 0.5, width, dtype=np.float32)
    down = 1 + np.float32(camera.light[1]) * np.linspace(-0.5, 0.5, height, dtype=np.float32)
    pixels = np.asarray(image, dtype=np.float32) * (down[:, None, None] * across[None, :, None]) * gain
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(camera.noise)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def render_person(*, person: Identity, view: str, height: int, rng: np.random.Generator) -> Image.Image:
    """`person` alone, `height` pixels tall, seen from `view`, on a transparent RGBA canvas (for video frames).

    The same drawing as `render_image`, without background, camera effects or detector jitter; `rng` only picks the
    stride. The canvas is `height` tall and wide enough for bags and swinging limbs; its alpha is the body's mask.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    h = 2 * height
    w = 2 * max(4, int(round(height * 0.5)))
    canvas = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    frame = _Frame(cx=w / 2, top=0.0, ph=float(h), mirror=-1 if view == "left" else 1)
    if view in ("front", "back"):
        _draw_frontal(draw, frame, person, view, rng)
    else:
        _draw_profile(draw, frame, person, view, rng)
    return canvas.reduce(2)


def render_background(*, camera: Camera, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The camera's empty scene as float32 (H, W, 3), with its colour cast and lighting slope but no noise."""
    canvas = Image.new("RGB", (width, height), camera.wall)
    _draw_background(ImageDraw.Draw(canvas), camera, width, height, rng, unit=height / 256)  # crops: 256 tall
    if camera.blur > 0:
        canvas = canvas.filter(ImageFilter.GaussianBlur(camera.blur))
    across = 1 + np.float32(camera.light[0]) * np.linspace(-0.5, 0.5, width, dtype=np.float32)
    down = 1 + np.float32(camera.light[1]) * np.linspace(-0.5, 0.5, height, dtype=np.float32)
    gain = np.asarray(camera.gain, dtype=np.float32) * np.float32(camera.brightness)
    return np.asarray(canvas, dtype=np.float32) * (down[:, None, None] * across[None, :, None]) * gain
