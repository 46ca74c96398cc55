"""Drawing for the synthetic corpus: backgrounds, object glyphs, scene layout and rendering.

Each drawable COCO category is a glyph: a hard-edged boolean mask (no anti-aliasing) plus a few coloured layers.
A glyph is computed at its box size and then cropped to the tight extent of its pixels, so an object's box *is*
the extent of its pixels, exact to the pixel by construction. Painting reuses the same mask, so what the
annotation says and what the image shows cannot drift apart. Occlusion is limited (see `MAX_OVERLAP`), and
annotations keep the full unoccluded box, as COCO does.

Everything here is a pure function of its inputs and a `numpy.random.Generator`, so a scene drawn twice from
equal generators gives equal pixels (a VG image that is also a COCO image is simply drawn twice).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height in pixels: the tight extent of an object's mask
RGB = tuple[int, int, int]

# Saturated object colours; their names are the colour words captions use.
PALETTE: dict[str, RGB] = {
    "red": (220, 35, 35),
    "green": (35, 165, 60),
    "blue": (35, 75, 220),
    "yellow": (245, 215, 35),
    "orange": (245, 135, 25),
    "purple": (140, 55, 180),
    "pink": (245, 120, 185),
    "brown": (125, 75, 35),
    "white": (248, 248, 248),
    "black": (20, 20, 20),
}
_LIGHT_COLOURS = frozenset({"yellow", "orange", "pink", "white"})  # get dark details; the rest get light ones
_ROLE_COLOURS: dict[str, RGB] = {"dark": (45, 45, 50), "light": (235, 235, 235), "skin": (225, 180, 140)}
_WINDOW = (185, 215, 240)

# Muted mid-tones, so that both white and black objects stand out against every background.
BACKGROUND_COLOURS: tuple[RGB, ...] = (
    (120, 130, 140),
    (150, 140, 120),
    (110, 140, 115),
    (140, 120, 135),
    (165, 160, 150),
    (95, 105, 125),
    (135, 150, 160),
    (160, 135, 110),
)
BACKGROUND_KINDS = ("flat", "gradient", "noise", "stripes")

MAX_OVERLAP = 0.25  # a new object may cover at most this fraction of the smaller of two boxes
CROWD_CATEGORIES = ("person", "sports ball", "kite", "donut")  # small things that plausibly come in groups


@dataclass(frozen=True)
class Background:
    """Parameters of a background; `draw_background` turns them into pixels."""

    kind: str  # one of BACKGROUND_KINDS
    colour_a: RGB  # main colour
    colour_b: RGB  # second colour (gradient end, stripe colour)
    angle: float  # direction of gradient and stripes, radians
    period: int  # stripe period in pixels
    noise_seed: int  # seeds the noise pattern


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: its category, colour, tight box and the pixels it paints inside that box."""

    category: str  # COCO category name
    colour: str  # key of PALETTE
    box: Box  # tight extent of `mask`, in image pixels
    mask: np.ndarray  # bool [h, w]: the object's pixels; touches all four sides of the box
    layers: tuple[tuple[np.ndarray, RGB], ...]  # (bool [h, w] subset of mask, colour), painted in order
    group: int  # crowd group number, or -1 for an object on its own


@dataclass(frozen=True)
class Scene:
    """A picture before rendering: size, background and objects in painting order (back to front)."""

    width: int
    height: int
    background: Background
    objects: tuple[SceneObject, ...]


