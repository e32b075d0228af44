"""`synthscenes`: procedurally rendered, truthfully captioned scenes (the embedded default).

Each scene is a pure function of (seed, split, index): 1-3 coloured shapes in
distinct cells of a 3 x 3 grid, over a crop of a bundled photograph or a
procedural gradient / noise background. The main object (named first in the
caption, drawn last) decides the category, and categories cycle with the index
(category = index % 10), so any multiple of 10 images is exactly balanced.
Objects are drawn on a supersampled layer and box-filtered down (anti-aliasing
that keeps every interior pixel exactly its palette colour). Objects are 18, 24
or 30% of the image side (11.5 to 19 px at 64 px), and an object's colour is
drawn from the palette colours that stand out from the background under it
(``visible_colors``), so every captioned attribute can be seen at 64 px.

Caption grammar (parse_caption inverts it):
    "a <size> <color> <shape> at the <position>"  joined by ", " and " and ",
    then ", <background phrase>", e.g.
    "a large red star at the top left and a small blue circle at the bottom right, on a brick wall"
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from hartkit.data.bundled_photos import PHOTOS, load_photo, random_crop

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "hexagon",
    "star", "cross", "heart", "arrow", "semicircle",
)  # fmt: skip
CATEGORIES: list[str] = list(SHAPES)  # category = the main object's shape

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 25),
    "orange": (245, 135, 15),
    "purple": (140, 45, 185),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}

# diameter of each size as a fraction of the image side (at 64 px: 11.5, 15.4 and 19.2 px); large + jitter
# still fits one grid cell (0.30 / 2 + 0.015 < 1 / 6). Objects were 9 to 17 px wide (0.14 / 0.20 / 0.26 with
# jitter 0.03) until the embedded evaluator had to tell ten shapes apart at 64 px: the small ones were a few
# pixels of anti-aliased blob.
SIZES: dict[str, float] = {"small": 0.18, "medium": 0.24, "large": 0.30}
MIN_CONTRAST = 100.0  # least RGB distance of an object's colour from the mean background under it
JITTER = 0.015  # max offset of an object's centre from its cell centre (fraction of the image side)

POSITIONS: tuple[str, ...] = (
    "top left", "top center", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom center", "bottom right",
)  # fmt: skip  (row-major over the 3 x 3 grid)

BACKGROUND_KINDS = ("photo", "gradient", "noise")
_BACKGROUND_WEIGHTS = {"photo": 2.0, "gradient": 1.0, "noise": 1.0}  # real texture most often
BACKGROUND_PHOTOS: tuple[str, ...] = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "motorcycle_left", "colorwheel", "brick", "grass", "gravel",
)  # fmt: skip

SPLIT_IDS = {"train": 0, "test": 1}


@dataclass
class SceneObject:
    shape: str
    color: str
    size: str
    position: str
    center: tuple[float, float]  # (x, y) in pixels of the output image
    radius: float  # half the object's extent, in pixels

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape} at the {self.position}"


@dataclass
class SceneLayout:
    objects: list[SceneObject]  # objects[0] is the main object (drawn last, on top)
    background: str  # caption phrase, e.g. "on a brick wall"
    background_kind: str  # photo | gradient | noise
    resolution: int
    extras: dict = field(default_factory=dict)

    @property
    def main(self) -> SceneObject:
        return self.objects[0]


# ---------------------------------------------------------------- shapes (unit box [-1, 1]^2, y down)


def _regular_polygon(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(radius * math.cos(phase + 2 * math.pi * i / n), radius * math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    out = []
    for i in range(2 * points):
        r = 1.0 if i % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * i / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def _heart(n: int = 64) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    # centre the bounding box on the origin and scale into [-1, 1]; the box centre lies in the body
    x = x - (x.max() + x.min()) / 2
    y = y - (y.max() + y.min()) / 2
    s = max(x.max(), y.max())
    return list(zip((x / s).tolist(), (y / s).tolist()))


def _semicircle(n: int = 48) -> list[tuple[float, float]]:
    # flat side down; the half disc's bounding box is centred on the origin so the origin is inside
    a = np.linspace(math.pi, 2 * math.pi, n)
    return list(zip(np.cos(a).tolist(), (0.5 + np.sin(a)).tolist()))


_UNIT_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)],
    "diamond": [(0.0, -1.0), (0.75, 0.0), (0.0, 1.0), (-0.75, 0.0)],
    "hexagon": _regular_polygon(6, phase=0.0),
    "star": _star(),
    "cross": [
        (-0.33, -1), (0.33, -1), (0.33, -0.33), (1, -0.33), (1, 0.33), (0.33, 0.33),
        (0.33, 1), (-0.33, 1), (-0.33, 0.33), (-1, 0.33), (-1, -0.33), (-0.33, -0.33),
    ],  # fmt: skip
    "heart": _heart(),
    "arrow": [(-1, -0.3), (0.1, -0.3), (0.1, -0.8), (1, 0), (0.1, 0.8), (0.1, 0.3), (-1, 0.3)],
    "semicircle": _semicircle(),
}


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        return
    pts = [(cx + r * x, cy + r * y) for x, y in _UNIT_POLYGONS[shape]]
    draw.polygon(pts, fill=fill)


# ---------------------------------------------------------------- backgrounds


def _gradient(rng: np.random.Generator, res: int, c0, c1) -> Image.Image:
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:res, 0:res].astype(np.float32) / max(res - 1, 1) - 0.5
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    rgb = (1 - t[..., None]) * np.array(c0, np.float32) + t[..., None] * np.array(c1, np.float32)
    return Image.fromarray(rgb.round().astype(np.uint8))


NOISE_GRAIN = 0.06  # default std of the per-pixel grain on noise backgrounds (data.noise_grain)


def _noise(rng: np.random.Generator, res: int, c0, c1, grain: float = NOISE_GRAIN) -> Image.Image:
    # smooth value noise: a coarse random grid upsampled bicubically, then mapped between two colours
    cells = int(rng.integers(3, 9))
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    t = np.asarray(coarse.resize((res, res), Image.Resampling.BICUBIC), np.float32) / 255.0
    # fine grain on top; drawn even at grain 0, so that the rest of the scene is the same at every grain
    t = t + rng.normal(0, grain, size=t.shape).astype(np.float32)
    t = np.clip(t, 0, 1)
    rgb = (1 - t[..., None]) * np.array(c0, np.float32) + t[..., None] * np.array(c1, np.float32)
    return Image.fromarray(rgb.round().astype(np.uint8))


def _background(
    rng: np.random.Generator, res: int, kinds: tuple[str, ...], grain: float = NOISE_GRAIN
) -> tuple[Image.Image, str, str]:
    weights = np.array([_BACKGROUND_WEIGHTS[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    if kind == "photo":
        name = BACKGROUND_PHOTOS[int(rng.integers(len(BACKGROUND_PHOTOS)))]
        img = random_crop(load_photo(name), rng, res, scale=(0.3, 1.0), resample=Image.Resampling.BOX)
        return img, PHOTOS[name].backdrop, kind
    names = list(COLORS)
    i, j = rng.choice(len(names), size=2, replace=False)
    c0, c1 = names[int(i)], names[int(j)]
    if kind == "gradient":
        return _gradient(rng, res, COLORS[c0], COLORS[c1]), f"on a {c0}-to-{c1} gradient", kind
    return _noise(rng, res, COLORS[c0], COLORS[c1], grain), f"on a {c0} and {c1} noise pattern", kind


# ---------------------------------------------------------------- scenes


def visible_colors(background_HW3: np.ndarray, center: tuple[float, float], radius: float) -> list[str]:
    """Palette colours that stand out from the background under an object's box (all of them if none does).

    A colour counts as visible when its RGB distance to the mean background colour of the box is at least
    MIN_CONTRAST, so that a red star is never drawn on a red patch where nobody could see it.
    """
    h, w = background_HW3.shape[:2]
    x0, x1 = max(0, int(center[0] - radius)), min(w, int(math.ceil(center[0] + radius)))
    y0, y1 = max(0, int(center[1] - radius)), min(h, int(math.ceil(center[1] + radius)))
    mean = background_HW3[y0:y1, x0:x1].reshape(-1, 3).mean(0)
    names = [c for c, rgb in COLORS.items() if float(np.linalg.norm(np.asarray(rgb, np.float32) - mean)) >= MIN_CONTRAST]
    return names or list(COLORS)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; synthscenes has {sorted(SPLIT_IDS)}")
    return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


def default_supersample(resolution: int) -> int:
    return 4 if resolution <= 256 else 2


def render_scene(
    seed: int,
    split: str,
    index: int,
    resolution: int = 64,
    max_objects: int = 3,
    backgrounds: tuple[str, ...] = BACKGROUND_KINDS,
    supersample: int = 0,
    noise_grain: float | None = None,
) -> tuple[Image.Image, str, SceneLayout]:
    """Render scene `index` of `split`: (RGB image, caption, layout with object centres in pixels).

    ``noise_grain``: std of the per-pixel grain of noise backgrounds (None: NOISE_GRAIN); every other part of
    the scene (objects, colours, the smooth noise itself) is the same at every grain."""
    if not 1 <= max_objects <= 9:
        raise ValueError(f"data.max_objects must be in 1..9, got {max_objects}")
    unknown = set(backgrounds) - set(BACKGROUND_KINDS)
    if unknown or not backgrounds:
        raise ValueError(f"data.backgrounds must be a non-empty subset of {list(BACKGROUND_KINDS)}, got {list(backgrounds)}")
    rng = scene_rng(seed, split, index)
    res = int(resolution)
    n = int(rng.integers(1, max_objects + 1))
    shapes = [SHAPES[index % len(SHAPES)]] + [SHAPES[int(k)] for k in rng.integers(0, len(SHAPES), n - 1)]
    cells = rng.choice(9, size=n, replace=False)
    grain = NOISE_GRAIN if noise_grain is None else float(noise_grain)
    if grain < 0:
        raise ValueError(f"data.noise_grain must be >= 0 (a standard deviation), got {grain}")
    image, backdrop, kind = _background(rng, res, tuple(backgrounds), grain)
    bg = np.asarray(image.convert("RGB"), dtype=np.float32)
    size_names = list(SIZES)
    objects = []
    for shape, cell in zip(shapes, cells):
        row, col = divmod(int(cell), 3)
        jx, jy = rng.uniform(-JITTER, JITTER, size=2)
        size = size_names[int(rng.integers(len(size_names)))]
        center = (((col + 0.5) / 3 + jx) * res, ((row + 0.5) / 3 + jy) * res)
        radius = SIZES[size] / 2 * res
        choices = visible_colors(bg, center, radius)
        objects.append(
            SceneObject(
                shape=shape,
                color=choices[int(rng.integers(len(choices)))],
                size=size,
                position=POSITIONS[int(cell)],
                center=center,
                radius=radius,
            )
        )

    s = supersample or default_supersample(res)
    layer = Image.new("RGBA", (res * s, res * s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for obj in reversed(objects):  # main object last, on top
        cx, cy = obj.center
        draw_shape(draw, obj.shape, cx * s, cy * s, obj.radius * s, COLORS[obj.color] + (255,))
    if s > 1:
        layer = layer.resize((res, res), Image.Resampling.BOX)
    image = Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")

    layout = SceneLayout(objects=objects, background=backdrop, background_kind=kind, resolution=res)
    return image, make_caption(objects, backdrop), layout


def make_caption(objects: list[SceneObject], background: str) -> str:
    phrases = [o.phrase() for o in objects]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"{listed}, {background}"


_OBJECT_RE = re.compile(
    r"\ba (?P<size>{sizes}) (?P<color>{colors}) (?P<shape>{shapes}) at the (?P<position>{positions})\b".format(
        sizes="|".join(SIZES),
        colors="|".join(COLORS),
        shapes="|".join(SHAPES),
        positions="|".join(sorted(POSITIONS, key=len, reverse=True)),
    )
)
_BACKGROUND_RE = re.compile(r", ((?:on|in front of) [^,]+)$")


def parse_caption(prompt: str) -> dict:
    """Attributes of the main (first-named) object and the background of a synthscenes caption.

    Returns dict(shape, color, size, position, background, background_kind, objects=[dict per object]);
    shape/color/size/position are None when the prompt names no object in this grammar, the background fields
    when it names no background.
    """
    objects = [m.groupdict() for m in _OBJECT_RE.finditer(prompt)]
    bg = _BACKGROUND_RE.search(prompt)
    background = bg.group(1) if bg else None
    main = objects[0] if objects else dict.fromkeys(("size", "color", "shape", "position"))
    return {**main, "background": background, "background_kind": _background_kind(background), "objects": objects}


def _background_kind(phrase: str | None) -> str | None:
    """photo / gradient / noise, from the phrases ``_background`` writes."""
    if phrase is None:
        return None
    if phrase.endswith(" gradient"):
        return "gradient"
    return "noise" if phrase.endswith(" noise pattern") else "photo"
