"""The built-in ``sprites`` dataset: handwritten digits moving over a textured background.

Every video is a pure function of ``(seed, split, index)``: nothing is stored, the same triple gives the
same frames, labels and captions on every machine. Random streams are derived as in
:mod:`openjepa.data.scenes`: ``numpy.random.SeedSequence([seed, split_id, index], spawn_key=(k,))`` with
``k=0`` for the video (motion, sprites, background) and ``k=1`` for the caption wording. Splits are
disjoint twice over: different index spaces, and different handwritten digit instances (scikit-learn's
1797 ``load_digits`` images are divided 8 : 1 : 1 into train, val and test by their position).

A video has ``length`` frames of ``image_size`` px. It holds 1 to ``max_sprites`` coloured digits (the
first one is always the largest and is drawn on top) that share one motion: one of 8 directions
(:data:`DIRECTIONS`) at one of 2 speeds (:data:`SPEEDS`), bouncing off the walls (``motion="bounce"``)
or leaving on one side and coming back on the other (``motion="wrap"``: the frame is a torus). With
``rotation > 0`` each digit also spins at its own constant rate.

**Labels describe the motion at one frame**, the *label frame* ``length // 2`` (attribute
:attr:`SpritesDataset.label_frame`): a bounce reverses the motion, so a clip-wide direction would be
ambiguous. Sprite positions at the label frame are uniform over where a sprite can be, whatever the
motion, and the motion keeps that distribution uniform. So what a single frame can tell is limited:

- at the label frame, position is independent of direction and speed (exactly);
- at any frame, position is independent of the speed (a bounce keeps the speed);
- with ``bounce``, away from the label frame the position depends somewhat on the label's direction (a
  sprite now moving right was further left a moment ago, unless it bounced); with ``wrap`` it does not;
- the *set* of frames of a window centred on the label frame is the same for a direction and its
  opposite (play the video backwards), so an order-free bag of frames cannot tell the two apart.

There is no motion blur and no trail. docs/video.md gives measured probe accuracies. The evaluation
clip (``ds[i]``) is the central clip, whose middle frame is the label frame with the default sizes;
training clips (``ds.clip(i, rng)``) start anywhere and carry the same item labels, so a clip far from the
label frame may show the motion after a bounce.

Probe labels (:attr:`SpritesDataset.tasks`): ``direction`` (8), ``speed`` (2), ``digit`` (10, the first
sprite's digit) and ``count`` (number of sprites minus one, as in ``scenes``).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openjepa.config import ConfigError
from openjepa.data.indexing import item_index
from openjepa.data.video import clip_span, eval_clip_indices, train_clip_indices

#: Version of what the generator draws: bump it whenever the same (seed, split, index) can give different
#: frames, labels or captions, so exported copies and cached features can tell they are stale.
SPRITES_VERSION = "2"  # 2: speeds 1.2 / 1.8 % of the side per frame (were 1 / 2.5 %)

SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
#: Direction ``k`` points at ``45 * k`` degrees counter-clockwise from "right" (image up is "up").
DIRECTIONS: tuple[str, ...] = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")
SPEEDS: tuple[str, ...] = ("slow", "fast")
#: How sprites meet the edges: bounce off the walls, or leave and come back on the opposite side.
MOTIONS: tuple[str, ...] = ("bounce", "wrap")
#: Pixels per frame as a fraction of the image side: 0.77 and 1.15 px per frame at 64 px. The 1.5x ratio
#: makes speed a task that needs learning: at 2.5x (version 1) a random-init tubelet ViT with an attentive
#: probe already read it at 98 %, so no pretraining could show a margin (docs/RESULTS.md, section 12).
SPEED_FRACTIONS: tuple[float, ...] = (0.012, 0.018)

#: Bright colours: every channel sum is above the brightest background's, so a sprite always adds light
#: where it arrives and removes it where it leaves (the sign of a frame difference means the same thing
#: for every colour).
SPRITE_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 85, 85),
    "green": (110, 240, 110),
    "blue": (90, 140, 255),
    "yellow": (250, 230, 70),
    "magenta": (245, 90, 240),
    "cyan": (80, 230, 240),
    "white": (245, 245, 245),
    "orange": (255, 165, 60),
}
COLOR_NAMES: tuple[str, ...] = tuple(SPRITE_COLORS)

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 224
MAX_SPRITES = 4

# Sprite side as a fraction of the image side: the first sprite's range lies above every other's, so the
# first sprite is the largest and the ``digit`` label is unambiguous.
_FIRST_SIDE = (0.36, 0.44)
_OTHER_SIDE = (0.22, 0.30)
# Background: two muted dark colours in a gradient, a plaid of two sinusoids and fixed pixel noise. Dark
# (channels <= ~125) so that the bright sprites stand out, textured so that no region is constant.
_BG_GRAY = (40.0, 90.0)
_BG_TINT = 15.0
_TEXTURE_AMPLITUDE = 12.0
_NOISE_MAX = 4
# The 8x8 digits hold values 0..16 with soft strokes; this ramp turns them into crisper opacities.
_ALPHA_GAIN, _ALPHA_SHIFT = 1.5, 0.25


# ----------------------------------------------------------------------------- digits


def _digits_file() -> Path | None:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn (or None)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 handwritten digits: float32 ``[N, 8, 8]`` values 0..16 and int64 labels.

    Reads the bundled CSV directly when it is where scikit-learn keeps it: importing ``sklearn.datasets``
    costs about a second in every loader worker. Falls back to :func:`sklearn.datasets.load_digits`.
    """
    path = _digits_file()
    if path is not None:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)  # 64 pixels then the label, per row
        return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ModuleNotFoundError(
            "the sprites dataset draws scikit-learn's bundled handwritten digits: pip install scikit-learn"
        ) from err
    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits as opacities: float32 ``[N, 10, 10]`` (a zero border around the 8x8) and labels."""
    images, labels = load_digit_images()
    opacity = np.clip(images / 16.0 * _ALPHA_GAIN - _ALPHA_SHIFT, 0.0, 1.0)
    # The zero border makes bilinear sampling outside the digit fall off to transparent.
    return np.pad(opacity, ((0, 0), (1, 1), (1, 1))), labels


@functools.lru_cache(maxsize=3)
def _digit_pool(split_id: int) -> tuple[np.ndarray, ...]:
    """Per digit class, the indices of the instances that belong to the split (8 : 1 : 1 by position)."""
    _, labels = _digits()
    position = np.arange(len(labels)) % 10
    members = position < 8 if split_id == 0 else position == 7 + split_id
    return tuple(np.flatnonzero(members & (labels == d)) for d in range(10))


# ----------------------------------------------------------------------------- what a video holds


@dataclass(frozen=True)
class Sprite:
    """One digit of a video, in pixels of the canvas (x to the right, y down).

    Attributes:
        digit: the digit class 0..9.
        instance: index of the handwritten image in ``load_digits``.
        color: one of :data:`COLOR_NAMES`.
        side: side of the (unrotated) sprite square in pixels.
        x: centre at the label frame, pixels from the left edge.
        y: centre at the label frame, pixels from the top edge.
        angle: rotation at the label frame, degrees counter-clockwise.
        spin: rotation speed, degrees per frame (0 without rotation).
        reach: half-extent of the sprite's square (its half-diagonal when it spins): a bouncing sprite's
            centre stays this far from the walls.
    """

    digit: int
    instance: int
    color: str
    side: float
    x: float
    y: float
    angle: float
    spin: float
    reach: float


@dataclass(frozen=True)
class SpriteVideo:
    """A generated video before rendering: motion, sprites and background.

    Attributes:
        image_size: canvas side in pixels.
        label_frame: the frame the labels describe.
        direction: index into :data:`DIRECTIONS` at the label frame.
        speed: index into :data:`SPEEDS`.
        sprites: the sprites, first (largest) first; drawn in reverse order so the first is on top.
        background: ``(color0, color1, angle, texture, noise_seed)``: gradient colours, gradient angle,
            the plaid's ``(kx, ky, phase)`` pairs and the pixel-noise seed.
        motion: ``"bounce"`` (off the walls) or ``"wrap"`` (leave one side, come back on the opposite one).
    """

    image_size: int
    label_frame: int
    direction: int
    speed: int
    sprites: tuple[Sprite, ...]
    background: tuple[Any, ...]
    motion: str = "bounce"

    def velocity(self) -> tuple[float, float]:
        """(vx, vy) in pixels per frame at the label frame (vy > 0 is down)."""
        theta = math.radians(45.0 * self.direction)
        pixels = SPEED_FRACTIONS[self.speed] * self.image_size
        # Rounding keeps the zero component of axis-aligned motions exactly zero.
        return pixels * round(math.cos(theta), 12), -pixels * round(math.sin(theta), 12)

    def centers(self, frames: np.ndarray | list[int]) -> np.ndarray:
        """float64 ``[num_sprites, len(frames), 2]``: each sprite's centre (x, y) at the given frames."""
        t = np.asarray(frames, dtype=np.float64) - self.label_frame
        vx, vy = self.velocity()
        move = _bounce if self.motion == "bounce" else _wrap
        size = self.image_size
        return np.stack(
            [
                np.stack([move(s.x, vx, t, s.reach, size), move(s.y, vy, t, s.reach, size)], axis=-1)
                for s in self.sprites
            ]
        )

    def direction_at(self, frame: float) -> int:
        """The first sprite's direction of motion at ``frame`` (bounces flip a component)."""
        if self.motion == "wrap":
            return self.direction
        s = self.sprites[0]
        vx, vy = self.velocity()
        t = float(frame) - self.label_frame
        sx = _heading(s.x, vx, t, s.reach, self.image_size)
        sy = _heading(s.y, vy, t, s.reach, self.image_size)
        angle = math.degrees(math.atan2(-vy * sy, vx * sx))
        return round(angle / 45.0) % 8

    def labels(self) -> dict[str, int]:
        """The probe labels, keyed as in :attr:`SpritesDataset.tasks`."""
        return {
            "direction": self.direction,
            "speed": self.speed,
            "digit": self.sprites[0].digit,
            "count": len(self.sprites) - 1,
        }


