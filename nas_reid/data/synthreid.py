"""synthreid: the built-in synthetic re-ID benchmark, a deterministic procedural generator.

Identities (:class:`IdentitySpec`) are rendered under cameras (:class:`CameraSpec`); a fraction
of identities are *hard negatives*, a copy of another identity that differs in exactly one local
detail. The output uses the Market-1501 layout and names (``PPPP_cCsS_FFFFFF_BB.jpg``, pids from
1, cameras 1-based, distractors pid 0000), so the Market-style parser reads it::

    <root>/bounding_box_train/   train identities, all their images
    <root>/query/                test identities: one image per (identity, camera)
    <root>/bounding_box_test/    test identities: the other images, plus pid-0 distractors
    <root>/synthreid.json        config, generator version, hash, per-split counts, hard negatives

Every image is drawn from its own RNG seeded by ``(seed, pid, camera, index)``, so the bytes do
not depend on the number of worker processes. Difficulty is monotone in the knobs of
:class:`SynthConfig`: raising ``occluder_prob``, ``blur``, ``color_cast``, ``illumination``,
``crop_jitter``, ``scale_jitter``, ``noise``, ``hard_negative_fraction``,
``distractor_fraction`` or ``view_bias`` makes it harder, raising ``palette_size`` easier.
The attributes, the renderer and why the knobs are monotone: docs/data.md, section
`nas_reid.data.synthreid`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from nas_reid.errors import UserError
from nas_reid.fileio import atomic_directory, atomic_write_json

GENERATOR_VERSION = "1"
"""Bumped whenever the same config would render different bytes; part of the cache key."""

SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
INFO_FILE = "synthreid.json"

# ------------------------------------------------------------------------------ palettes
# Clothing colours, most common first; SynthConfig.palette_size takes a prefix of this list.
CLOTHING = {
    "black": (32, 32, 36), "white": (232, 232, 226), "gray": (128, 128, 128),
    "navy": (34, 44, 92), "blue": (52, 104, 190), "red": (186, 36, 42),
    "green": (44, 118, 62), "beige": (206, 186, 146), "brown": (108, 70, 42),
    "yellow": (226, 196, 52), "pink": (228, 150, 178), "purple": (108, 62, 138),
    "olive": (108, 110, 50), "orange": (226, 118, 40), "teal": (30, 128, 128),
    "maroon": (108, 30, 46),
}
CLOTHING_NAMES = tuple(CLOTHING)
LOGO_COLORS = {
    "red": (214, 30, 36), "yellow": (246, 214, 30), "white": (246, 246, 246), "black": (16, 16, 16),
    "blue": (30, 90, 230), "green": (30, 170, 60), "orange": (246, 130, 20), "pink": (246, 120, 190),
}
LOGO_SHAPES = ("circle", "square", "triangle", "diamond", "cross", "bar")
SHOE_COLORS = {
    "black": (24, 24, 24), "white": (236, 236, 236), "brown": (110, 64, 32), "red": (200, 30, 30),
    "blue": (40, 80, 200), "gray": (130, 130, 136), "yellow": (230, 200, 40),
}
BAG_COLORS = {
    "black": (28, 28, 30), "brown": (120, 76, 40), "red": (180, 30, 36), "navy": (30, 40, 96),
    "beige": (200, 178, 130), "gray": (118, 118, 122), "green": (40, 100, 50),
}
HAT_COLORS = {
    "black": (28, 28, 30), "white": (236, 236, 232), "red": (190, 30, 36), "navy": (30, 40, 96),
    "beige": (204, 184, 140), "yellow": (230, 196, 40), "green": (40, 120, 56), "gray": (120, 120, 124),
}
HAIR_COLORS = {
    "black": (22, 20, 20), "dark_brown": (58, 38, 26), "brown": (104, 70, 40),
    "blonde": (200, 170, 100), "gray": (150, 148, 144), "auburn": (130, 50, 30),
}
EYES = (30, 20, 20)
SKIN_TONES = ((240, 206, 180), (224, 182, 148), (196, 148, 108), (150, 104, 70), (100, 68, 46))
UPPER_PATTERNS = ("solid", "stripes", "checks", "two_tone")
LOWER_STYLES = ("trousers", "shorts", "skirt")
BAG_SIDES = ("none", "left", "right")
VIEWS = ("front", "back", "side")
BACKGROUNDS = ("street", "corridor", "park", "shops", "road", "hall")
OCCLUDERS = ("pole", "car", "person", "board")
WALLS = ((196, 184, 160), (170, 160, 150), (150, 84, 64), (200, 200, 196), (120, 126, 134),
         (214, 200, 170), (150, 170, 180), (180, 170, 130))

LOCAL_DETAILS = ("logo_color", "logo_shape", "shoe_color", "bag_side", "hat")
"""The attributes a hard negative may change (exactly one of them)."""

# Domain tags of the SeedSequence entropy, so that the streams never overlap.
_TAG_IDENTITY, _TAG_HARD, _TAG_CAMERA, _TAG_BACKGROUND, _TAG_APPEAR = 1, 2, 3, 4, 5
_TAG_SPLIT, _TAG_DISTRACTOR, _TAG_IMAGE = 6, 7, 8


def _seq(*entropy: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(e) for e in entropy])


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(_seq(*entropy))


# ------------------------------------------------------------------------------ config
@dataclass
class SynthConfig:
    """Everything that defines a synthreid benchmark; the same config gives the same bytes.

    Size: ``ids`` identities, pids ``1..train_ids`` for training and the rest for testing
    (``train_ids=None``: half, rounded down); each identity has ``images_per_id`` images spread
    over 2 to ``min(cameras, images_per_id // 2)`` of the ``cameras`` cameras. Images are
    ``height`` x ``width`` JPEGs (quality ``jpeg_quality``). ``distractor_fraction`` adds that
    fraction of the gallery size as pid-0 images of people outside the set.

    Difficulty knobs (larger is harder, except ``palette_size``; 0 switches an effect off,
    except ``view_bias`` where 0 gives every camera the same viewpoint mix):

    - ``hard_negative_fraction``: share of identities (per split, at most 0.5) that copy another
      identity of their split except for one local detail.
    - ``palette_size``: number of clothing colours used (3..16); fewer colours, more look-alikes.
    - ``occluder_prob``: mean probability that an image has an occluder (pole, car, passer-by,
      sign board); each camera scales it by a factor in [0.4, 1.6], capped at 1.
    - ``blur``: Gaussian blur scale in output pixels: each camera's sigma is 0.25..1 times
      ``blur``, and each image multiplies its camera's sigma by 0.6..1.4.
    - ``color_cast``: strength of the per-camera white-balance error (0.15 = up to ~15 % per
      channel).
    - ``illumination``: spread of the per-camera brightness and contrast (log scale).
    - ``crop_jitter``, ``scale_jitter``: spread of the person's position and size in the crop.
    - ``noise``: sensor noise standard deviation, as a fraction of 255 (per camera, scaled).
    - ``view_bias``: how much each camera prefers one viewpoint (front, back or side, cycling
      over the cameras); 1 makes each camera see its viewpoint only.
    """

    ids: int = 300
    train_ids: int | None = None
    cameras: int = 6
    images_per_id: int = 16
    height: int = 128
    width: int = 64
    seed: int = 0
    distractor_fraction: float = 0.04
    hard_negative_fraction: float = 0.2
    palette_size: int = 12
    occluder_prob: float = 0.25
    blur: float = 0.8
    color_cast: float = 0.15
    illumination: float = 0.3
    crop_jitter: float = 0.05
    scale_jitter: float = 0.06
    noise: float = 0.015
    view_bias: float = 0.5
    jpeg_quality: int = 95

    @property
    def num_train_ids(self) -> int:
        return self.ids // 2 if self.train_ids is None else self.train_ids

    def validate(self) -> "SynthConfig":
        """Check every field; raise :class:`UserError` naming the first bad one. Returns self."""

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise UserError(f"synthreid config: {name}={getattr(self, name)!r} is invalid: {what}")

        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "train_ids" and value is None:
                continue
            if f.type in ("int", "int | None"):
                need(isinstance(value, (int, np.integer)) and not isinstance(value, bool),
                     f.name, "must be an integer")
            elif f.type == "float":
                need(isinstance(value, (int, float, np.integer, np.floating))
                     and not isinstance(value, bool) and math.isfinite(value),
                     f.name, "must be a finite number")
        need(4 <= self.ids <= 9999, "ids", "must be in 4..9999")
        need(2 <= self.cameras <= 9, "cameras", "must be in 2..9")
        need(4 <= self.images_per_id <= 999, "images_per_id", "must be in 4..999 (2 cameras x 2 images)")
        need(2 <= self.num_train_ids <= self.ids - 2, "train_ids",
             f"must leave at least 2 train and 2 test identities out of ids={self.ids}")
        need(32 <= self.height <= 1024, "height", "must be in 32..1024")
        need(16 <= self.width <= 1024, "width", "must be in 16..1024")
        need(0 <= self.seed < 2**63, "seed", "must be in 0..2**63-1")
        need(0 <= self.distractor_fraction <= 1, "distractor_fraction", "must be in [0, 1]")
        need(0 <= self.hard_negative_fraction <= 0.5, "hard_negative_fraction", "must be in [0, 0.5]")
        need(3 <= self.palette_size <= len(CLOTHING), "palette_size", f"must be in 3..{len(CLOTHING)}")
        need(0 <= self.occluder_prob <= 1, "occluder_prob", "must be in [0, 1]")
        need(0 <= self.blur <= 5, "blur", "must be in [0, 5] (pixels)")
        need(0 <= self.color_cast <= 0.5, "color_cast", "must be in [0, 0.5]")
        need(0 <= self.illumination <= 1, "illumination", "must be in [0, 1]")
        need(0 <= self.crop_jitter <= 0.3, "crop_jitter", "must be in [0, 0.3]")
        need(0 <= self.scale_jitter <= 0.3, "scale_jitter", "must be in [0, 0.3]")
        need(0 <= self.noise <= 0.2, "noise", "must be in [0, 0.2]")
        need(0 <= self.view_bias <= 1, "view_bias", "must be in [0, 1]")
        need(1 <= self.jpeg_quality <= 100, "jpeg_quality", "must be in 1..100")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-JSON form: ``train_ids`` resolved, numbers as int or float."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = float(value) if f.type == "float" else int(value if value is not None else 0)
        out["train_ids"] = self.num_train_ids
        return out

    def config_hash(self) -> str:
        """12 hex digits of SHA-256 over the canonical config JSON and the generator version."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{text}|synthreid-{GENERATOR_VERSION}".encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------ identities
@dataclass(frozen=True)
class IdentitySpec:
    """What a person looks like; every image of the identity is rendered from this alone.

    Colours are names from the module palettes. Geometry is relative to the person's height:
    ``stature`` (share of the crop height, 0.88..1), ``build`` (width factor), ``head`` (head
    size factor), ``leg`` (legs' share of the height). Bag and logo colours are kept even when
    there is no bag or logo, so adding one changes exactly one field.
    """

    stature: float
    build: float
    head: float
    leg: float
    skin: int
    hair_color: str
    hair_long: bool
    upper_pattern: str
    upper_color: str
    upper_color2: str
    sleeves: str
    lower_style: str
    lower_color: str
    shoe_color: str
    bag_side: str
    bag_color: str
    hat: bool
    hat_color: str
    logo_shape: str
    logo_color: str


@dataclass(frozen=True)
class Identity:
    """One identity of the benchmark: pid (1-based), split, look, and hard-negative origin.

    ``source`` is the pid this identity was copied from (0 if none) and ``changed`` the one
    attribute of :data:`LOCAL_DETAILS` that differs from the source's spec ("" if none).
    """

    pid: int
    split: str
    spec: IdentitySpec
    source: int = 0
    changed: str = ""


def _pick(rng: np.random.Generator, options: Sequence, exclude: Sequence = ()) -> Any:
    choices = [o for o in options if o not in exclude]
    return choices[int(rng.integers(len(choices)))]


def _far_logo_colors(upper: Sequence[str]) -> list[str]:
    """Logo colours that stand out on the given shirt colours."""
    def dist(a, b):
        return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5
    return [n for n, c in LOGO_COLORS.items() if all(dist(c, CLOTHING[u]) > 90 for u in upper)]


def random_identity(rng: np.random.Generator, palette_size: int) -> IdentitySpec:
    """Draw one person from the attribute distribution (clothing from the first colours)."""
    palette = CLOTHING_NAMES[:palette_size]
    upper = _pick(rng, palette)
    upper2 = _pick(rng, palette, exclude=(upper,))
    pattern = UPPER_PATTERNS[int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]))]
    logo_shape = "none" if rng.random() < 0.35 else _pick(rng, LOGO_SHAPES)
    logo_colors = _far_logo_colors([upper] if pattern == "solid" else [upper, upper2])
    return IdentitySpec(
        stature=round(float(rng.uniform(0.88, 1.0)), 4),
        build=round(float(rng.uniform(0.85, 1.2)), 4),
        head=round(float(rng.uniform(0.88, 1.12)), 4),
        leg=round(float(rng.uniform(0.46, 0.54)), 4),
        skin=int(rng.integers(len(SKIN_TONES))),
        hair_color=_pick(rng, tuple(HAIR_COLORS)),
        hair_long=bool(rng.random() < 0.3),
        upper_pattern=pattern,
        upper_color=upper,
        upper_color2=upper2,
        sleeves="long" if rng.random() < 0.6 else "short",
        lower_style=LOWER_STYLES[int(rng.choice(3, p=[0.65, 0.15, 0.2]))],
        lower_color=_pick(rng, palette),
        shoe_color=_pick(rng, tuple(SHOE_COLORS)),
        bag_side=BAG_SIDES[int(rng.choice(3, p=[0.5, 0.25, 0.25]))],
        bag_color=_pick(rng, tuple(BAG_COLORS)),
        hat=bool(rng.random() < 0.25),
        hat_color=_pick(rng, tuple(HAT_COLORS)),
        logo_shape=logo_shape,
        logo_color=_pick(rng, logo_colors or tuple(LOGO_COLORS)),
    )


