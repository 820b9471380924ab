"""The built-in ``scenes`` dataset: synthetic images with several captions and probe labels.

Every scene is a pure function of ``(seed, split, index)``: nothing is stored and the same triple gives
the same pixels, captions and labels on every machine. Three independent random streams are derived from
``numpy.random.SeedSequence([seed, split_id, index], spawn_key=(k,))`` with ``split_id`` 0 (train),
1 (val), 2 (test): ``k=0`` draws the scene (objects, background, pixel noise), ``k=1`` the caption
templates and ``k=2`` the caption noise. Because the split id is part of the seed, the three splits are
disjoint index spaces: ``val`` item 5 shares nothing with ``train`` item 5.

Shapes are rasterized analytically in numpy (2x2 supersampling for soft edges) rather than with
``PIL.ImageDraw``, so the pixels do not depend on the installed Pillow version's polygon rasterizer.

A scene holds 1 to ``max_objects`` objects. Each has a shape, a colour, a size class (small or large,
with non-overlapping pixel ranges), a continuous position and a texture (solid or striped). Objects are
placed by rejection so that they overlap little; later objects are drawn on top.

Probe labels (never seen by pretraining methods), see :attr:`ScenesDataset.tasks`:

- ``count``: number of objects minus one.
- ``largest_shape`` / ``largest_color``: the object with the largest area.
- ``smallest_color``: the object with the smallest area (a fine-grained attribute of a small object).
- ``leftmost_shape``: the object whose centre has the smallest x.
- ``has_circle`` ... ``has_cross``: whether any object has that shape (0 or 1). These need no relation
  between objects, so they measure shape recognition alone.

Labels are unambiguous by construction (since :data:`SCENES_VERSION` ``"2"``): in every scene with two or
more objects the largest object's area is at least :data:`AREA_RATIO` (1.3) times every other object's,
the smallest object's at most 1/1.3 times every other's, and the leftmost centre lies at least
:data:`LEFT_GAP` (8%) of the canvas width left of every other centre. "Area" is the geometric area
``pi * radius**2`` of :attr:`SceneObject.area`, the quantity the labels compare; the rendered pixel area
follows it up to anti-aliasing and the little overlap placement allows. The dense probe uses the ``seg``
map (0 = background, 1 + shape id of the topmost object) and :func:`patch_labels`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from openjepa.config import ConfigError
from openjepa.data.indexing import item_index

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SIZES: tuple[str, ...] = ("small", "large")
TEXTURES: tuple[str, ...] = ("solid", "striped")
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

#: Version of what the generator draws. Bump it whenever the same (seed, split, index) can give a
#: different scene, caption or label, so exported copies and cached features can tell they are stale.
#: "1": first release. "2": unambiguous labels (area ratio, leftmost gap), ``has_<shape>`` tasks, size
#: ranges widened to make room for the ratio.
SCENES_VERSION = "2"

#: The largest object's area is at least this many times any other's; the smallest's at most 1 / this.
AREA_RATIO = 1.3
#: The leftmost centre is at least this fraction of the canvas width left of every other centre.
#: 8% is 5 px at 64 px, about half a small object's width: visibly "further left" at any image size.
LEFT_GAP = 0.08

#: Saturated colours chosen to be far apart in RGB and to stand out from the muted backgrounds.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (35, 175, 55),
    "blue": (35, 75, 225),
    "yellow": (250, 220, 25),
    "purple": (145, 45, 195),
    "orange": (250, 135, 15),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}

#: Classes of the dense probe: background + one per shape.
SEG_CLASSES = len(SHAPES) + 1

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 224

# Object size = radius of the circle with the same area, as a fraction of the canvas side. The two
# ranges do not overlap (area ratio >= 1.7) so "small" and "large" are clearly different at any size.
# Each range spans a radius ratio above AREA_RATIO (1.45 and 1.38 > 1.3): a scene whose objects all share
# one size class still has room for a largest object 1.3x above the middle ones and a smallest 1.3x
# below them (see _draw_radii).
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.055, 0.08), "large": (0.105, 0.145)}
# Radius factor between the largest (smallest) object and the next one; the 1e-9 keeps the area ratio
# >= AREA_RATIO after floating-point rounding of radius * factor.
_RADIUS_RATIO = math.sqrt(AREA_RATIO) * (1 + 1e-9)

# Shape geometry. Every shape is scaled to the same area for the same equal-area radius r, so "largest"
# means the same thing for a cross and a circle. Derivations (area = pi r^2):
#   square   half side h:             4 h^2                      -> h = sqrt(pi) / 2 r
#   diamond  half height a, width .8a: 1.6 a^2                   -> a = sqrt(pi / 1.6) r
#   triangle circumradius c:          3 sqrt(3) / 4 c^2          -> c = sqrt(4 pi / (3 sqrt 3)) r
#   star     outer o, inner o/2:       5 o (o/2) sin 36deg       -> o = sqrt(pi / (2.5 sin 36deg)) r
#   cross    half length L, half width .35L: (8 * .35 - 4 * .35^2) L^2
_SQUARE_H = math.sqrt(math.pi) / 2
_DIAMOND_A, _DIAMOND_ASPECT = math.sqrt(math.pi / 1.6), 0.8
_TRIANGLE_C = math.sqrt(4 * math.pi / (3 * math.sqrt(3)))
_STAR_INNER = 0.5
_STAR_O = math.sqrt(math.pi / (5 * _STAR_INNER * math.sin(math.radians(36))))
_CROSS_W = 0.35
_CROSS_L = math.sqrt(math.pi / (8 * _CROSS_W - 4 * _CROSS_W**2))

#: How far each shape reaches from its centre, in units of its equal-area radius.
BOUND: dict[str, float] = {
    "circle": 1.0,
    "square": _SQUARE_H * math.sqrt(2),
    "triangle": _TRIANGLE_C,
    "diamond": _DIAMOND_A,
    "star": _STAR_O,
    "cross": _CROSS_L * math.hypot(1.0, _CROSS_W),
}

# Two objects may come this close, as a fraction of the sum of their reach: bounding circles are loose
# for triangles, stars and crosses, so 0.8 still leaves the visible shapes almost disjoint.
_MIN_GAP = 0.8
_PLACEMENT_TRIES = 60
# Whole-layout attempts (fresh sizes and positions) before the scene gives up its last object. One object
# always fits, so sample_scene terminates; at the default sizes an object is dropped in well under 1% of
# scenes even with 8 objects (test_scenes measures it).
_LAYOUT_TRIES = 10
_SUPERSAMPLE = 2  # 2x2 samples per pixel: soft edges keep small shapes legible at 64 px
_NOISE_MAX = 7  # uniform pixel noise in [-7, 7] (std 4.3 on 0-255): empty regions are never constant
_STRIPE_ANGLES = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene, in pixel coordinates of the canvas (x to the right, y down).

    Attributes:
        shape: one of :data:`SHAPES`.
        color: one of :data:`COLORS`.
        size: ``"small"`` or ``"large"`` (the class); ``radius`` is the exact size.
        texture: ``"solid"`` or ``"striped"``.
        x: centre, pixels from the left edge.
        y: centre, pixels from the top edge.
        radius: radius of the circle with the same area, in pixels.
        stripe_angle: direction of the stripes in radians (unused when solid).
    """

    shape: str
    color: str
    size: str
    texture: str
    x: float
    y: float
    radius: float
    stripe_angle: float = 0.0

    @property
    def shape_id(self) -> int:
        """Index of the shape in :data:`SHAPES`."""
        return SHAPES.index(self.shape)

    @property
    def color_id(self) -> int:
        """Index of the colour in :data:`COLORS`."""
        return COLORS.index(self.color)

    @property
    def area(self) -> float:
        """Area in pixels (every shape is scaled to ``pi * radius**2``)."""
        return math.pi * self.radius**2

    @property
    def reach(self) -> float:
        """Distance from the centre to the farthest point of the shape, in pixels."""
        return BOUND[self.shape] * self.radius