def _unfold(p: float, v: float, t: np.ndarray | float, reach: float, size: int) -> tuple[Any, float]:
    """Position on the unfolded circle of circumference ``2 L`` (L = room to move) and L itself."""
    room = size - 2.0 * reach
    return np.mod(p - reach + v * np.asarray(t), 2.0 * room), room


def _bounce(p: float, v: float, t: np.ndarray, reach: float, size: int) -> np.ndarray:
    """Positions at times ``t`` (relative to the label frame) of a point bouncing between the walls.

    A bouncing point is a point moving freely on a circle of twice the room, folded in half: the fold
    is a triangle wave, so positions need no step-by-step simulation and frames render independently.
    """
    z, room = _unfold(p, v, t, reach, size)
    return reach + room - np.abs(z - room)


def _wrap(p: float, v: float, t: np.ndarray, reach: float, size: int) -> np.ndarray:
    """Positions of a point moving on a circle of circumference ``size``: the canvas is a torus, and the
    part of a sprite that leaves on one side shows on the opposite one, so the sprite is always whole."""
    return np.mod(p + v * t, float(size))


def _heading(p: float, v: float, t: float, reach: float, size: int) -> float:
    """+1 if the component still moves as at the label frame at time ``t``, -1 after an odd bounce."""
    z, room = _unfold(p, v, t, reach, size)
    return 1.0 if float(z) < room else -1.0