class _Grid:
    """Pixel-centre coordinates of a w x h box, as fractions (u, v) and as pixels (x, y)."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.x = np.arange(w, dtype=np.float32)[None, :] + 0.5
        self.y = np.arange(h, dtype=np.float32)[:, None] + 0.5
        self.u, self.v = self.x / w, self.y / h
        self.line = max(1.6, 0.07 * min(w, h))  # stroke width in pixels; >1.5 so diagonals have no gaps

    def ellipse(self, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
        return ((self.u - cu) / ru) ** 2 + ((self.v - cv) / rv) ** 2 <= 1.0

    def ring(self, cu: float, cv: float, ru: float, rv: float, width_px: float) -> np.ndarray:
        inner = self.ellipse(cu, cv, max(ru - width_px / self.w, 1e-3), max(rv - width_px / self.h, 1e-3))
        return self.ellipse(cu, cv, ru, rv) & ~inner

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
        return (self.u >= u0) & (self.u <= u1) & (self.v >= v0) & (self.v <= v1)

    def segment(self, u0: float, v0: float, u1: float, v1: float, width_px: float | None = None) -> np.ndarray:
        """Pixels within half a stroke of the segment (u0, v0)-(u1, v1); distances measured in pixels."""
        ax, ay, dx, dy = u0 * self.w, v0 * self.h, (u1 - u0) * self.w, (v1 - v0) * self.h
        t = np.clip(((self.x - ax) * dx + (self.y - ay) * dy) / max(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
        radius = (width_px or self.line) / 2
        return (self.x - ax - t * dx) ** 2 + (self.y - ay - t * dy) ** 2 <= radius * radius


Layers = list[tuple[np.ndarray, str]]  # (mask, role); role is "main" or a key of _ROLE_COLOURS or "contrast"


def _ball(g: _Grid) -> Layers:
    return [(g.ellipse(0.5, 0.5, 0.5, 0.5), "main")]


def _clock(g: _Grid) -> Layers:
    face = g.ellipse(0.5, 0.5, 0.5, 0.5)
    hands = g.segment(0.5, 0.5, 0.5, 0.2) | g.segment(0.5, 0.5, 0.74, 0.5)
    return [(face, "main"), (g.ring(0.5, 0.5, 0.5, 0.5, g.line) | hands, "contrast")]


def _donut(g: _Grid) -> Layers:
    ring = g.ellipse(0.5, 0.5, 0.5, 0.5) & ~g.ellipse(0.5, 0.5, 0.2, 0.2)
    sprinkles = np.zeros_like(ring)
    if min(g.w, g.h) >= 16:  # sprinkles would be single noisy pixels on tiny donuts
        for a in np.linspace(0.3, 2 * math.pi + 0.3, 6, endpoint=False):
            sprinkles |= g.ellipse(0.5 + 0.35 * math.cos(a), 0.5 + 0.35 * math.sin(a), 0.05, 0.05)
    return [(ring, "main"), (sprinkles & ring, "contrast")]


def _frisbee(g: _Grid) -> Layers:
    return [(g.ellipse(0.5, 0.5, 0.5, 0.5), "main"), (g.ring(0.5, 0.5, 0.36, 0.36, g.line * 0.8), "contrast")]


def _stop_sign(g: _Grid) -> Layers:
    # Regular octagon inscribed in the unit square: corners cut along |u| + |v| = 1 - (1 - 1/(1 + sqrt 2)) / 2.
    octagon = (np.abs(g.u - 0.5) + np.abs(g.v - 0.5)) <= 0.7072
    return [(octagon, "main"), (g.rect(0.18, 0.42, 0.82, 0.58), "contrast")]


def _kite(g: _Grid) -> Layers:
    upper = (g.v <= 0.35) & (np.abs(g.u - 0.5) <= 0.5 * g.v / 0.35)
    lower = (g.v > 0.35) & (np.abs(g.u - 0.5) <= 0.5 * (1 - g.v) / 0.65)
    body = upper | lower
    spars = g.segment(0.5, 0.0, 0.5, 1.0, g.line * 0.7) | g.segment(0.0, 0.35, 1.0, 0.35, g.line * 0.7)
    return [(body, "main"), (spars & body, "contrast")]


def _tv(g: _Grid) -> Layers:
    body = g.rect(0.0, 0.0, 1.0, 0.84)
    stand = g.rect(0.42, 0.84, 0.58, 1.0) | g.rect(0.25, 0.93, 0.75, 1.0)
    return [(body | stand, "main"), (g.rect(0.1, 0.1, 0.9, 0.74), "contrast")]


def _pizza(g: _Grid) -> Layers:
    slice_ = np.abs(g.u - 0.5) <= 0.5 * (1 - g.v)
    toppings = g.rect(0.0, 0.0, 1.0, 0.14)
    if min(g.w, g.h) >= 16:
        for cu, cv in ((0.4, 0.3), (0.6, 0.35), (0.5, 0.55)):
            toppings |= g.ellipse(cu, cv, 0.07, 0.07)
    return [(slice_, "main"), (toppings & slice_, "contrast")]


def _umbrella(g: _Grid) -> Layers:
    canopy = g.ellipse(0.5, 0.55, 0.5, 0.55) & (g.v <= 0.55)
    half = max(0.04, 0.9 / g.w)
    handle = (
        g.rect(0.5 - half, 0.5, 0.5 + half, 1.0) | g.rect(0.3, 0.9, 0.5, 1.0) | g.rect(0.3, 0.78, 0.3 + half * 2, 1)
    )
    return [(canopy | handle, "main"), (handle & ~canopy, "dark")]


def _person(g: _Grid) -> Layers:
    head = g.ellipse(0.5, 0.1, 0.1 * g.h / g.w, 0.1)
    torso = g.rect(0.3, 0.2, 0.7, 0.62) | g.rect(0.0, 0.24, 1.0, 0.31)
    legs = g.rect(0.3, 0.62, 0.45, 1.0) | g.rect(0.55, 0.62, 0.7, 1.0)
    return [(head | torso | legs, "main"), (head, "skin"), (legs, "dark")]


def _bicycle(g: _Grid) -> Layers:
    wheels = g.ring(0.22, 0.7, 0.22, 0.3, g.line) | g.ring(0.78, 0.7, 0.22, 0.3, g.line)
    frame = (
        g.segment(0.22, 0.7, 0.46, 0.7)
        | g.segment(0.46, 0.7, 0.36, 0.34)
        | g.segment(0.36, 0.34, 0.72, 0.34)
        | g.segment(0.46, 0.7, 0.72, 0.34)
        | g.segment(0.72, 0.34, 0.78, 0.7)
        | g.segment(0.72, 0.34, 0.75, 0.08)
        | g.segment(0.66, 0.06, 0.9, 0.06)
        | g.segment(0.28, 0.28, 0.44, 0.28)
    )
    return [(wheels | frame, "main")]


def _car(g: _Grid) -> Layers:
    body = g.rect(0.0, 0.38, 1.0, 0.8)
    cabin = (g.v <= 0.38) & (np.abs(g.u - 0.5) <= 0.2 + 0.12 * g.v / 0.38)
    windows = (g.v >= 0.08) & (g.v <= 0.34) & (np.abs(g.u - 0.5) <= 0.15 + 0.1 * g.v / 0.38)
    wheels = g.ellipse(0.24, 0.8, 0.11, 0.2) | g.ellipse(0.76, 0.8, 0.11, 0.2)
    return [(body | cabin | wheels, "main"), (windows & ~g.rect(0.48, 0, 0.52, 1), "window"), (wheels, "dark")]


@dataclass(frozen=True)
class Glyph:
    """How one category is drawn: the layer function and the shapes of box it likes."""

    draw: Callable[[_Grid], Layers]
    aspect: tuple[float, float]  # range of width / height
    min_side: int  # smallest long side in pixels that still reads as this object


GLYPHS: dict[str, Glyph] = {
    "person": Glyph(_person, (0.4, 0.6), 16),
    "bicycle": Glyph(_bicycle, (1.4, 1.8), 22),
    "car": Glyph(_car, (1.6, 2.2), 18),
    "stop sign": Glyph(_stop_sign, (1.0, 1.0), 12),
    "umbrella": Glyph(_umbrella, (1.0, 1.3), 14),
    "frisbee": Glyph(_frisbee, (2.0, 3.0), 14),
    "sports ball": Glyph(_ball, (1.0, 1.0), 8),
    "kite": Glyph(_kite, (0.6, 0.8), 12),
    "pizza": Glyph(_pizza, (0.8, 1.1), 12),
    "donut": Glyph(_donut, (1.0, 1.0), 10),
    "tv": Glyph(_tv, (1.2, 1.6), 14),
    "clock": Glyph(_clock, (1.0, 1.0), 12),
}
DRAWN_CATEGORIES: tuple[str, ...] = tuple(GLYPHS)


def _role_colour(role: str, colour: str) -> RGB:
    if role == "main":
        return PALETTE[colour]
    if role == "contrast":
        return _ROLE_COLOURS["dark"] if colour in _LIGHT_COLOURS else _ROLE_COLOURS["light"]
    if role == "window":
        return _WINDOW
    return _ROLE_COLOURS[role]


def glyph_object(category: str, colour: str, x: int, y: int, w: int, h: int, group: int = -1) -> SceneObject | None:
    """Draw `category` in a w x h box at (x, y) and crop it to its pixels; None when nothing is left to draw."""
    layers = GLYPHS[category].draw(_Grid(w, h))
    mask = np.logical_or.reduce([m for m, _ in layers])
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    cropped = tuple((m[r0:r1, c0:c1] & mask[r0:r1, c0:c1], _role_colour(role, colour)) for m, role in layers)
    box = (x + int(c0), y + int(r0), int(c1 - c0), int(r1 - r0))
    return SceneObject(category, colour, box, mask[r0:r1, c0:c1], cropped, group)


def overlap_ok(box: Box, others: list[Box]) -> bool:
    """Whether `box` may go next to `others`: it covers at most MAX_OVERLAP of the smaller box of each pair."""
    x, y, w, h = box
    for ox, oy, ow, oh in others:
        iw = min(x + w, ox + ow) - max(x, ox)
        ih = min(y + h, oy + oh) - max(y, oy)
        if iw > 0 and ih > 0 and iw * ih > MAX_OVERLAP * min(w * h, ow * oh):
            return False
    return True


def box_size(rng: np.random.Generator, category: str, lo: float, hi: float) -> tuple[int, int]:
    """Width and height for a glyph whose long side is log-uniform in [lo, hi]."""
    glyph = GLYPHS[category]
    long_side = math.exp(rng.uniform(math.log(max(lo, glyph.min_side)), math.log(max(hi, glyph.min_side))))
    aspect = rng.uniform(*glyph.aspect)
    w, h = (long_side, long_side / aspect) if aspect >= 1 else (long_side * aspect, long_side)
    return max(round(w), 4), max(round(h), 4)


def _single(rng: np.random.Generator, width: int, height: int, taken: list[Box]) -> list[SceneObject]:
    category = DRAWN_CATEGORIES[rng.integers(len(DRAWN_CATEGORIES))]
    colour = list(PALETTE)[rng.integers(len(PALETTE))]
    side = min(width, height)
    w, h = box_size(rng, category, 0.1 * side, 0.6 * side)
    w, h = min(w, width), min(h, height)
    for _ in range(12):  # a few placement tries; a crowded picture just gets fewer objects
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        if overlap_ok((x, y, w, h), taken):
            obj = glyph_object(category, colour, x, y, w, h)
            return [obj] if obj is not None else []
    return []


def _crowd(rng: np.random.Generator, width: int, height: int, taken: list[Box], group: int) -> list[SceneObject]:
    """3-6 small same-looking objects close together: annotated as one iscrowd=1 region in COCO."""
    category = CROWD_CATEGORIES[rng.integers(len(CROWD_CATEGORIES))]
    colour = list(PALETTE)[rng.integers(len(PALETTE))]
    side = min(width, height)
    sizes = [box_size(rng, category, 0.07 * side, 0.13 * side) for _ in range(int(rng.integers(3, 7)))]
    span_w = min(width, int(sum(w for w, _ in sizes) * 0.8))
    span_h = min(height, int(max(h for _, h in sizes) * 2.2))
    for _ in range(12):
        cx, cy = int(rng.integers(0, width - span_w + 1)), int(rng.integers(0, height - span_h + 1))
        if not overlap_ok((cx, cy, span_w, span_h), taken):
            continue
        members = []
        for w, h in sizes:
            w, h = min(w, span_w), min(h, span_h)
            x = cx + int(rng.integers(0, span_w - w + 1))
            y = cy + int(rng.integers(0, span_h - h + 1))
            obj = glyph_object(category, colour, x, y, w, h, group)
            if obj is not None:
                members.append(obj)
        return members
    return []


def sample_background(rng: np.random.Generator) -> Background:
    """A random background: kind, two distinct colours, direction, stripe period and noise seed."""
    a, b = rng.choice(len(BACKGROUND_COLOURS), size=2, replace=False)
    return Background(
        kind=BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))],
        colour_a=BACKGROUND_COLOURS[a],
        colour_b=BACKGROUND_COLOURS[b],
        angle=float(rng.uniform(0, math.pi)),
        period=int(rng.integers(8, 33)),
        noise_seed=int(rng.integers(2**31)),
    )


def make_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    max_objects: int = 5,
    crowd_probability: float = 0.15,
) -> Scene:
    """Sample a background and 1..max_objects objects (one of which may be a crowd group)."""
    background = sample_background(rng)
    objects: list[SceneObject] = []
    taken: list[Box] = []
    num_slots = int(rng.integers(1, max_objects + 1))
    crowd_slot = int(rng.integers(num_slots)) if rng.random() < crowd_probability else -1
    for slot in range(num_slots):
        if slot == crowd_slot:
            new = _crowd(rng, width, height, taken, group=0)
            if new:
                taken.append(union_box([o.box for o in new]))
        else:
            new = _single(rng, width, height, taken)
            taken.extend(o.box for o in new)
        objects.extend(new)
    if not objects:  # every placement failed (tiny picture): fall back to one ball that surely fits
        side = max(4, min(width, height) // 3)
        ball = glyph_object("sports ball", "red", 0, 0, side, side)
        assert ball is not None  # a disc of at least 4 x 4 pixels always has pixels
        objects.append(ball)
    # Paint big things first so small ones stay visible on top of them.
    objects.sort(key=lambda o: -o.box[2] * o.box[3])
    return Scene(width, height, background, tuple(objects))


def union_box(boxes: list[Box]) -> Box:
    """Smallest box holding all `boxes`."""
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return x0, y0, x1 - x0, y1 - y0


def draw_background(bg: Background, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3] background pixels, vectorized (no per-pixel Python)."""
    a, b = np.array(bg.colour_a, np.float32), np.array(bg.colour_b, np.float32)
    if bg.kind == "flat":
        return np.broadcast_to(a.astype(np.uint8), (height, width, 3)).copy()
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    along = x * math.cos(bg.angle) + y * math.sin(bg.angle)
    if bg.kind == "gradient":
        t = (along - along.min()) / max(float(along.max() - along.min()), 1.0)
        return (a + (b - a) * t[..., None] + 0.5).astype(np.uint8)
    if bg.kind == "stripes":
        odd = (np.floor(along / (bg.period / 2)) % 2).astype(bool)
        return np.where(odd[..., None], b, a).astype(np.uint8)
    if bg.kind == "noise":
        noise = np.random.default_rng(bg.noise_seed).integers(-28, 29, size=(height, width, 1), dtype=np.int16)
        return np.clip(a.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown background kind {bg.kind!r}")


def render(scene: Scene) -> np.ndarray:
    """uint8 [height, width, 3] picture of the scene."""
    image = draw_background(scene.background, scene.width, scene.height)
    for obj in scene.objects:
        x, y, w, h = obj.box
        view = image[y : y + h, x : x + w]
        for layer, rgb in obj.layers:
            view[layer] = rgb
    return image


def full_mask(obj: SceneObject, width: int, height: int) -> np.ndarray:
    """bool [height, width] mask of one object on the whole picture."""
    out = np.zeros((height, width), dtype=bool)
    x, y, w, h = obj.box
    out[y : y + h, x : x + w] = obj.mask
    return out


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a bool [h, w] mask: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    starts = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], starts, [flat.size]])).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def outline_polygon(obj: SceneObject, max_rows: int = 12) -> list[float]:
    """A COCO polygon [x0, y0, x1, y1, ...] tracing the mask's left and right edges on about `max_rows` rows.

    It follows the silhouette (holes such as a donut's are filled, as in many COCO polygons) and spans exactly the
    box: the first and last sampled rows are the box's top and bottom rows.
    """
    x, y, _, h = obj.box
    width = obj.mask.shape[1]
    # Sampled rows plus the rows that reach the left and right sides, so the polygon spans the box both ways.
    extreme = [int(np.argmax(obj.mask[:, 0])), int(np.argmax(obj.mask[:, -1]))]
    rows = np.unique(np.concatenate([np.linspace(0, h - 1, min(h, max_rows)).round().astype(int), extreme]))
    right_side, left_side = [], []
    for r in rows:
        left, right = int(np.argmax(obj.mask[r])), width - int(np.argmax(obj.mask[r][::-1]))
        right_side += [(x + right, y + r), (x + right, y + r + 1)]
        left_side += [(x + left, y + r), (x + left, y + r + 1)]
    points = right_side + left_side[::-1]
    return [float(c) for point in points for c in point]