@dataclass(frozen=True)
class Scene:
    """A generated scene: everything needed to render it and to derive its captions and labels.

    Attributes:
        image_size: canvas side in pixels.
        objects: the objects in drawing order (later ones on top).
        background: the two gradient colours (RGB) and the gradient direction in radians.
        noise_seed: seed of the pixel noise, so :func:`render_scene` is a pure function of the scene.
    """

    image_size: int
    objects: tuple[SceneObject, ...]
    background: tuple[tuple[int, int, int], tuple[int, int, int], float]
    noise_seed: int

    def largest(self) -> SceneObject:
        """The object with the largest area (the first drawn wins an exact tie)."""
        return max(self.objects, key=lambda o: o.area)

    def smallest(self) -> SceneObject:
        """The object with the smallest area (the first drawn wins an exact tie)."""
        return min(self.objects, key=lambda o: o.area)

    def leftmost(self) -> SceneObject:
        """The object whose centre is leftmost (the first drawn wins an exact tie)."""
        return min(self.objects, key=lambda o: o.x)

    def labels(self) -> dict[str, int]:
        """The probe labels, keyed as in :attr:`ScenesDataset.tasks`."""
        present = {o.shape for o in self.objects}
        return {
            "count": len(self.objects) - 1,
            "largest_shape": self.largest().shape_id,
            "largest_color": self.largest().color_id,
            "smallest_color": self.smallest().color_id,
            "leftmost_shape": self.leftmost().shape_id,
            **{presence_task(shape): int(shape in present) for shape in SHAPES},
        }


