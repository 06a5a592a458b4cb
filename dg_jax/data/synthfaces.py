"""SynthFaces: a procedural, deterministic face data set that stands in for CelebA offline.

Every image is a cartoon head and shoulders drawn with anti-aliasing (rendered at 4x and
box-downsampled). Four attributes are drawn from (possibly joint) class probabilities:

  hair     0 short, 1 long            (long hair falls past the chin onto the shoulders)
  glasses  0 no, 1 yes                (dark round frames with a bridge)
  skin     0 light, 1 medium, 2 dark  (face, neck and ears)
  smile    0 no, 1 yes                (open smiling mouth vs a closed straight mouth)

Nuisance factors a model has to learn as well: head position and size, face width, hair colour,
eye colour, shirt colour and a two-colour background gradient.

    images, labels = generate(1000, seed=0)                    # balanced attributes
    images, labels = generate(1000, seed=0, probs=BIASED_PROBS)
    # correlated attributes: a joint table over a tuple of attribute names
    images, labels = generate(1000, seed=0, probs={("smile", "skin"): [[.1, .2, .2], [.4, .05, .05]]})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "hair": ("short", "long"),
    "glasses": ("no", "yes"),
    "skin": ("light", "medium", "dark"),
    "smile": ("no", "yes"),
}
NUM_CLASSES: dict[str, int] = {name: len(classes) for name, classes in ATTRIBUTES.items()}

# The biased distribution the embedded default model is trained on.
BIASED_PROBS: dict[str, tuple[float, ...]] = {
    "hair": (0.2, 0.8),
    "glasses": (0.85, 0.15),
    "skin": (0.6, 0.25, 0.15),
    "smile": (0.3, 0.7),
}

_SKIN_RGB = np.array([[238, 200, 172], [190, 138, 96], [104, 68, 46]], np.float32)
_HAIR_RGB = np.array(
    [[30, 24, 20], [92, 58, 32], [214, 176, 96], [160, 70, 34], [150, 150, 150], [60, 40, 70]],
    np.float32,
)
_SUPERSAMPLE = 2
_CHUNK = 256  # images rendered at once; bounds the memory of the supersampled canvas

ProbSpec = Mapping[str | tuple[str, ...], Sequence | np.ndarray]


def sample_labels(num: int, rng: np.random.Generator, probs: ProbSpec | None = None) -> dict:
    """Draws attribute labels.

    probs: attribute name -> class probabilities [K], or a tuple of names -> joint table of shape
      [K_1, ..., K_m] (correlated attributes). Attributes not mentioned are uniform.
    Returns: name -> int32 [num].
    """
    probs = dict(probs or {})
    labels: dict[str, np.ndarray] = {}
    for key, table in probs.items():
        names = (key,) if isinstance(key, str) else tuple(key)
        for name in names:
            if name not in ATTRIBUTES:
                raise ValueError(f"unknown SynthFaces attribute {name!r}; known: {list(ATTRIBUTES)}")
            if name in labels:
                raise ValueError(f"attribute {name!r} appears in more than one probability table")
        table = np.asarray(table, np.float64)
        shape = tuple(NUM_CLASSES[n] for n in names)
        if table.shape != shape:
            raise ValueError(f"probabilities for {key!r} have shape {table.shape}, expected {shape}")
        if np.any(table < 0) or not np.isclose(table.sum(), 1.0, atol=1e-6):
            raise ValueError(f"probabilities for {key!r} must be non-negative and sum to 1")
        flat = rng.choice(table.size, size=num, p=table.ravel() / table.sum())
        for name, values in zip(names, np.unravel_index(flat, shape)):
            labels[name] = values.astype(np.int32)
    for name, k in NUM_CLASSES.items():
        if name not in labels:
            labels[name] = rng.integers(0, k, size=num).astype(np.int32)
    return {name: labels[name] for name in ATTRIBUTES}


def generate(
    num: int, seed: int, probs: ProbSpec | None = None, size: int = 32
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Generates `num` faces deterministically from `seed`.

    Returns: images uint8 [num, size, size, 3]; labels name -> int32 [num].
    """
    rng = np.random.default_rng(seed)
    labels = sample_labels(num, rng, probs)
    return render_faces(labels, rng, size), labels


def render_faces(labels: dict[str, np.ndarray], rng: np.random.Generator, size: int = 32
                 ) -> np.ndarray:
    """Faces with the given attributes (name -> int [N], every attribute) and nuisance factors
    (pose, colours, background) drawn from `rng`: uint8 [N, size, size, 3]."""
    missing = set(ATTRIBUTES) - set(labels)
    if missing:
        raise ValueError(f"labels lack attributes {sorted(missing)}")
    num = len(labels[next(iter(ATTRIBUTES))])
    style = _sample_style(num, rng)
    images = np.empty((num, size, size, 3), np.uint8)
    for start in range(0, num, _CHUNK):
        part = slice(start, min(start + _CHUNK, num))
        images[part] = _render(
            {k: v[part] for k, v in labels.items()}, {k: v[part] for k, v in style.items()}, size
        )
    return images