def sample_video(
    rng: np.random.Generator,
    split_id: int,
    image_size: int,
    length: int,
    max_sprites: int,
    rotation: float = 0.0,
    motion: str = "bounce",
) -> SpriteVideo:
    """Draws a video's motion, sprites and background (no pixels).

    Sprite centres at the label frame are uniform over the positions a sprite can take (inside the walls
    for ``bounce``, the whole circle for ``wrap``), independent of the motion: that is what keeps
    direction and speed out of the frame the labels describe.
    """
    size = float(image_size)
    direction = int(rng.integers(len(DIRECTIONS)))
    speed = int(rng.integers(len(SPEEDS)))
    count = int(rng.integers(1, max_sprites + 1))
    colors = rng.permutation(len(COLOR_NAMES))[:count]
    pool = _digit_pool(split_id)
    sprites = []
    for k in range(count):
        digit = int(rng.integers(10))
        instance = int(pool[digit][rng.integers(len(pool[digit]))])
        side = float(rng.uniform(*(_FIRST_SIDE if k == 0 else _OTHER_SIDE))) * size
        # A spinning square reaches its half-diagonal; a still one its half-side.
        reach = side / 2 * (math.sqrt(2.0) if rotation > 0 else 1.0)
        low, high = (reach, size - reach) if motion == "bounce" else (0.0, size)
        x, y = rng.uniform(low, high, size=2)
        angle = float(rng.uniform(-180.0, 180.0)) if rotation > 0 else 0.0
        spin = float(rng.uniform(-rotation, rotation)) if rotation > 0 else 0.0
        sprites.append(Sprite(digit, instance, COLOR_NAMES[colors[k]], side, float(x), float(y), angle, spin, reach))
    background = (
        _background_color(rng),
        _background_color(rng),
        float(rng.uniform(0.0, 2.0 * math.pi)),
        tuple(
            tuple(
                float(v)
                for v in (
                    *rng.uniform(0.04, 0.16, size=2) * rng.choice([-1.0, 1.0], size=2),
                    rng.uniform(0, 2 * math.pi),
                )
            )
            for _ in range(2)
        ),
        int(rng.integers(0, 2**31)),
    )
    return SpriteVideo(image_size, length // 2, direction, speed, tuple(sprites), background, motion)


def _background_color(rng: np.random.Generator) -> tuple[float, float, float]:
    # Plain floats, not an array: SpriteVideo stays comparable and hashable.
    gray = rng.uniform(*_BG_GRAY)
    return tuple(float(c) for c in np.clip(gray + rng.uniform(-_BG_TINT, _BG_TINT, size=3), 0, 255))  # type: ignore[return-value]


# ----------------------------------------------------------------------------- rendering


def render_background(video: SpriteVideo) -> np.ndarray:
    """The static background of a video: uint8 ``[S, S, 3]`` (gradient + plaid + pixel noise)."""
    s = video.image_size
    c0, c1, angle, plaid, noise_seed = video.background
    c0, c1 = np.asarray(c0, dtype=np.float32), np.asarray(c1, dtype=np.float32)
    centred = np.arange(s, dtype=np.float32) + 0.5 - s / 2
    t = np.clip(0.5 + (centred[None, :] * math.cos(angle) + centred[:, None] * math.sin(angle)) / s, 0.0, 1.0)
    canvas = c0 + t[..., None] * (c1 - c0)
    # Plaid frequencies are 0.04-0.16 cycles per pixel at 64 px and scale with the image. Each wave is an
    # outer product (sin(a + b) = sin a cos b + cos a sin b): two vectors instead of S^2 sines.
    texture = np.zeros((s, s), dtype=np.float32)
    for kx, ky, phase in plaid:
        ax = 2 * math.pi * kx * 64 / s * (centred + s / 2)
        ay = 2 * math.pi * ky * 64 / s * (centred + s / 2) + phase
        texture += np.outer(np.cos(ay), np.sin(ax)) + np.outer(np.sin(ay), np.cos(ax))
    canvas += (_TEXTURE_AMPLITUDE / 2) * texture[..., None]
    canvas += np.random.default_rng(noise_seed).integers(-_NOISE_MAX, _NOISE_MAX + 1, (s, s, 3), dtype=np.int8)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def _sprite_alpha(
    sprite: Sprite, cx: np.ndarray, cy: np.ndarray, angles: np.ndarray, x0: np.ndarray, y0: np.ndarray, window: int
) -> np.ndarray:
    """Opacity ``[F, window, window]`` of ``sprite`` in windows at (x0, y0), sampled at pixel centres."""
    images, _ = _digits()
    digit = images[sprite.instance]
    steps = np.arange(window, dtype=np.float32) + 0.5
    dx = (x0[:, None] + steps[None, :] - cx[:, None]).astype(np.float32)[:, None, :]  # [F, 1, W]
    dy = (y0[:, None] + steps[None, :] - cy[:, None]).astype(np.float32)[:, :, None]  # [F, W, 1]
    scale = 8.0 / sprite.side
    if sprite.spin == 0.0 and sprite.angle == 0.0:
        u, v = np.broadcast_arrays(dx * scale, dy * scale)
    else:
        phi = np.radians(angles).astype(np.float32)[:, None, None]
        cos, sin = np.cos(phi) * scale, np.sin(phi) * scale
        u = cos * dx - sin * dy  # into the sprite's frame
        v = sin * dx + cos * dy
    # Digit pixel k has its centre at k + 1 in the padded 10x10 array.
    gx = np.clip(u + 4.5, 0.0, 8.999)
    gy = np.clip(v + 4.5, 0.0, 8.999)
    ix, iy = gx.astype(np.intp), gy.astype(np.intp)
    fx, fy = gx - ix, gy - iy
    flat = digit.reshape(-1)
    base = iy * 10 + ix
    top = flat[base] + (flat[base + 1] - flat[base]) * fx
    bottom = flat[base + 10] + (flat[base + 11] - flat[base + 10]) * fx
    return top + (bottom - top) * fy


def render_frames(
    video: SpriteVideo, frames: np.ndarray | list[int], background: np.ndarray | None = None
) -> np.ndarray:
    """Draws the given frames of a video.

    Args:
        video: the video.
        frames: frame indices (any order, repeats allowed; frames render independently).
        background: :func:`render_background` of the video, when already computed.

    Returns:
        uint8 ``[len(frames), S, S, 3]``.
    """
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    s = video.image_size
    bg = render_background(video) if background is None else background
    canvas = np.broadcast_to(bg, (len(frames), s, s, 3)).copy()
    flat = canvas.reshape(-1)  # a view: one gather and one scatter per sprite cover every frame
    centers = video.centers(frames)
    frame_base = (np.arange(len(frames)) * s * s)[:, None, None]
    for k in reversed(range(len(video.sprites))):  # the first sprite last, on top
        sprite = video.sprites[k]
        window = _window(sprite, s)
        cx, cy = centers[k, :, 0], centers[k, :, 1]
        x0, y0 = np.floor(cx - window / 2).astype(np.intp), np.floor(cy - window / 2).astype(np.intp)
        if video.motion == "bounce":  # the window may poke a pixel out; keep it whole inside the canvas
            x0, y0 = np.clip(x0, 0, s - window), np.clip(y0, 0, s - window)
        angles = sprite.angle + sprite.spin * (frames - video.label_frame)
        alpha = _sprite_alpha(sprite, cx, cy, angles, x0, y0, window)[..., None]
        offsets = np.arange(window)
        # Modulo the side: a wrapping sprite that crosses an edge shows its other part on the opposite
        # side (the canvas is a torus); a bouncing sprite's window never reaches an edge.
        rows = (y0[:, None, None] + offsets[None, :, None]) % s
        cols = (x0[:, None, None] + offsets[None, None, :]) % s
        index = (frame_base + rows * s + cols)[..., None] * 3 + np.arange(3)  # [F, W, W, 3] in the flat canvas
        region = np.take(flat, index).astype(np.float32)
        color = np.asarray(SPRITE_COLORS[sprite.color], dtype=np.float32)
        # A convex mix of two colours in 0..255: + 0.5 rounds half up and never overflows uint8.
        flat[index] = region + alpha * (color - region) + 0.5
    return canvas


def _window(sprite: Sprite, image_size: int) -> int:
    """Side of the square drawn around a sprite: its reach on both sides plus a pixel of margin."""
    return min(image_size, math.ceil(2 * sprite.reach) + 2)


# ----------------------------------------------------------------------------- captions

_DIRECTION_WORDS: dict[str, tuple[str, ...]] = {
    "right": ("right", "to the right"),
    "up-right": ("up and to the right", "toward the upper right"),
    "up": ("up", "upward"),
    "up-left": ("up and to the left", "toward the upper left"),
    "left": ("left", "to the left"),
    "down-left": ("down and to the left", "toward the lower left"),
    "down": ("down", "downward"),
    "down-right": ("down and to the right", "toward the lower right"),
}
_SPEED_WORDS = {"slow": ("slowly", "gently"), "fast": ("quickly", "fast")}
_VERBS = {"slow": ("moves", "drifts", "glides"), "fast": ("moves", "races", "shoots")}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _pick(rng: np.random.Generator, seq: tuple[str, ...]) -> str:
    return seq[min(int(rng.random() * len(seq)), len(seq) - 1)]


def make_captions(video: SpriteVideo, rng: np.random.Generator) -> list[str]:
    """Short sentences about a video: the first sprite's motion, the other sprites, and the count.

    The motion words describe the label frame, like the labels.
    """
    first = video.sprites[0]
    speed = SPEEDS[video.speed]
    where = _pick(rng, _DIRECTION_WORDS[DIRECTIONS[video.direction]])
    how = _pick(rng, _SPEED_WORDS[speed])
    digit = str(first.digit) if rng.random() < 0.5 else _NUMBER_WORDS[first.digit]
    captions = [f"{_article(first.color)} digit {digit} {_pick(rng, _VERBS[speed])} {where} {how}"]
    for other in video.sprites[1:]:
        captions.append(f"a smaller {other.color} digit {other.digit} moves along")
    n = len(video.sprites)
    captions.append(
        "one digit on a textured background" if n == 1 else f"{_NUMBER_WORDS[n]} digits on a textured background"
    )
    return captions


# ----------------------------------------------------------------------------- dataset


def _rng(seed: int, split_id: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, split_id, index], spawn_key=(stream,)))