def presence_task(shape: str) -> str:
    """Name of the binary probe task "some object is a ``shape``" (``has_circle``, ...)."""
    return f"has_{shape}"


# ----------------------------------------------------------------------------- random streams


def _rng(seed: int, split_id: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, split_id, index], spawn_key=(stream,)))


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    # One double per choice whatever len(seq) is (Generator.integers may consume a variable number of
    # draws), so corrupting a word in a noisy caption never shifts the template choices that follow.
    return seq[min(int(rng.random() * len(seq)), len(seq) - 1)]


# ----------------------------------------------------------------------------- scene sampling


def _background_color(rng: np.random.Generator) -> tuple[int, int, int]:
    # Muted mid-tones: far from white and black, low saturation so saturated objects stand out.
    gray = rng.uniform(75, 165)
    tint = rng.uniform(-25, 25, size=3)
    return tuple(int(v) for v in np.clip(gray + tint, 0, 255).round())  # type: ignore[return-value]


@dataclass(frozen=True)
class _Attributes:
    """What an object looks like before the layout gives it a size and a place."""

    shape: str
    color: str
    size: str
    texture: str
    stripe_angle: float


def _draw_attributes(rng: np.random.Generator) -> _Attributes:
    return _Attributes(
        _pick(rng, SHAPES), _pick(rng, COLORS), _pick(rng, SIZES), _pick(rng, TEXTURES), _pick(rng, _STRIPE_ANGLES)
    )


def sample_scene(rng: np.random.Generator, image_size: int, max_objects: int) -> Scene:
    """Draws a scene: background and 1..max_objects objects placed with little overlap.

    With two or more objects the sizes and positions satisfy the label constraints by construction: the
    largest area is at least :data:`AREA_RATIO` times every other, the smallest at most 1 / AREA_RATIO
    times every other, and the leftmost centre is at least :data:`LEFT_GAP` of the width left of every
    other centre.

    Args:
        rng: the scene's random stream.
        image_size: canvas side in pixels.
        max_objects: upper bound on the number of objects.

    Returns:
        The scene, objects in drawing order (later on top). When no layout fits after
        ``_LAYOUT_TRIES`` attempts the last object is dropped and the layout drawn again; a single object
        always fits, so this terminates (and is rare: well under 1% of scenes at the default sizes).
    """
    size = float(image_size)
    background = (_background_color(rng), _background_color(rng), float(rng.uniform(0, 2 * math.pi)))
    num = int(rng.integers(1, max_objects + 1))
    attributes = [_draw_attributes(rng) for _ in range(num)]
    objects = _layout_with_retries(rng, attributes, size)
    while objects is None:
        attributes = attributes[:-1]
        objects = _layout_with_retries(rng, attributes, size)
    noise_seed = int(rng.integers(0, 2**31))
    return Scene(image_size, objects, background, noise_seed)


def _layout_with_retries(
    rng: np.random.Generator, attributes: Sequence[_Attributes], size: float
) -> tuple[SceneObject, ...] | None:
    for _ in range(_LAYOUT_TRIES):
        objects = _layout(rng, attributes, size)
        if objects is not None:
            return objects
    return None


def _layout(rng: np.random.Generator, attributes: Sequence[_Attributes], size: float) -> tuple[SceneObject, ...] | None:
    """Sizes and places the objects (in the order of ``attributes``), or None if one does not fit."""
    radii = [r * size for r in _draw_radii(rng, [a.size for a in attributes])]
    placed: dict[int, SceneObject] = {}
    # Biggest first: the large objects are the hard ones to fit, so they pick their places on an emptier
    # canvas. The drawing order stays the order of ``attributes`` (random with respect to size).
    for k in sorted(range(len(attributes)), key=lambda k: -radii[k]):
        a = attributes[k]
        position = _place(rng, BOUND[a.shape] * radii[k], size, list(placed.values()))
        if position is None:
            return None
        placed[k] = SceneObject(a.shape, a.color, a.size, a.texture, *position, radii[k], a.stripe_angle)
    return tuple(placed[k] for k in range(len(attributes)))


