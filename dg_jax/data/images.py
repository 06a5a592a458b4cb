"""Pixel conventions: uint8 [0, 255] on disk, float32 [-1, 1] in models; PNG bytes."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


def to_model_range(images):
    """uint8 [..., H, W, C] (numpy or jax) -> float32 in [-1, 1]."""
    return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(x):
    """float [..., H, W, C] in [-1, 1] -> uint8 (clipped, rounded): jax in, jax out (also under
    jit); anything else becomes numpy."""
    xp = jnp if isinstance(x, jax.Array) else np
    x = x.astype(xp.float32) if xp is jnp else np.asarray(x, np.float32)
    return xp.clip(xp.round((x + 1.0) * 127.5), 0, 255).astype(xp.uint8)


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, then an bilinear resize to [size, size, 3] uint8."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(np.asarray(image[top:top + side, left:left + side], np.uint8))
    return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 [H, W, 3]."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def image_grid(images: np.ndarray, columns: int, scale: int = 1) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 [rows*H*scale, columns*W*scale, C] grid (blank padded)."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    padded = np.zeros((rows * columns, h, w, c), np.uint8)
    padded[:n] = images
    grid = padded.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h,
                                                                                   columns * w, c)
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)