def hard_negative(source: IdentitySpec, rng: np.random.Generator) -> tuple[IdentitySpec, str]:
    """A copy of ``source`` with exactly one of :data:`LOCAL_DETAILS` changed; returns (spec, name)."""
    options = ["shoe_color", "bag_side", "hat"]
    if source.logo_shape != "none":
        options += ["logo_color", "logo_shape"]
    name = options[int(rng.integers(len(options)))]
    if name == "shoe_color":
        value: Any = _pick(rng, tuple(SHOE_COLORS), exclude=(source.shoe_color,))
    elif name == "bag_side":
        value = {"left": "right", "right": "left"}.get(source.bag_side) or _pick(rng, ("left", "right"))
    elif name == "hat":
        value = not source.hat
    elif name == "logo_shape":
        value = _pick(rng, LOGO_SHAPES, exclude=(source.logo_shape,))
    else:
        upper = [source.upper_color] + ([source.upper_color2] if source.upper_pattern != "solid" else [])
        value = _pick(rng, _far_logo_colors(upper) or tuple(LOGO_COLORS), exclude=(source.logo_color,))
    return dataclasses.replace(source, **{name: value}), name


APPEARANCE_FIELDS = tuple(f.name for f in fields(IdentitySpec)
                          if f.name not in ("stature", "build", "head", "leg"))