class SpritesDataset(torch.utils.data.Dataset):
    """Synthetic videos of moving handwritten digits with motion labels, generated on the fly.

    Follows the video dataset protocol of :mod:`openjepa.data.video` (``clip``, ``eval_clips``,
    ``__getitem__``, ``tasks``); items have ``"path": None``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint videos and digit instances).
        size: number of videos.
        image_size: frame side in pixels, 32 to 224 (``data.image_size``).
        length: frames per video (``data.sprites.length``); clips are cut from them.
        max_sprites: at most this many digits per video, 1 to 4 (``data.sprites.max_sprites``).
        seed: dataset seed; with ``split`` and the index it fixes every video.
        num_frames: frames per clip (``data.num_frames``).
        frame_step: spacing of a clip's frames (``data.frame_step``).
        rotation: maximum spin in degrees per frame (0: upright digits; ``data.sprites.rotation``).
        motion: ``"bounce"`` off the walls (default) or ``"wrap"`` around the edges (``data.sprites.motion``);
            see the module docstring for what each leaves in a single frame.

    Attributes:
        tasks: probe task name -> number of classes.
        classes: task -> class names.
        label_frame: the frame the labels describe (``length // 2``).

    Raises:
        ConfigError: an argument out of range, or a clip (``num_frames`` x ``frame_step``) longer than
            ``length``.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 10000,
        image_size: int = 64,
        length: int = 32,
        max_sprites: int = 2,
        seed: int = 0,
        num_frames: int = 16,
        frame_step: int = 2,
        rotation: float = 0.0,
        motion: str = "bounce",
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown sprites split {split!r}; expected one of {', '.join(SPLITS)}")
        if not isinstance(image_size, numbers.Integral) or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(
                f"sprites image_size={image_size!r} is out of range: choose an integer from {MIN_IMAGE_SIZE} to "
                f"{MAX_IMAGE_SIZE} (e.g. data.image_size=64)"
            )
        if not isinstance(max_sprites, numbers.Integral) or not 1 <= max_sprites <= MAX_SPRITES:
            raise ConfigError(f"sprites max_sprites={max_sprites!r}: choose an integer from 1 to {MAX_SPRITES}")
        if not isinstance(length, numbers.Integral) or length < 1:
            raise ConfigError(f"data.sprites.length={length!r} must be an integer >= 1 (frames per video)")
        if motion not in MOTIONS:
            raise ConfigError(f"data.sprites.motion={motion!r}: choose one of {', '.join(MOTIONS)}")
        if not 0.0 <= rotation <= 45.0:
            raise ConfigError(f"data.sprites.rotation={rotation!r}: choose degrees per frame from 0 to 45")
        span = clip_span(num_frames, frame_step)
        if span > length:
            raise ConfigError(
                f"a clip of data.num_frames={num_frames} x data.frame_step={frame_step} spans {span} frames but "
                f"sprites videos have data.sprites.length={length}: raise data.sprites.length to at least {span} "
                "or lower data.num_frames / data.frame_step"
            )
        if size < 0:
            raise ValueError(f"sprites size={size} must be >= 0")
        if seed < 0:
            raise ValueError(f"sprites seed={seed} must be >= 0")
        self.split, self.split_id = split, SPLITS[split]
        self.size, self.image_size, self.length = int(size), int(image_size), int(length)
        self.max_sprites, self.seed, self.rotation = int(max_sprites), int(seed), float(rotation)
        self.num_frames, self.frame_step, self.motion = int(num_frames), int(frame_step), motion
        self.label_frame = self.length // 2
        self.tasks: dict[str, int] = {
            "direction": len(DIRECTIONS),
            "speed": len(SPEEDS),
            "digit": 10,
            "count": self.max_sprites,
        }
        self.classes: dict[str, list[str]] = {
            "direction": list(DIRECTIONS),
            "speed": list(SPEEDS),
            "digit": [str(d) for d in range(10)],
            "count": [str(n) for n in range(1, self.max_sprites + 1)],
        }

    def __len__(self) -> int:
        return self.size

    def _index(self, i: int) -> int:
        return item_index(i, self.size, "sprites")

    def sample(self, i: int) -> SpriteVideo:
        """Motion, sprites and background of video ``i`` (no rendering)."""
        i = self._index(i)
        rng = _rng(self.seed, self.split_id, i, 0)
        return sample_video(
            rng, self.split_id, self.image_size, self.length, self.max_sprites, self.rotation, self.motion
        )

    def labels(self, i: int) -> dict[str, int]:
        """The probe labels of video ``i`` (no rendering)."""
        return self.sample(i).labels()

    def captions(self, i: int) -> list[str]:
        """The captions of video ``i`` (no rendering)."""
        return make_captions(self.sample(i), _rng(self.seed, self.split_id, self._index(i), 1))

    def frames(self, i: int, indices: np.ndarray | list[int]) -> np.ndarray:
        """Frames ``indices`` (in ``0 .. length - 1``) of video ``i``: uint8 ``[len(indices), S, S, 3]``."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= self.length):
            raise IndexError(
                f"sprites frame indices must lie in [0, {self.length}), got {indices.min()}..{indices.max()}"
            )
        return render_frames(self.sample(i), indices)

    def video(self, i: int) -> np.ndarray:
        """All ``length`` frames of video ``i`` (what ``openjepa data sprites`` writes)."""
        return self.frames(i, np.arange(self.length))

    def _item(self, i: int, video: SpriteVideo, pixels: np.ndarray) -> dict[str, Any]:
        return {
            "video": pixels,
            "labels": video.labels(),
            "captions": make_captions(video, _rng(self.seed, self.split_id, i, 1)),
            "index": i,
            "path": None,
        }

    def clip(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        """A training clip with a random start (labels are the video's, at :attr:`label_frame`).

        Returns:
            ``{"video": uint8 [num_frames, S, S, 3], "labels", "captions", "index", "path": None}``.
        """
        i = self._index(i)
        indices = train_clip_indices(self.length, self.num_frames, self.frame_step, rng, short="error")
        video = self.sample(i)
        return self._item(i, video, render_frames(video, indices))

    def eval_clips(self, i: int, num_clips: int) -> dict[str, Any]:
        """``num_clips`` evenly spaced clips: ``"video"`` uint8 ``[num_clips, num_frames, S, S, 3]``."""
        i = self._index(i)
        indices = eval_clip_indices(self.length, self.num_frames, self.frame_step, num_clips, short="error")
        video = self.sample(i)
        pixels = render_frames(video, indices.reshape(-1))
        return self._item(i, video, pixels.reshape(*indices.shape, *pixels.shape[1:]))

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.eval_clips(i, 1)
        item["video"] = item["video"][0]
        return item

    def __repr__(self) -> str:
        return (
            f"SpritesDataset(split={self.split!r}, size={self.size}, image_size={self.image_size}, "
            f"length={self.length}, max_sprites={self.max_sprites}, seed={self.seed}, num_frames={self.num_frames}, "
            f"frame_step={self.frame_step}, rotation={self.rotation}, motion={self.motion!r})"
        )


class SpriteFrames(torch.utils.data.Dataset):
    """The labelled frame of each sprites video, as an image: what a single-frame (image) encoder sees.

    The reference point of the video methods: motion direction and speed are not readable from one frame,
    so an image encoder trained or probed on these frames should stay near chance on them, while the
    appearance tasks (digit, count) stay readable.

    Args:
        videos: the sprites videos (their ``label_frame`` is the frame given).
    """

    def __init__(self, videos: SpritesDataset):
        self.videos = videos
        self.tasks = dict(videos.tasks)
        self.classes = dict(videos.classes)
        self.version = getattr(videos, "version", None)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from PIL import Image

        video = self.videos.sample(i)
        frame = render_frames(video, np.asarray([self.videos.label_frame]))[0]
        i = self.videos._index(i)
        return {
            "image": Image.fromarray(frame),
            "labels": video.labels(),
            "captions": make_captions(video, _rng(self.videos.seed, self.videos.split_id, i, 1)),
            "index": i,
            "path": None,
        }

    def __repr__(self) -> str:
        return f"SpriteFrames({self.videos!r})"