def _sample_style(num: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Nuisance factors, in units of the image side."""
    u = lambda lo, hi, *shape: rng.uniform(lo, hi, (num, *shape)).astype(np.float32)  # noqa: E731
    return {
        "cx": u(0.42, 0.58),
        "cy": u(0.40, 0.50),
        "radius": u(0.17, 0.22),  # half face width
        "aspect": u(1.15, 1.35),  # face height / width
        "skin_jitter": u(-12, 12, 3),
        "hair_rgb": _HAIR_RGB[rng.integers(0, len(_HAIR_RGB), num)] + u(-15, 15, 3),
        "eye_rgb": u(0, 90, 3),
        "shirt_rgb": u(20, 235, 3),
        "bg_top": u(40, 250, 3),
        "bg_bottom": u(40, 250, 3),
    }


def _render(labels: dict[str, np.ndarray], s: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Paints a chunk of faces on a supersampled canvas and box-downsamples it."""
    n, res = len(labels["hair"]), size * _SUPERSAMPLE
    grid = (np.arange(res, dtype=np.float32) + 0.5) / res
    y, x = grid[None, :, None], grid[None, None, :]  # [1, res, 1], [1, 1, res]
    col = lambda v: v[:, None, None]  # noqa: E731  per-image scalar -> [n, 1, 1]
    cx, cy, rx = col(s["cx"]), col(s["cy"]), col(s["radius"])
    ry = rx * col(s["aspect"])

    def paint(mask, rgb):
        rgb = np.asarray(rgb, np.float32).reshape(-1, 1, 1, 3)
        canvas[:] = np.where(mask[..., None], rgb, canvas)

    def ellipse(ex, ey, ax, ay):
        return ((x - ex) / ax) ** 2 + ((y - ey) / ay) ** 2 <= 1.0

    t = np.broadcast_to(y, (n, res, 1))[..., None]
    canvas = (1 - t) * s["bg_top"][:, None, None] + t * s["bg_bottom"][:, None, None]
    canvas = np.broadcast_to(canvas, (n, res, res, 3)).copy()

    skin = _SKIN_RGB[labels["skin"]] + s["skin_jitter"]
    long_hair = col(labels["hair"] == 1)
    chin = cy + ry
    # Long hair: a wide mane behind the head that reaches well below the chin.
    paint(
        long_hair & (ellipse(cx, cy + 0.3 * ry, rx * 1.45, ry * 1.55) & (y < chin + 0.22)),
        s["hair_rgb"],
    )
    # Shoulders and neck.
    paint(ellipse(cx, 1.08, rx * 2.6, 0.3), s["shirt_rgb"])
    paint((np.abs(x - cx) < rx * 0.42) & (y > cy) & (y < chin + 0.08), skin)
    # Ears, then the face.
    for side in (-1, 1):
        paint(ellipse(cx + side * rx, cy + 0.05 * ry, rx * 0.2, ry * 0.22), skin)
    paint(ellipse(cx, cy, rx, ry), skin)
    # Hair on top of the head; long hair also frames the face down the sides.
    cap = ellipse(cx, cy - 0.35 * ry, rx * 1.1, ry * 0.78) & (y < cy - 0.38 * ry)
    sides = long_hair & (np.abs(x - cx) > rx * 0.78) & ellipse(cx, cy, rx * 1.12, ry * 1.25)
    paint(cap | sides, s["hair_rgb"])
    # Eyes.
    eye_y, eye_dx = cy - 0.05 * ry, rx * 0.42
    for side in (-1, 1):
        paint(ellipse(cx + side * eye_dx, eye_y, rx * 0.2, ry * 0.12), [245, 245, 245])
        paint(ellipse(cx + side * eye_dx, eye_y, rx * 0.1, ry * 0.1), s["eye_rgb"])
    # Glasses: thick dark rings around both eyes and a bridge between them.
    wear = col(labels["glasses"] == 1)
    ring = np.zeros((n, res, res), bool)
    for side in (-1, 1):
        outer = ellipse(cx + side * eye_dx, eye_y, rx * 0.36, ry * 0.27)
        inner = ellipse(cx + side * eye_dx, eye_y, rx * 0.25, ry * 0.17)
        ring |= outer & ~inner
    bridge = (np.abs(x - cx) < rx * 0.08 + 1e-6) & (np.abs(y - eye_y) < ry * 0.045)
    bridge |= (np.abs(x - cx) < eye_dx - rx * 0.3) & (np.abs(y - eye_y) < ry * 0.045)
    paint(wear & (ring | bridge), [20, 20, 24])
    # Mouth: smiling faces show an open, wide half-moon mouth with teeth; the others a thin line.
    smile = col(labels["smile"] == 1)
    mouth_y = cy + 0.5 * ry
    open_mouth = ellipse(cx, mouth_y, rx * 0.5, ry * 0.26) & (y > mouth_y)
    teeth = open_mouth & (y < mouth_y + ry * 0.08)
    paint(smile & open_mouth, [120, 20, 30])
    paint(smile & teeth, [250, 250, 250])
    line = (np.abs(x - cx) < rx * 0.3) & (np.abs(y - mouth_y - ry * 0.1) < ry * 0.045)
    paint(~smile & line, [130, 40, 45])

    canvas = canvas.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(2, 4))
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)