"""The discrete attributes of a look: two specs that agree on all of them differ only in body
proportions (a few percent), and count as the same person for disjointness checks."""


def appearance_key(spec: IdentitySpec) -> tuple:
    """The discrete attributes of ``spec`` (:data:`APPEARANCE_FIELDS`), in order."""
    return tuple(getattr(spec, name) for name in APPEARANCE_FIELDS)


def appearance_keys(config: SynthConfig) -> dict[tuple, str]:
    """Every look a benchmark renders (identities and distractors) -> where, e.g. ``pid 17``."""
    plan = make_plan(config)
    keys = {appearance_key(d): f"distractor {k}" for k, d in enumerate(plan.distractors)}
    keys.update({appearance_key(i.spec): f"pid {i.pid}" for i in plan.identities})
    return keys


def make_identities(config: SynthConfig) -> list[Identity]:
    """All identities of the benchmark, pid order (train pids first, then test pids).

    In each split of ``n`` identities, a fixed random order is cut into pairs; the first
    ``round(hard_negative_fraction * n)`` pairs make the first identity a hard negative of the
    second, so raising the fraction only adds pairs.
    """
    config.validate()
    n_train = config.num_train_ids
    specs = {pid: random_identity(_rng(config.seed, _TAG_IDENTITY, pid), config.palette_size)
             for pid in range(1, config.ids + 1)}
    out: dict[int, Identity] = {}
    for split, pids in (("train", range(1, n_train + 1)), ("test", range(n_train + 1, config.ids + 1))):
        shuffle = _rng(config.seed, _TAG_SPLIT, 0 if split == "train" else 1)
        order = [int(p) for p in shuffle.permutation(list(pids))]
        n_hard = int(round(config.hard_negative_fraction * len(order)))
        hard, sources = order[0:2 * n_hard:2], order[1:2 * n_hard:2]
        for pid in pids:
            out[pid] = Identity(pid, split, specs[pid])
        for pid, src in zip(hard, sources):
            spec, changed = hard_negative(specs[src], _rng(config.seed, _TAG_HARD, pid))
            out[pid] = Identity(pid, split, spec, source=src, changed=changed)
    return [out[pid] for pid in sorted(out)]


# ------------------------------------------------------------------------------ cameras
@dataclass(frozen=True)
class CameraSpec:
    """One camera: background, viewpoint mix, scale, photometry and occluders (1-based index)."""

    index: int
    background: str
    wall: tuple[int, int, int]
    view_probs: tuple[float, float, float]
    scale: float
    gain: float
    contrast: float
    cast: tuple[float, float, float]
    blur: float
    noise: float
    occluder_prob: float
    occluder_weights: tuple[float, ...]


def make_cameras(config: SynthConfig) -> list[CameraSpec]:
    """The ``config.cameras`` cameras; each draws its random numbers whatever the knob values."""
    scene = _rng(config.seed, _TAG_CAMERA, 0)
    kinds = scene.permutation(len(BACKGROUNDS))
    walls = scene.permutation(len(WALLS))
    first_view = int(scene.integers(3))
    cams = []
    for c in range(1, config.cameras + 1):
        rng = _rng(config.seed, _TAG_CAMERA, c)
        dominant = (c - 1 + first_view) % 3
        views = np.full(3, (1 - config.view_bias) / 3)
        views[dominant] += config.view_bias
        cast = rng.uniform(-1, 1, 3)
        cast -= cast.mean()
        cast = 1 + config.color_cast * rng.uniform(0.4, 1.0) * cast / max(np.abs(cast).max(), 1e-6)
        cams.append(CameraSpec(
            index=c,
            background=BACKGROUNDS[int(kinds[(c - 1) % len(BACKGROUNDS)])],
            wall=WALLS[int(walls[(c - 1) % len(WALLS)])],
            view_probs=tuple(float(v) for v in views / views.sum()),
            scale=float(np.exp(config.scale_jitter * rng.uniform(-1, 1))),
            gain=float(np.exp(config.illumination * rng.uniform(-1, 0.5))),
            contrast=float(np.exp(0.5 * config.illumination * rng.uniform(-1, 1))),
            cast=tuple(float(v) for v in cast),
            blur=float(config.blur * rng.uniform(0.25, 1.0)),
            noise=float(config.noise * rng.uniform(0.5, 1.5)),
            occluder_prob=float(min(1.0, config.occluder_prob * rng.uniform(0.4, 1.6))),
            occluder_weights=tuple(float(w) for w in rng.dirichlet(np.ones(len(OCCLUDERS)))),
        ))
    return cams


# ------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class ImageTask:
    """One image to render: where it goes and which RNG stream draws it (pid 0: distractor)."""

    relpath: str
    split: str
    pid: int
    camera: int
    index: int


@dataclass
class Plan:
    """Everything :func:`generate_synthreid` renders, decided before any pixel is drawn."""

    config: SynthConfig
    identities: list[Identity]
    cameras: list[CameraSpec]
    distractors: list[IdentitySpec]
    tasks: list[ImageTask] = field(default_factory=list)