def _draw_radii(rng: np.random.Generator, classes: Sequence[str]) -> list[float]:
    """Equal-area radii (fractions of the canvas side), each inside its size class's range.

    Guarantees, for two or more objects, that the largest radius is at least ``_RADIUS_RATIO`` times
    every other and the smallest at most 1 / ``_RADIUS_RATIO`` times every other (area ratio
    :data:`AREA_RATIO`). By construction, no rejection: the largest object is one of the highest size
    class present, the smallest one of the lowest; the middle objects are drawn first in their class's
    range shrunk to leave room above (below) them when they share the class of the largest (smallest);
    then the largest is drawn above all of them and the smallest below all the others. The shrunk ranges
    are never empty because each class range spans a radius ratio above ``_RADIUS_RATIO ** 2``, and the
    gap between the classes is wider than ``_RADIUS_RATIO``.
    """
    rank = SIZES.index
    if len(classes) == 1:
        return [float(rng.uniform(*SIZE_RANGES[classes[0]]))]
    top, bottom = max(classes, key=rank), min(classes, key=rank)
    largest = _pick(rng, [k for k, c in enumerate(classes) if c == top])
    smallest = _pick(rng, [k for k, c in enumerate(classes) if c == bottom and k != largest])
    middle = [k for k in range(len(classes)) if k not in (largest, smallest)]
    radii = [0.0] * len(classes)
    for k in middle:
        lo, hi = SIZE_RANGES[classes[k]]
        lo *= _RADIUS_RATIO if classes[k] == bottom else 1.0
        hi /= _RADIUS_RATIO if classes[k] == top else 1.0
        radii[k] = float(rng.uniform(lo, hi))
    lo, hi = SIZE_RANGES[top]
    # With two objects of one class the smallest is drawn after the largest: keep room for it below.
    floor = lo * _RADIUS_RATIO if top == bottom else lo
    radii[largest] = float(rng.uniform(max([floor] + [radii[k] * _RADIUS_RATIO for k in middle]), hi))
    lo, hi = SIZE_RANGES[bottom]
    others = [radii[k] for k in range(len(classes)) if k != smallest]
    radii[smallest] = float(rng.uniform(lo, min(hi, min(others) / _RADIUS_RATIO)))
    return radii


def _place(
    rng: np.random.Generator, reach: float, size: float, objects: Sequence[SceneObject]
) -> tuple[float, float] | None:
    """A centre keeping the shape inside the canvas, away from ``objects`` and the leftmost gap, or None.

    The leftmost gap holds for every prefix of the placement: a new centre more than ``LEFT_GAP * size``
    from the current leftmost centre either becomes the new leftmost (and the old one is the runner-up,
    far enough) or leaves the leftmost and its runner-up as they were, or becomes the runner-up far enough.
    """
    min_dx = LEFT_GAP * size
    leftmost = min((o.x for o in objects), default=None)
    for _ in range(_PLACEMENT_TRIES):
        x, y = rng.uniform(reach, size - reach, size=2)
        if leftmost is not None and abs(x - leftmost) < min_dx:
            continue
        if all(math.hypot(x - o.x, y - o.y) >= _MIN_GAP * (reach + o.reach) for o in objects):
            return float(x), float(y)
    return None


# ----------------------------------------------------------------------------- rendering