def _camera_counts(rng: np.random.Generator, config: SynthConfig) -> dict[int, int]:
    """camera -> number of images: >= 2 cameras, each >= 1 image, two of them >= 2."""
    max_k = min(config.cameras, config.images_per_id // 2)
    k = int(rng.integers(2, max_k + 1))
    cams = [int(c) + 1 for c in rng.permutation(config.cameras)[:k]]
    counts = dict.fromkeys(cams, 1)
    counts[cams[0]] += 1
    counts[cams[1]] += 1
    rest = config.images_per_id - sum(counts.values())
    for cam, extra in zip(cams, rng.multinomial(rest, rng.dirichlet(np.full(k, 2.0)))):
        counts[cam] += int(extra)
    return dict(sorted(counts.items()))


def make_plan(config: SynthConfig) -> Plan:
    """Identities, cameras and the list of every image with its file name and split."""
    config.validate()
    identities = make_identities(config)
    plan = Plan(config, identities, make_cameras(config), [])
    gallery = 0
    for ident in identities:
        rng = _rng(config.seed, _TAG_APPEAR, ident.pid)
        index = 0
        for cam, n in _camera_counts(rng, config).items():
            seq = int(rng.integers(1, 7))
            frame = int(rng.integers(0, 150_000))
            query_at = int(rng.integers(n))
            for i in range(n):
                frame += int(rng.integers(8, 60))
                split = ident.split if ident.split == "train" else ("query" if i == query_at else "gallery")
                gallery += split == "gallery"
                name = f"{ident.pid:04d}_c{cam}s{seq}_{frame:06d}_{int(rng.integers(1, 4)):02d}.jpg"
                plan.tasks.append(ImageTask(f"{SPLIT_FOLDERS[split]}/{name}", split, ident.pid, cam, index))
                index += 1
    n_distractors = int(round(config.distractor_fraction * gallery))
    rng = _rng(config.seed, _TAG_DISTRACTOR, 0)
    used: set[str] = set()
    for k in range(n_distractors):
        cam = int(rng.integers(1, config.cameras + 1))
        plan.distractors.append(random_identity(_rng(config.seed, _TAG_DISTRACTOR, k + 1), len(CLOTHING)))
        name = ""
        while not name or name in used:
            name = f"0000_c{cam}s{int(rng.integers(1, 7))}_{int(rng.integers(0, 999_999)):06d}_01.jpg"
        used.add(name)
        plan.tasks.append(ImageTask(f"{SPLIT_FOLDERS['gallery']}/{name}", "gallery", 0, cam, k))
    return plan


# ------------------------------------------------------------------------------ backgrounds
_BACKGROUND_CACHE: dict[tuple, np.ndarray] = {}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.standard_normal((max(2, h // cell), max(2, w // cell))).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.BICUBIC))


def _vary(rng: np.random.Generator, rgb: Sequence[float], amount: float = 18) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in rgb)


def _perspective_floor(img: np.ndarray, y0: int, rng, c1, c2, tile: float, grout: float) -> None:
    """Fill rows y0.. with a floor of square tiles seen in perspective.

    ``tile`` is the tile size in pixels at the bottom row; ``grout`` > 0 draws grout lines of
    that relative width on a plain c1 floor, 0 draws a c1/c2 checkerboard.
    """
    h, w, _ = img.shape
    ys, xs = np.mgrid[y0:h, 0:w].astype(np.float32)
    reach = h - y0 + 4.0
    inv = reach / (ys - y0 + 4.0)                       # 1 at the bottom, grows to the horizon
    u = (xs - w * rng.uniform(0.3, 0.7)) * inv / tile
    v = reach * inv / tile
    if grout > 0:
        lines = (np.abs(u - np.round(u)) < grout) | (np.abs(v - np.round(v)) < grout)
        img[y0:] = np.where(lines[..., None], np.asarray(c2, np.float32), np.asarray(c1, np.float32))
    else:
        check = ((np.floor(u) + np.floor(v)) % 2)[..., None]
        img[y0:] = np.where(check > 0, np.asarray(c2, np.float32), np.asarray(c1, np.float32))


def camera_background(config: SynthConfig, camera: CameraSpec) -> np.ndarray:
    """The camera's scene at 2x size, with margins for random crops (uint8 H x W x 3, cached)."""
    h2, w2 = 2 * config.height, 2 * config.width
    key = (config.seed, camera.index, camera.background, camera.wall, h2, w2)
    if key in _BACKGROUND_CACHE:
        return _BACKGROUND_CACHE[key]
    rng = _rng(config.seed, _TAG_BACKGROUND, camera.index)
    h, w = int(h2 * 1.3), w2 * 3
    img = np.zeros((h, w, 3), np.float32)
    kind = camera.background
    y0 = int(h * rng.uniform(0.5, 0.68))
    wall = np.asarray(_vary(rng, camera.wall), np.float32)
    pil: Image.Image
    if kind == "street":
        img[:y0] = wall
        px, py = int(rng.integers(40, 70)), int(rng.integers(50, 80))
        ys, xs = np.mgrid[0:y0, 0:w]
        win = ((xs % px) > px * 0.3) & ((ys % py) > py * 0.35) & ((ys % py) < py * 0.9)
        glass = np.asarray(_vary(rng, (60, 76, 96)), np.float32) + 30 * (ys / y0)[..., None]
        img[:y0] = np.where(win[..., None], glass, img[:y0])
        _perspective_floor(img, y0, rng, _vary(rng, (150, 148, 144)), _vary(rng, (96, 94, 92)), 40.0, 0.04)
        img[y0:y0 + 6] = _vary(rng, (90, 90, 90))
    elif kind == "corridor":
        img[:y0] = wall
        pil = Image.fromarray(img.astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for x in range(int(rng.integers(0, 80)), w, int(rng.integers(110, 170))):
            draw.rectangle([x, y0 - int(h * 0.42), x + 44, y0], fill=_vary(rng, (120, 90, 60), 30))
            draw.rectangle([x + 34, y0 - int(h * 0.22), x + 38, y0 - int(h * 0.2)], fill=(200, 190, 120))
        img = np.asarray(pil, np.float32).copy()
        _perspective_floor(img, y0, rng, _vary(rng, (190, 186, 176)), _vary(rng, (110, 104, 100)), 36.0, 0.0)
    elif kind == "park":
        ys = np.arange(h, dtype=np.float32)[:, None, None]
        img[:] = np.asarray(_vary(rng, (170, 196, 220)), np.float32) - 40 * ys / h
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(90):
            x, y, r = rng.uniform(-20, w + 20), rng.uniform(y0 * 0.1, y0 * 0.95), rng.uniform(18, 60)
            draw.ellipse([x - r, y - r * 0.9, x + r, y + r * 0.9], fill=_vary(rng, (60, 110, 50), 35))
        draw.rectangle([0, y0, w, h], fill=_vary(rng, (90, 140, 60), 20))
        xm = w * rng.uniform(0.3, 0.7)
        draw.polygon([(xm - 30, y0), (xm + 30, y0), (xm + 260, h), (xm - 260, h)],
                     fill=_vary(rng, (196, 176, 140)))
        img = np.asarray(pil, np.float32).copy()
    elif kind == "shops":
        pil = Image.new("RGB", (w, h), tuple(int(c) for c in wall))
        draw = ImageDraw.Draw(pil)
        x = -int(rng.integers(0, 40))
        while x < w:
            pw = int(rng.integers(50, 130))
            colour = _vary(rng, CLOTHING[_pick(rng, CLOTHING_NAMES)], 30)
            draw.rectangle([x, int(y0 * 0.1), x + pw, int(y0 * 0.3)], fill=colour)
            draw.rectangle([x + 6, int(y0 * 0.36), x + pw - 6, y0 - 4], fill=_vary(rng, (70, 80, 90), 30))
            for _ in range(4):
                gx, gy = rng.uniform(x + 8, x + pw - 8), rng.uniform(y0 * 0.45, y0 * 0.9)
                draw.rectangle([gx - 5, gy - 8, gx + 5, gy + 8], fill=_vary(rng, (180, 170, 150), 70))
            x += pw + 4
        img = np.asarray(pil, np.float32).copy()
        _perspective_floor(img, y0, rng, _vary(rng, (176, 160, 140)), _vary(rng, (120, 110, 100)), 28.0, 0.05)
    elif kind == "road":
        img[:y0] = wall
        ys, xs = np.mgrid[0:y0, 0:w]
        fence = (xs % int(rng.integers(14, 26))) < 4
        bars = np.asarray(_vary(rng, (70, 70, 74)), np.float32)
        img[:y0] = np.where((fence & (ys > y0 * 0.55))[..., None], bars, img[:y0])
        img[y0:] = _vary(rng, (84, 84, 88), 10)
        ys, xs = np.mgrid[y0:h, 0:w]
        lane = (np.abs(ys - (y0 + (h - y0) * 0.6)) < 5) & ((xs % 90) < 50)
        img[y0:] = np.where(lane[..., None], np.float32(220), img[y0:])
    else:  # hall
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        img[:] = wall * (0.8 + 0.3 * (ys / h))[..., None]
        period = int(rng.integers(70, 120))
        pillar = (xs % period) < period * 0.25
        shade = 0.75 + 0.25 * np.cos(((xs % period) / (period * 0.25) - 0.5) * np.pi)
        stone = np.asarray(_vary(rng, (210, 206, 200)), np.float32)
        img[:] = np.where(pillar[..., None], stone * shade[..., None], img)
        _perspective_floor(img, y0, rng, _vary(rng, (214, 210, 200)), _vary(rng, (170, 166, 160)), 60.0, 0.03)
    img += 14 * _smooth_noise(rng, h, w, 24)[..., None]
    img += 4 * rng.standard_normal((h, w, 1)).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    _BACKGROUND_CACHE[key] = out
    return out


# ------------------------------------------------------------------------------ renderer
def _darker(rgb: Sequence[int], f: float) -> tuple[int, ...]:
    return tuple(int(c * f) for c in rgb)


class _Painter:
    """Draws on the canvas and, for person parts, on the person mask used for shading."""

    def __init__(self, canvas: Image.Image):
        self.img = canvas
        self.draw = ImageDraw.Draw(canvas)
        self.mask = Image.new("L", canvas.size, 0)
        self.mdraw = ImageDraw.Draw(self.mask)

    def polygon(self, pts, fill) -> None:
        self.draw.polygon(pts, fill=fill)
        self.mdraw.polygon(pts, fill=255)

    def ellipse(self, box, fill) -> None:
        self.draw.ellipse(box, fill=fill)
        self.mdraw.ellipse(box, fill=255)

    def chord(self, box, start, end, fill) -> None:
        self.draw.chord(box, start, end, fill=fill)
        self.mdraw.chord(box, start, end, fill=255)

    def rect(self, box, fill) -> None:
        x0, x1 = sorted((box[0], box[2]))
        box = [x0, min(box[1], box[3]), x1, max(box[1], box[3])]
        self.draw.rectangle(box, fill=fill)
        self.mdraw.rectangle(box, fill=255)

    def limb(self, p0, p1, width: float, fill) -> None:
        """A thick segment with round ends."""
        w = max(1, int(round(width)))
        self.draw.line([p0, p1], fill=fill, width=w)
        self.mdraw.line([p0, p1], fill=255, width=w)
        r = width / 2
        for x, y in (p0, p1):
            self.ellipse([x - r, y - r, x + r, y + r], fill)

    def textured(self, pts, texture: np.ndarray, origin: tuple[int, int]) -> None:
        """Fill polygon ``pts`` with ``texture`` (h x w x 3 uint8) placed at ``origin``."""
        th, tw = texture.shape[:2]
        local = Image.new("L", (tw, th), 0)
        ImageDraw.Draw(local).polygon([(x - origin[0], y - origin[1]) for x, y in pts], fill=255)
        self.img.paste(Image.fromarray(texture), origin, local)
        self.mdraw.polygon(pts, fill=255)


def _pattern(spec: IdentitySpec, w: int, h: int, period: float) -> np.ndarray:
    c1 = np.asarray(CLOTHING[spec.upper_color], np.uint8)
    c2 = np.asarray(CLOTHING[spec.upper_color2], np.uint8)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if spec.upper_pattern == "stripes":
        sel = (ys // period) % 2 == 1
    elif spec.upper_pattern == "checks":
        sel = ((ys // period) + (xs // period)) % 2 == 1
    elif spec.upper_pattern == "two_tone":
        sel = ys < h * 0.42
    else:
        sel = np.zeros((h, w), bool)
    return np.where(sel[..., None], c2, c1)


def _draw_logo(p: _Painter, shape: str, cx: float, cy: float, s: float, fill) -> None:
    if shape == "circle":
        p.draw.ellipse([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "square":
        p.draw.rectangle([cx - s * 0.85, cy - s * 0.85, cx + s * 0.85, cy + s * 0.85], fill=fill)
    elif shape == "triangle":
        p.draw.polygon([(cx, cy - s * 1.1), (cx + s * 1.1, cy + s * 0.85), (cx - s * 1.1, cy + s * 0.85)],
                       fill=fill)
    elif shape == "diamond":
        p.draw.polygon([(cx, cy - s * 1.2), (cx + s, cy), (cx, cy + s * 1.2), (cx - s, cy)], fill=fill)
    elif shape == "cross":
        t = s * 0.38
        p.draw.rectangle([cx - s, cy - t, cx + s, cy + t], fill=fill)
        p.draw.rectangle([cx - t, cy - s, cx + t, cy + s], fill=fill)
    elif shape == "bar":
        p.draw.rectangle([cx - s * 1.3, cy - s * 0.4, cx + s * 1.3, cy + s * 0.4], fill=fill)


def _draw_person(p: _Painter, spec: IdentitySpec, view: str, facing: int, cx: float, top: float,
                 ph: float, phase: float) -> float:
    """Draw one person on ``p``; returns the half width of the torso (for shading)."""
    skin = SKIN_TONES[spec.skin]
    hair = HAIR_COLORS[spec.hair_color]
    upper = CLOTHING[spec.upper_color]
    lower = CLOTHING[spec.lower_color]
    shoe = SHOE_COLORS[spec.shoe_color]
    side = view == "side"
    r = 0.062 * ph * spec.head
    head_cy = top + r
    sy = top + 2 * r + 0.025 * ph                      # shoulder line
    hip = top + (1 - spec.leg) * ph
    foot = top + ph
    sw = (0.075 if side else 0.125) * ph * spec.build  # shoulder half width
    ww = (0.07 if side else 0.1) * ph * spec.build     # waist half width
    stride = math.sin(phase)
    leg_w = 0.078 * ph * spec.build
    arm_w = 0.052 * ph * spec.build

    # Where the bag shows. Front/back view: ``bag_dir`` is the image side, +1 right, -1 left
    # (the front view mirrors the person's left and right). Side view: in front of the body when
    # it hangs on the near side (facing right, +1, shows the person's right side), else behind.
    has_bag = spec.bag_side != "none"
    bag_dir = (1 if spec.bag_side == "left" else -1) * (1 if view == "front" else -1)
    bag_near = side and (spec.bag_side == "right") == (facing > 0)
    bag = BAG_COLORS[spec.bag_color]

    def draw_bag() -> None:
        if side:
            bx = cx - facing * 0.02 * ph
            box = [bx - 0.05 * ph, hip - 0.07 * ph, bx + 0.05 * ph, hip + 0.07 * ph]
        else:
            x_in = cx + bag_dir * (ww + 0.004 * ph)
            x_out = x_in + bag_dir * 0.085 * ph
            box = [min(x_in, x_out), hip - 0.06 * ph, max(x_in, x_out), hip + 0.085 * ph]
            p.draw.line([(cx - bag_dir * sw * 0.55, sy + 0.01 * ph), ((box[0] + box[2]) / 2, box[1])],
                        fill=_darker(bag, 0.7), width=max(1, int(0.014 * ph)))
        p.rect(box, bag)
        p.draw.rectangle([box[0], box[1], box[2], box[1] + 0.018 * ph], fill=_darker(bag, 0.75))

    # ---- behind the body
    if spec.hair_long and view == "front":
        p.rect([cx - 1.05 * r, head_cy, cx + 1.05 * r, sy + 0.07 * ph], hair)
    if has_bag and side and not bag_near:
        bx = cx - facing * 0.06 * ph
        p.rect([bx - 0.045 * ph, hip - 0.07 * ph, bx + 0.045 * ph, hip + 0.07 * ph], _darker(bag, 0.8))

    # ---- legs and shoes
    if side:
        legs = [(-1, 0.8), (1, 1.0)]  # far leg first, darker
        feet = [(cx + facing * s * 0.13 * ph * stride, foot - 0.03 * ph) for s, _ in legs]
        hips = [(cx, hip + 0.03 * ph)] * 2
    else:
        legs = [(-1, 1.0), (1, 1.0)]
        feet = [(cx + s * (0.05 * ph * spec.build + 0.012 * ph * stride),
                 foot - 0.03 * ph - 0.02 * ph * max(0.0, s * stride)) for s, _ in legs]
        hips = [(cx + s * 0.045 * ph * spec.build, hip + 0.03 * ph) for s, _ in legs]
    for (s, shade), (fx, fy), (hx, hy) in zip(legs, feet, hips):
        trouser = _darker(lower, shade)
        skin_s = _darker(skin, shade)
        if spec.lower_style == "trousers":
            p.limb((hx, hy), (fx, fy), leg_w, trouser)
        else:
            p.limb((hx, hy), (fx, fy), leg_w * 0.8, skin_s)
            if spec.lower_style == "shorts":
                kx, ky = hx + (fx - hx) * 0.4, hy + (fy - hy) * 0.4
                p.limb((hx, hy), (kx, ky), leg_w * 1.05, trouser)
        dx = facing * 0.025 * ph if side else 0.0
        p.ellipse([fx - 0.042 * ph + dx, fy - 0.012 * ph, fx + 0.042 * ph + dx, fy + 0.03 * ph],
                  _darker(shoe, shade))

    # ---- hips / skirt
    if spec.lower_style == "skirt":
        p.polygon([(cx - ww * 0.95, hip - 0.01 * ph), (cx + ww * 0.95, hip - 0.01 * ph),
                   (cx + ww * 1.45, hip + 0.2 * ph), (cx - ww * 1.45, hip + 0.2 * ph)], lower)
    else:
        p.polygon([(cx - ww, hip - 0.01 * ph), (cx + ww, hip - 0.01 * ph),
                   (cx + ww * 1.02, hip + 0.1 * ph), (cx - ww * 1.02, hip + 0.1 * ph)], lower)

    # ---- arms (behind the torso edges in front/back view, far arm behind in side view)
    def arm(shoulder, hand, shade) -> None:
        sleeve = _darker(upper, shade)
        if spec.sleeves == "long":
            p.limb(shoulder, hand, arm_w, sleeve)
        else:
            elbow = (shoulder[0] + (hand[0] - shoulder[0]) * 0.38,
                     shoulder[1] + (hand[1] - shoulder[1]) * 0.38)
            p.limb(elbow, hand, arm_w * 0.8, _darker(skin, shade))
            p.limb(shoulder, elbow, arm_w * 1.08, sleeve)
        hr = arm_w * 0.55
        p.ellipse([hand[0] - hr, hand[1] - hr, hand[0] + hr, hand[1] + hr], _darker(skin, shade))

    if side:
        arm((cx, sy + 0.03 * ph), (cx - facing * 0.11 * ph * stride, sy + 0.33 * ph), 0.8)
    else:
        for s in (-1, 1):
            arm((cx + s * (sw - 0.025 * ph), sy + 0.03 * ph),
                (cx + s * (sw + 0.012 * ph), sy + 0.34 * ph - 0.025 * ph * abs(stride)), 1.0)

    # ---- torso
    torso = [(cx - sw, sy + 0.03 * ph), (cx - sw + 0.03 * ph, sy), (cx + sw - 0.03 * ph, sy),
             (cx + sw, sy + 0.03 * ph), (cx + ww, hip + 0.02 * ph), (cx - ww, hip + 0.02 * ph)]
    if spec.upper_pattern == "solid":
        p.polygon(torso, upper)
    else:
        x0, y0 = int(cx - sw) - 1, int(sy) - 1
        tw, th = int(2 * sw) + 3, int(hip + 0.02 * ph - sy) + 3
        p.textured(torso, _pattern(spec, tw, th, max(2.0, 0.035 * ph)), (x0, y0))
    if has_bag and (bag_near or not side):
        draw_bag()
    if view == "front" and spec.logo_shape != "none":
        _draw_logo(p, spec.logo_shape, cx, sy + 0.1 * ph, 0.034 * ph, LOGO_COLORS[spec.logo_color])
    if side:
        arm((cx, sy + 0.03 * ph), (cx + facing * 0.11 * ph * stride, sy + 0.33 * ph), 1.0)

    # ---- neck, head, hair, hat
    p.rect([cx - 0.35 * r, head_cy + 0.6 * r, cx + 0.35 * r, sy + 0.01 * ph], _darker(skin, 0.9))
    hx = cx + (facing * 0.15 * r if side else 0.0)
    head_box = [hx - 0.85 * r, top, hx + 0.85 * r, top + 2 * r]
    if view == "back":
        p.ellipse(head_box, hair)
        if spec.hair_long:
            p.rect([cx - 1.0 * r, head_cy, cx + 1.0 * r, sy + 0.1 * ph], hair)
    else:
        p.ellipse(head_box, skin)
        cap = [hx - 0.92 * r, top - 0.08 * r, hx + 0.92 * r, top + 1.5 * r]
        p.chord(cap, 180, 360, hair)
        if side:  # hair covers the back of the head
            back = [hx - facing * 0.95 * r - 0.5 * r, top, hx - facing * 0.95 * r + 0.5 * r, top + 1.6 * r]
            p.ellipse(back, hair)
            ex = hx + facing * 0.5 * r
            p.draw.ellipse([ex - 0.1 * r, head_cy - 0.1 * r, ex + 0.1 * r, head_cy + 0.1 * r], fill=EYES)
        else:
            for s in (-1, 1):
                ex = hx + s * 0.33 * r
                eye = [ex - 0.1 * r, head_cy - 0.08 * r, ex + 0.1 * r, head_cy + 0.12 * r]
                p.draw.ellipse(eye, fill=EYES)
    if spec.hat:
        colour = HAT_COLORS[spec.hat_color]
        p.chord([hx - 0.98 * r, top - 0.3 * r, hx + 0.98 * r, top + 1.45 * r], 180, 360, colour)
        if side:
            p.rect([hx, top + 0.5 * r, hx + facing * 1.4 * r, top + 0.68 * r], _darker(colour, 0.8))
        elif view == "front":
            p.rect([hx - 1.0 * r, top + 0.5 * r, hx + 1.0 * r, top + 0.66 * r], _darker(colour, 0.8))
    return sw


def _draw_occluder(draw: ImageDraw.ImageDraw, kind: str, rng: np.random.Generator, w: int, h: int,
                   cx: float, ph: float) -> None:
    if kind == "pole":
        x, pw = rng.uniform(0.1, 0.9) * w, rng.uniform(0.05, 0.1) * w
        colour = _vary(rng, _pick(rng, [(70, 70, 74), (40, 80, 50), (150, 150, 150), (30, 30, 30)]), 10)
        draw.rectangle([x - pw / 2, -1, x + pw / 2, h], fill=colour)
        draw.rectangle([x - pw / 6, -1, x, h], fill=_darker(colour, 1.3) if max(colour) < 190 else colour)
        if rng.random() < 0.5:
            sy = rng.uniform(0.05, 0.4) * h
            draw.rectangle([x - pw * 2.2, sy, x + pw * 2.2, sy + pw * 2.4],
                           fill=_vary(rng, _pick(rng, [(30, 90, 170), (200, 40, 40), (240, 240, 240)]), 10))
    elif kind == "car":  # a parked car coming in from one side, its visible end at ``edge``
        ytop = rng.uniform(0.55, 0.75) * h
        d = 1 if rng.random() < 0.5 else -1           # +1: the car comes from the left
        edge = rng.uniform(0.25, 0.85) * w
        far = -w if d > 0 else 2 * w
        body = _vary(rng, CLOTHING[_pick(rng, CLOTHING_NAMES)], 20)
        cab = rng.uniform(0.08, 0.12) * h
        inset = 0.15 * w
        draw.rounded_rectangle([min(far, edge), ytop + cab, max(far, edge), h + 20],
                               radius=int(0.05 * w + 2), fill=body)
        draw.polygon([(far, ytop + cab), (far, ytop), (edge - d * 2 * inset, ytop),
                      (edge - d * inset, ytop + cab)], fill=body)
        y0, y1 = ytop + cab * 0.15, ytop + cab * 0.9
        draw.polygon([(far, y1), (far, y0), (edge - d * 2.1 * inset, y0), (edge - d * 1.2 * inset, y1)],
                     fill=_vary(rng, (60, 74, 90), 10))
        wx = edge - d * 0.35 * w
        draw.ellipse([wx - 0.18 * w, h - 0.1 * w, wx + 0.18 * w, h + 0.26 * w], fill=(20, 20, 20))
    elif kind == "person":
        side = -1 if rng.random() < 0.5 else 1
        s = ph * rng.uniform(0.95, 1.25)
        ox = cx + side * rng.uniform(0.35, 0.6) * w
        otop = h - s * rng.uniform(0.85, 1.0)
        shirt = _vary(rng, CLOTHING[_pick(rng, CLOTHING_NAMES)], 20)
        pants = _vary(rng, CLOTHING[_pick(rng, CLOTHING_NAMES)], 20)
        r = 0.065 * s
        draw.rectangle([ox - 0.09 * s, otop + 0.5 * s, ox + 0.09 * s, otop + s], fill=pants)
        draw.rounded_rectangle([ox - 0.15 * s, otop + 2 * r + 0.02 * s, ox + 0.15 * s, otop + 0.56 * s],
                               radius=int(0.04 * s), fill=shirt)
        draw.ellipse([ox - 0.85 * r, otop, ox + 0.85 * r, otop + 2 * r],
                     fill=_darker(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], 0.9))
        draw.chord([ox - 0.9 * r, otop - 0.1 * r, ox + 0.9 * r, otop + 1.4 * r], 180, 360,
                   fill=HAIR_COLORS[_pick(rng, tuple(HAIR_COLORS))])
    else:  # board: a sign or bin in the lower part of the crop
        bw, bh = rng.uniform(0.35, 0.7) * w, rng.uniform(0.2, 0.4) * h
        x = rng.uniform(-0.2, 1.0) * w - bw / 2
        colour = _vary(rng, _pick(rng, [(200, 190, 170), (60, 60, 64), (30, 100, 160), (190, 60, 40)]), 15)
        draw.rectangle([x, h - bh, x + bw, h + 2], fill=colour)
        draw.rectangle([x + bw * 0.1, h - bh * 0.85, x + bw * 0.9, h - bh * 0.6], fill=_darker(colour, 0.7))


def render_image(spec: IdentitySpec, camera: CameraSpec, config: SynthConfig, pid: int,
                 index: int) -> Image.Image:
    """Render one image (``config.height`` x ``config.width`` RGB) of ``spec`` seen by ``camera``.

    The random numbers come only from ``SeedSequence([seed, tag, pid, camera.index, index])``,
    split into independent streams for geometry, occluder and photometry, so a knob that
    scales one effect does not reshuffle the others.
    """
    h2, w2 = 2 * config.height, 2 * config.width
    geo, occ, photo = (np.random.default_rng(s) for s in
                       _seq(config.seed, _TAG_IMAGE, pid, camera.index, index).spawn(3))

    # geometry: viewpoint, pose, position and size in the crop
    view = VIEWS[int(geo.choice(3, p=camera.view_probs))]
    facing = 1 if geo.random() < 0.5 else -1
    phase = float(geo.uniform(0, 2 * math.pi))
    ph = h2 * 0.9 * spec.stature * camera.scale
    ph *= math.exp(config.scale_jitter * float(np.clip(geo.normal(), -2, 2)))
    cx = w2 / 2 + config.crop_jitter * w2 * float(np.clip(geo.normal(), -2.5, 2.5))
    base_top = (h2 - ph) * float(geo.uniform(0.3, 0.7))
    top = base_top + config.crop_jitter * h2 * float(np.clip(geo.normal(), -2.5, 2.5))

    bg = camera_background(config, camera)
    by = int(geo.integers(0, bg.shape[0] - h2 + 1))
    bx = int(geo.integers(0, bg.shape[1] - w2 + 1))
    canvas = bg[by:by + h2, bx:bx + w2].astype(np.float32)

    # soft ground shadow under the feet
    ys, xs = np.ogrid[0:h2, 0:w2]
    shadow = ((xs - cx) / (0.2 * ph)) ** 2 + ((ys - (top + ph - 0.005 * ph)) / (0.025 * ph)) ** 2
    canvas *= 1 - 0.35 * np.clip(1.2 - shadow, 0, 1)[..., None]

    painter = _Painter(Image.fromarray(canvas.astype(np.uint8)))
    half_w = _draw_person(painter, spec, view, facing, cx, top, ph, phase)

    # cylindrical shading across the body, applied on the person mask only
    arr = np.asarray(painter.img, np.float32).copy()
    mask = np.asarray(painter.mask, np.float32)[..., None] / 255.0
    across = np.clip(((np.arange(w2, dtype=np.float32) - cx) / (1.6 * half_w)) ** 2, 0, 1)
    down = np.arange(h2, dtype=np.float32) / h2
    light = (1.0 - 0.28 * across)[None, :, None] * (1.05 - 0.1 * down)[:, None, None]
    arr = arr * (1 - mask + mask * light)

    # occluder, drawn in front of the person
    has_occluder = occ.random() < camera.occluder_prob
    kind = OCCLUDERS[int(occ.choice(len(OCCLUDERS), p=camera.occluder_weights))]
    if has_occluder:
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        _draw_occluder(ImageDraw.Draw(img), kind, occ, w2, h2, cx, ph)
        arr = np.asarray(img, np.float32)

    # 2x2 average down (anti-aliasing), blur, photometry, noise
    small = (arr[0::2, 0::2] + arr[1::2, 0::2] + arr[0::2, 1::2] + arr[1::2, 1::2]) * 0.25
    sigma = camera.blur * float(photo.uniform(0.6, 1.4))
    gain = camera.gain * math.exp(0.25 * config.illumination * float(photo.normal()))
    cast = np.asarray(camera.cast, np.float32)
    cast = cast * (1 + 0.3 * config.color_cast * photo.uniform(-1, 1, 3).astype(np.float32))
    noise = photo.standard_normal(small.shape).astype(np.float32)
    if sigma > 0.05:
        blurred = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8))
        small = np.asarray(blurred.filter(ImageFilter.GaussianBlur(sigma)), np.float32)
    mean = small.mean()
    small = (mean + (small - mean) * camera.contrast) * gain * cast
    small += noise * (camera.noise * 255)
    return Image.fromarray(np.clip(small + 0.5, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------ generation
_WORKER_STATE: tuple | None = None


def _render_tasks(state: tuple, root: str, tasks: Sequence[ImageTask]) -> int:
    """Render and save ``tasks``; ``state`` is (config, pid -> spec, distractor specs, cameras)."""
    config, specs, distractors, cameras = state
    for task in tasks:
        spec = distractors[task.index] if task.pid == 0 else specs[task.pid]
        img = render_image(spec, cameras[task.camera - 1], config, task.pid, task.index)
        img.save(os.path.join(root, task.relpath), "JPEG", quality=config.jpeg_quality)
    return len(tasks)


def _worker_init(state: tuple) -> None:
    global _WORKER_STATE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    _WORKER_STATE = state


def _worker_render(args: tuple[str, list[ImageTask]]) -> int:
    assert _WORKER_STATE is not None
    return _render_tasks(_WORKER_STATE, *args)


def _counts(plan: Plan) -> dict[str, dict[str, int]]:
    out = {}
    for split in SPLIT_FOLDERS:
        tasks = [t for t in plan.tasks if t.split == split]
        out[split] = {
            "images": len(tasks),
            "ids": len({t.pid for t in tasks if t.pid > 0}),
            "cameras": len({t.camera for t in tasks}),
            "distractors": sum(t.pid == 0 for t in tasks),
        }
    return out


def content_digest(root: str | os.PathLike) -> str:
    """SHA-256 over every image of a benchmark folder: relative path and bytes, in path order."""
    root = Path(root)
    digest = hashlib.sha256()
    for folder in SPLIT_FOLDERS.values():
        for path in sorted((root / folder).glob("*.jpg")):
            digest.update(f"{folder}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"workers={workers!r} is invalid: must be a positive integer")
    return workers


def _build(root: Path, config: SynthConfig, workers: int, progress: bool) -> None:
    """Render the whole benchmark into the (empty, temporary) folder ``root``."""
    from tqdm import tqdm

    plan = make_plan(config)
    for folder in SPLIT_FOLDERS.values():
        (root / folder).mkdir(parents=True, exist_ok=True)
    state = (config, {i.pid: i.spec for i in plan.identities}, plan.distractors, plan.cameras)
    size = max(8, min(64, len(plan.tasks) // (workers * 8)))
    chunks = [plan.tasks[i:i + size] for i in range(0, len(plan.tasks), size)]
    with tqdm(total=len(plan.tasks), desc="synthreid", unit="img", disable=not progress) as bar:
        if workers == 1 or len(chunks) == 1:
            for chunk in chunks:
                bar.update(_render_tasks(state, str(root), chunk))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(chunks)), initializer=_worker_init, initargs=(state,)) as pool:
                for n in pool.imap_unordered(_worker_render, [(str(root), c) for c in chunks]):
                    bar.update(n)
    atomic_write_json(root / INFO_FILE, {
        "name": "synthreid",
        "generator_version": GENERATOR_VERSION,
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "counts": _counts(plan),
        "content_sha256": content_digest(root),
        "hard_negatives": [{"pid": i.pid, "source": i.source, "changed": i.changed}
                           for i in plan.identities if i.source],
        "cameras": [dataclasses.asdict(c) for c in plan.cameras],
    })


def generate_synthreid(out_dir: str | os.PathLike, config: SynthConfig | None = None, *,
                       overwrite: bool = False, workers: int | None = None,
                       progress: bool = True) -> Path:
    """Write the benchmark for ``config`` (default :class:`SynthConfig`) to ``out_dir``.

    The folder is built under a temporary sibling name and renamed at the end, so a failure or
    Ctrl-C leaves nothing half-written. An existing non-empty ``out_dir`` is refused
    (:class:`UserError`) unless ``overwrite``, in which case it is replaced once the new one is
    complete. ``workers`` processes render the images (default ``os.cpu_count()``; 1 renders in
    this process); the bytes do not depend on it. ``progress`` shows a tqdm bar.
    Returns the folder path.
    """
    config = (config or SynthConfig()).validate()
    workers = _resolve_workers(workers)
    out = Path(out_dir).expanduser()
    if out.exists():
        if not out.is_dir():
            raise UserError(f"out_dir {out} exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise UserError(f"out_dir {out} is not empty; use --overwrite (overwrite=True) to replace it")
    with atomic_directory(out, overwrite=out.exists()) as tmp:
        _build(tmp, config, workers, progress)
    return out


def synthreid_cache_dir(config: SynthConfig | None = None) -> Path:
    """``$NAS_REID_CACHE`` (default ``~/.cache/nas_reid``) ``/synthreid/<config hash>``."""
    config = (config or SynthConfig()).validate()
    root = Path(os.environ.get("NAS_REID_CACHE") or "~/.cache/nas_reid").expanduser()
    return root / "synthreid" / config.config_hash()


def _is_complete(path: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((path / INFO_FILE).read_text())
        return info.get("generator_version") == GENERATOR_VERSION
    return False


def ensure_synthreid(config: SynthConfig | None = None, *, workers: int | None = None,
                     progress: bool = True) -> Path:
    """The cached benchmark for ``config``: generated into :func:`synthreid_cache_dir` once.

    Later calls return the cached folder without rendering. Two processes racing on the same
    config both render, and the first rename wins; the other drops its copy and uses the winner.
    """
    config = (config or SynthConfig()).validate()
    workers = _resolve_workers(workers)
    final = synthreid_cache_dir(config)
    if _is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # not a complete benchmark (e.g. touched by hand): move it out of the way
        stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".stale", dir=final.parent))
        with contextlib.suppress(OSError):
            os.replace(final, stale / "x")
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        _build(tmp, config, workers, progress)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