def _polygon(angles_deg: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    theta = np.radians(angles_deg)
    return radii * np.cos(theta), radii * np.sin(theta)


def _inside_polygon(dx: np.ndarray, dy: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd rule for points (dx [1, W], dy [H, 1]) against a closed polygon; handles the star."""
    inside = np.zeros(np.broadcast_shapes(dx.shape, dy.shape), dtype=bool)
    n = len(vx)
    for k in range(n):
        x1, y1, x2, y2 = vx[k], vy[k], vx[k - 1], vy[k - 1]
        if y1 == y2:  # a horizontal edge is never crossed by a horizontal ray
            continue
        crosses = (y1 > dy) != (y2 > dy)
        x_at = x1 + (dy - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (dx < x_at)
    return inside


# Unit polygons (radius 1 = equal-area radius); angles in image coordinates, -90 deg points up.
_TRIANGLE = _polygon(np.array([-90.0, 30.0, 150.0]), np.full(3, _TRIANGLE_C))
_STAR = _polygon(
    -90.0 + 36.0 * np.arange(10), np.where(np.arange(10) % 2 == 0, _STAR_O, _STAR_O * _STAR_INNER)
)


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Whether the points at offsets (dx, dy) from the centre lie inside the shape.

    Args:
        shape: one of :data:`SHAPES`.
        dx: horizontal offsets, broadcastable against ``dy`` (e.g. [1, W] and [H, 1]).
        dy: vertical offsets (image coordinates: positive is down).
        radius: equal-area radius in pixels.

    Returns:
        Boolean array of the broadcast shape.
    """
    ax, ay = np.abs(dx) / radius, np.abs(dy) / radius
    if shape == "circle":
        return ax**2 + ay**2 <= 1.0
    if shape == "square":
        return (ax <= _SQUARE_H) & (ay <= _SQUARE_H)
    if shape == "diamond":
        return ax / (_DIAMOND_A * _DIAMOND_ASPECT) + ay / _DIAMOND_A <= 1.0
    if shape == "cross":
        w = _CROSS_W * _CROSS_L
        return ((ax <= _CROSS_L) & (ay <= w)) | ((ax <= w) & (ay <= _CROSS_L))
    if shape == "triangle":
        return _inside_polygon(dx / radius, dy / radius, *_TRIANGLE)
    if shape == "star":
        return _inside_polygon(dx / radius, dy / radius, *_STAR)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _stripe_shade(rgb: np.ndarray) -> np.ndarray:
    # The second stripe colour is a darker (or, for dark colours, lighter) shade of the same hue, so a
    # striped object still reads as its named colour. Black gets only a dark gray: a lighter one would
    # vanish into the mid-gray backgrounds and break the shape into loose bars.
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    if luminance > 100:
        return rgb * 0.6
    return rgb + (255.0 - rgb) * (0.45 if luminance > 40 else 0.2)


def _draw_object(canvas: np.ndarray, seg: np.ndarray, obj: SceneObject) -> None:
    """Composites one object onto ``canvas`` (float32 [S, S, 3]) and writes its class into ``seg``."""
    s = canvas.shape[0]
    reach = obj.reach
    x0, x1 = max(0, math.floor(obj.x - reach)), min(s, math.ceil(obj.x + reach) + 1)
    y0, y1 = max(0, math.floor(obj.y - reach)), min(s, math.ceil(obj.y + reach) + 1)
    h, w, ss = y1 - y0, x1 - x0, _SUPERSAMPLE
    # Sample points at sub-pixel centres; pixel (i, j) covers [j, j+1) x [i, i+1).
    dx = (x0 + (np.arange(w * ss, dtype=np.float32) + 0.5) / ss - obj.x)[None, :]
    dy = (y0 + (np.arange(h * ss, dtype=np.float32) + 0.5) / ss - obj.y)[:, None]
    inside = shape_mask(obj.shape, dx, dy, obj.radius)
    alpha = inside.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)
    rgb = np.asarray(COLOR_RGB[obj.color], dtype=np.float32)
    if obj.texture == "striped":
        px = (x0 + np.arange(w, dtype=np.float32) + 0.5 - obj.x)[None, :]
        py = (y0 + np.arange(h, dtype=np.float32) + 0.5 - obj.y)[:, None]
        u = px * math.cos(obj.stripe_angle) + py * math.sin(obj.stripe_angle)
        # Stripes scale with the object (about 3 periods across it) but never go below 2 px per band.
        half_period = max(2.0, 0.3 * obj.radius)
        on = (np.floor(u / half_period) % 2 == 0)[..., None]
        color = np.where(on, rgb, _stripe_shade(rgb).astype(np.float32))
    else:
        color = rgb
    region = canvas[y0:y1, x0:x1]
    a = alpha[..., None]
    region *= 1.0 - a
    region += color * a
    seg_region = seg[y0:y1, x0:x1]
    seg_region[alpha >= 0.5] = obj.shape_id + 1


def render_scene(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Draws a scene.

    Args:
        scene: the scene to draw.

    Returns:
        ``(image, seg)``: uint8 RGB [S, S, 3] and uint8 [S, S] with 0 for background and 1 + shape id of
        the topmost object covering at least half of the pixel.
    """
    s = scene.image_size
    c0, c1, angle = scene.background
    coords = np.arange(s, dtype=np.float32) + 0.5 - s / 2
    t = 0.5 + (coords[None, :] * math.cos(angle) + coords[:, None] * math.sin(angle)) / s
    np.clip(t, 0.0, 1.0, out=t)
    start = np.asarray(c0, dtype=np.float32)
    canvas = start + t[..., None] * (np.asarray(c1, dtype=np.float32) - start)
    seg = np.zeros((s, s), dtype=np.uint8)
    for obj in scene.objects:
        _draw_object(canvas, seg, obj)
    # Uniform integer noise: 5x cheaper to draw than Gaussian at 224 px, and looks the same.
    noise_rng = np.random.default_rng(scene.noise_seed)
    canvas += noise_rng.integers(-_NOISE_MAX, _NOISE_MAX + 1, (s, s, 3), dtype=np.int8)
    np.clip(canvas + 0.5, 0, 255, out=canvas)
    return canvas.astype(np.uint8), seg


# ----------------------------------------------------------------------------- captions

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
#: Words a caption may use for each shape (tests and text tools use this to read captions back).
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disk", "round dot"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "star": ("star",),
    "cross": ("cross", "plus sign"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_TEXTURE_WORDS = {"striped": ("striped", "stripy"), "solid": ("solid", "plain")}
_LOCATION_NAMES = {
    (0, 0): ("top left", "upper left"),
    (0, 1): ("top",),
    (0, 2): ("top right", "upper right"),
    (1, 0): ("left",),
    (1, 1): ("center",),
    (1, 2): ("right",),
    (2, 0): ("bottom left", "lower left"),
    (2, 1): ("bottom",),
    (2, 2): ("bottom right", "lower right"),
}
_RELATIONS = {
    "left": ("left of", "to the left of", "on the left of"),
    "right": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "bigger": ("bigger than", "larger than"),
    "smaller": ("smaller than",),
}


def coarse_location(obj: SceneObject, image_size: int) -> tuple[int, int]:
    """(row, column) of the object's centre on a 3x3 grid of the canvas."""
    col = min(int(3 * obj.x / image_size), 2)
    row = min(int(3 * obj.y / image_size), 2)
    return row, col


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _location_phrase(rng: np.random.Generator, obj: SceneObject, image_size: int) -> str:
    row, col = coarse_location(obj, image_size)
    name = _pick(rng, _LOCATION_NAMES[row, col])
    if (row, col) == (1, 1):
        return _pick(rng, ("in the center", "in the middle", "near the center", "at the center"))
    if row != 1 and col != 1:  # a corner
        return _pick(
            rng, (f"near the {name}", f"in the {name} corner", f"at the {name}", f"toward the {name}")
        )
    if row == 1:  # left or right edge
        return _pick(rng, (f"on the {name}", f"on the {name} side", f"near the {name} edge"))
    return _pick(rng, (f"near the {name}", f"at the {name}", f"along the {name} edge"))


def _noun_phrase(rng: np.random.Generator, obj: SceneObject, with_size: bool, with_texture: bool) -> str:
    words = []
    if with_size:
        words.append(_pick(rng, SIZE_WORDS[obj.size]))
    if with_texture:
        words.append(_pick(rng, _TEXTURE_WORDS[obj.texture]))
    words += [obj.color, _pick(rng, SHAPE_WORDS[obj.shape])]
    return " ".join(words)


class _CaptionWriter:
    """Turns facts about a scene into sentences; ``noise`` corrupts one attribute per noisy caption."""

    def __init__(self, scene: Scene, rng: np.random.Generator, noise: float, noise_rng: np.random.Generator):
        self.scene = scene
        self.rng = rng
        self.noise = noise
        self.noise_rng = noise_rng
        self.objects = scene.objects

    def _maybe_corrupt(self, objs: Sequence[SceneObject]) -> list[SceneObject]:
        """With probability ``noise``, one of ``objs`` gets a wrong colour or shape (both always appear)."""
        out = list(objs)
        if self.noise <= 0 or self.noise_rng.random() >= self.noise:
            return out
        k = int(self.noise_rng.integers(len(out)))
        if self.noise_rng.random() < 0.5:
            wrong = [c for c in COLORS if c != out[k].color]
            out[k] = dataclasses.replace(out[k], color=wrong[int(self.noise_rng.integers(len(wrong)))])
        else:
            wrong = [s for s in SHAPES if s != out[k].shape]
            out[k] = dataclasses.replace(out[k], shape=wrong[int(self.noise_rng.integers(len(wrong)))])
        return out

    def _needs_size(self, obj: SceneObject) -> bool:
        # "the red circle" is ambiguous when two objects share colour and shape: add the size then.
        return sum(o.color == obj.color and o.shape == obj.shape for o in self.objects) > 1

    def _ref(self, obj: SceneObject, true_obj: SceneObject) -> str:
        return "the " + _noun_phrase(self.rng, obj, self._needs_size(true_obj), False)

    def describe(self, true_obj: SceneObject) -> str:
        """One object with its attributes and coarse location."""
        (obj,) = self._maybe_corrupt([true_obj])
        mention_solid = self.rng.random() < 0.25  # drawn always: keeps clean and noisy streams aligned
        texture = obj.texture == "striped" or mention_solid
        noun = _article(_noun_phrase(self.rng, obj, True, texture))
        where = _location_phrase(self.rng, obj, self.scene.image_size)
        template = _pick(
            self.rng,
            ("{n} {w}", "there is {n} {w}", "{w} there is {n}", "{n} sits {w}", "you can see {n} {w}",
             "{n} is located {w}"),
        )
        return template.format(n=noun, w=where)

    def count(self) -> str:
        """The number of objects (noise: off by one)."""
        n = len(self.objects)
        if self.noise > 0 and self.noise_rng.random() < self.noise:
            n = n + 1 if n == 1 or self.noise_rng.random() < 0.5 else n - 1
        word = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
        noun = _pick(self.rng, ("shapes", "objects"))
        if n == 1:
            return _pick(
                self.rng,
                ("there is only one shape", "there is a single object", "the image contains one shape",
                 "just one object on the background"),
            )
        return _pick(
            self.rng,
            (f"there are {word} {noun}", f"{word} {noun} in total", f"the image contains {word} {noun}",
             f"i count {word} {noun}"),
        )

    def relation(self, a: SceneObject, b: SceneObject) -> str:
        """A spatial relation along the dominant axis or, sometimes, a size comparison."""
        swap, compare_size = self.rng.random() < 0.5, self.rng.random() < 0.3
        if swap:
            a, b = b, a
        if a.size != b.size and compare_size:
            kind = "bigger" if a.area > b.area else "smaller"
        elif abs(b.x - a.x) >= abs(b.y - a.y):
            kind = "left" if a.x < b.x else "right"
        else:
            kind = "above" if a.y < b.y else "below"
        ca, cb = self._maybe_corrupt([a, b])
        return f"{self._ref(ca, a)} is {_pick(self.rng, _RELATIONS[kind])} {self._ref(cb, b)}"

    def extra(self, true_obj: SceneObject, where: bool) -> str:
        """Another sentence about one object: where it is, or what it looks like."""
        (obj,) = self._maybe_corrupt([true_obj])
        shape_word = _pick(self.rng, SHAPE_WORDS[obj.shape])
        if where:
            where = _location_phrase(self.rng, obj, self.scene.image_size)
            return f"the {obj.color} {shape_word} is {where}"
        size = _pick(self.rng, SIZE_WORDS[obj.size])
        texture = _pick(self.rng, _TEXTURE_WORDS[obj.texture])
        return _pick(
            self.rng,
            (f"the {shape_word} is {size}, {texture} and {obj.color}",
             f"one of the shapes is a {size} {texture} {obj.color} {shape_word}"),
        )


def make_captions(
    scene: Scene,
    rng: np.random.Generator,
    noise: float = 0.0,
    noise_rng: np.random.Generator | None = None,
    num: int = 8,
) -> list[str]:
    """Captions of a scene: one per object, the count, pairwise relations, then extra facts.

    Every object is described even when that makes more than ``num`` captions.

    Args:
        scene: the scene.
        rng: stream for template and synonym choices.
        noise: probability that a caption carries one wrong attribute (colour, shape, or the count).
        noise_rng: stream for the noise (separate, so noise changes words but not templates).
        num: target number of captions.

    Returns:
        Lowercase sentences without final punctuation, in a random order.
    """
    writer = _CaptionWriter(scene, rng, noise, noise_rng if noise_rng is not None else rng)
    objs = scene.objects
    captions = [writer.describe(o) for o in objs]
    captions.append(writer.count())
    pairs = [(a, b) for i, a in enumerate(objs) for b in objs[i + 1 :]]
    order = rng.permutation(len(pairs)) if pairs else []
    for k in order[: max(0, num - len(captions))]:
        captions.append(writer.relation(*pairs[k]))
    k = 0
    while len(captions) < num:  # few objects: alternate "where" and "what" sentences per object
        captions.append(writer.extra(objs[k % len(objs)], where=(k // len(objs)) % 2 == 0))
        k += 1
    return [captions[k] for k in rng.permutation(len(captions))]


# ----------------------------------------------------------------------------- dense labels


def patch_labels(seg: np.ndarray, patch_size: int, min_fraction: float = 0.25) -> np.ndarray:
    """Per-patch class of a segmentation map, for the dense probe.

    A patch takes the most frequent object class inside it (ties: the lower shape id) when that class
    covers at least ``min_fraction`` of the patch; otherwise it is background (0). Small objects thus
    still label the patches they visibly occupy instead of losing every vote to the background.

    Args:
        seg: uint8 [..., H, W] class map with values in [0, SEG_CLASSES).
        patch_size: patch side; must divide H and W.
        min_fraction: share of the patch an object class needs to label it.

    Returns:
        int64 [..., H / patch_size, W / patch_size].
    """
    seg = np.asarray(seg)
    h, w = seg.shape[-2:]
    if patch_size < 1 or h % patch_size or w % patch_size:
        raise ValueError(f"patch_size={patch_size} must divide the segmentation map size {h}x{w}")
    gh, gw = h // patch_size, w // patch_size
    blocks = seg.reshape(*seg.shape[:-2], gh, patch_size, gw, patch_size)
    counts = np.stack([(blocks == c).sum(axis=(-3, -1)) for c in range(1, SEG_CLASSES)], axis=-1)
    best = counts.argmax(axis=-1)
    best_count = np.take_along_axis(counts, best[..., None], axis=-1)[..., 0]
    return np.where(best_count >= min_fraction * patch_size**2, best + 1, 0).astype(np.int64)


# ----------------------------------------------------------------------------- dataset


def check_image_size(image_size: int) -> None:
    """Raises ConfigError unless ``MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE``."""
    if not isinstance(image_size, numbers.Integral) or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"scenes image_size={image_size!r} is out of range: choose an integer from {MIN_IMAGE_SIZE} "
            f"to {MAX_IMAGE_SIZE} (e.g. data.image_size=64)"
        )


class ScenesDataset(torch.utils.data.Dataset):
    """Synthetic scenes with captions, probe labels and a segmentation map, generated on the fly.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint scenes).
        size: number of items.
        image_size: canvas side in pixels, 32 to 224.
        max_objects: at most this many objects per scene (1 to 8).
        caption_noise: probability that a caption has one wrong attribute.
        seed: dataset seed; with ``split`` and the index it fixes every item.
        num_captions: captions per image (more when there are more objects than that).

    Attributes:
        tasks: probe task name -> number of classes, in a fixed order: ``count``, ``largest_shape``,
            ``largest_color``, ``smallest_color``, ``leftmost_shape``, then the binary ``has_circle``,
            ``has_square``, ``has_triangle``, ``has_diamond``, ``has_star``, ``has_cross``.
        version: :data:`SCENES_VERSION`, the generator version the items come from (record it with
            anything derived from them).

    Items are dicts: ``image`` (PIL RGB), ``captions`` (list[str]), ``labels`` (dict[str, int]),
    ``seg`` (uint8 [S, S]) and ``index``.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 10000,
        image_size: int = 64,
        max_objects: int = 4,
        caption_noise: float = 0.0,
        seed: int = 0,
        num_captions: int = 8,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown scenes split {split!r}; expected one of {', '.join(SPLITS)}")
        check_image_size(image_size)
        if not isinstance(max_objects, numbers.Integral) or not 1 <= max_objects <= 8:
            raise ConfigError(f"scenes max_objects={max_objects!r}: choose an integer from 1 to 8")
        if not 0.0 <= caption_noise <= 1.0:
            raise ConfigError(f"scenes caption_noise={caption_noise!r}: must be a probability in [0, 1]")
        if size < 0:
            raise ValueError(f"scenes size={size} must be >= 0")
        if seed < 0:
            raise ValueError(f"scenes seed={seed} must be >= 0")
        self.split = split
        self.split_id = SPLITS[split]
        self.size = int(size)
        self.image_size = int(image_size)
        self.max_objects = int(max_objects)
        self.caption_noise = float(caption_noise)
        self.seed = int(seed)
        self.num_captions = num_captions
        self.tasks: dict[str, int] = {
            "count": self.max_objects,
            "largest_shape": len(SHAPES),
            "largest_color": len(COLORS),
            "smallest_color": len(COLORS),
            "leftmost_shape": len(SHAPES),
            **{presence_task(shape): 2 for shape in SHAPES},
        }
        self.version = SCENES_VERSION

    def __len__(self) -> int:
        return self.size

    def _index(self, i: int) -> int:
        return item_index(i, self.size, "scenes")

    def scene(self, i: int) -> Scene:
        """The objects and background of item ``i`` (no rendering)."""
        i = self._index(i)
        return sample_scene(_rng(self.seed, self.split_id, i, 0), self.image_size, self.max_objects)

    def captions(self, i: int) -> list[str]:
        """The captions of item ``i`` (no rendering)."""
        return self._captions(self.scene(i), self._index(i))

    def _captions(self, scene: Scene, i: int) -> list[str]:
        return make_captions(
            scene,
            _rng(self.seed, self.split_id, i, 1),
            self.caption_noise,
            _rng(self.seed, self.split_id, i, 2),
            self.num_captions,
        )

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._index(i)
        scene = self.scene(i)
        pixels, seg = render_scene(scene)
        return {
            "image": Image.fromarray(pixels, "RGB"),
            "captions": self._captions(scene, i),
            "labels": scene.labels(),
            "seg": seg,
            "index": i,
        }

    def __repr__(self) -> str:
        return (
            f"ScenesDataset(split={self.split!r}, size={self.size}, image_size={self.image_size}, "
            f"max_objects={self.max_objects}, caption_noise={self.caption_noise}, seed={self.seed})"
        )
