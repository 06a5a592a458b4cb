"""UNet building blocks (Flax NNX, NHWC).

Names of sub-modules follow diffusers' `UNet2DModel` (norm1, conv1, time_emb_proj, to_q, ...) so that
weight conversion is a plain key map.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from dg_jax.models.conv import conv2d

Dtype = jnp.dtype | None


def timestep_embedding(
    t: jax.Array, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> jax.Array:
    """Sinusoidal embedding of (possibly fractional) timesteps.

    t: [B] -> [B, dim]. Frequencies are exp(-log(max_period) * i / (dim/2 - freq_shift)).
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    angles = t.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class Conv(nnx.Module):
    """Square conv with symmetric padding (PyTorch's, so converted weights match).

    x: [B, H, W, cin] -> [B, H/stride, W/stride, cout]. Parameters: kernel [k, k, cin, cout], bias.
    `pad` defaults to size // 2 ("same" at stride 1).
    """

    def __init__(self, cin: int, cout: int, size: int = 3, stride: int = 1, pad: int | None = None,
                 *, dtype: Dtype, rngs: nnx.Rngs):
        self.stride, self.pad, self.dtype = stride, size // 2 if pad is None else pad, dtype
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (size, size, cin, cout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        y = conv2d(x.astype(dtype), self.kernel[...].astype(dtype), self.stride, self.pad)
        return y + self.bias[...].astype(dtype)


class TimestepMLP(nnx.Module):
    """Sinusoidal features -> Linear -> SiLU -> Linear.  t: [B] -> temb: [B, out_dim]."""

    def __init__(self, dim: int, out_dim: int, flip_sin_to_cos: bool, freq_shift: float, *,
                 dtype: Dtype, rngs: nnx.Rngs):
        self.dim, self.flip_sin_to_cos, self.freq_shift = dim, flip_sin_to_cos, freq_shift
        self.linear_1 = nnx.Linear(dim, out_dim, dtype=dtype, rngs=rngs)
        self.linear_2 = nnx.Linear(out_dim, out_dim, dtype=dtype, rngs=rngs)

    def __call__(self, t: jax.Array) -> jax.Array:
        emb = timestep_embedding(t, self.dim, self.flip_sin_to_cos, self.freq_shift)
        return self.linear_2(nnx.silu(self.linear_1(emb)))


def upsample_nearest(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, 2H, 2W, C], each pixel repeated 2x2."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool_2x2(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H/2, W/2, C], mean of each 2x2 block."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


_RESAMPLE = {None: lambda x: x, "up": upsample_nearest, "down": avg_pool_2x2}


class ResBlock(nnx.Module):
    """GroupNorm-SiLU-Conv twice, with the time embedding added (or as scale/shift) in between.

    x: [B, H, W, cin], temb: [B, temb_dim] -> [B, H', W', cout]. With resample="up" / "down" the
    block also changes resolution (BigGAN style: the skip and the activations are resampled right
    after the first norm), as diffusers' up/downsample_type="resnet". temb_dim=None: a block
    without time input (an autoencoder's), called with temb=None.
    """

    def __init__(self, cin: int, cout: int, temb_dim: int | None, *, groups: int, eps: float,
                 scale_shift: bool, output_scale: float = 1.0, resample: str | None = None,
                 dtype: Dtype, rngs: nnx.Rngs):
        if resample not in _RESAMPLE:
            raise ValueError(f"unknown resample {resample!r}; use 'up', 'down' or None")
        self.scale_shift, self.output_scale, self.resample = scale_shift, output_scale, resample
        self.norm1 = nnx.GroupNorm(cin, num_groups=groups, epsilon=eps, dtype=dtype, rngs=rngs)
        self.conv1 = Conv(cin, cout, dtype=dtype, rngs=rngs)
        self.time_emb_proj = None if temb_dim is None else nnx.Linear(
            temb_dim, cout * (2 if scale_shift else 1), dtype=dtype, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=groups, epsilon=eps, dtype=dtype, rngs=rngs)
        self.conv2 = Conv(cout, cout, dtype=dtype, rngs=rngs)
        self.conv_shortcut = (
            Conv(cin, cout, 1, dtype=dtype, rngs=rngs) if cin != cout else None
        )

    def __call__(self, x: jax.Array, temb: jax.Array | None) -> jax.Array:
        resample = _RESAMPLE[self.resample]
        h = self.conv1(resample(nnx.silu(self.norm1(x))))
        x = resample(x)
        if self.time_emb_proj is None:
            h = self.norm2(h)
        elif self.scale_shift:
            emb = self.time_emb_proj(nnx.silu(temb))[:, None, None, :]
            scale, shift = jnp.split(emb, 2, axis=-1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + self.time_emb_proj(nnx.silu(temb))[:, None, None, :])
        h = self.conv2(nnx.silu(h))  # no dropout: inference, and our training uses none
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return (skip + h) / self.output_scale


def attend(q: jax.Array, k: jax.Array, v: jax.Array, heads: int,
           upcast: bool = False) -> jax.Array:
    """Scaled dot-product attention with the feature axis split into `heads` heads.

    q: [B, N, D], k and v: [B, M, D] -> [B, N, D]. upcast computes it in float32 (for bfloat16
    models whose attention logits overflow, diffusers' `upcast_attention`).
    """
    b, n, d = q.shape
    dtype = q.dtype
    if upcast:
        q, k, v = (y.astype(jnp.float32) for y in (q, k, v))
    split = lambda y: y.reshape(b, y.shape[1], heads, d // heads)  # noqa: E731
    return jax.nn.dot_product_attention(split(q), split(k), split(v)).reshape(b, n, d).astype(dtype)


class Attention(nnx.Module):
    """Pre-norm (groups=None: no norm) multi-head self-attention over all pixels, with a residual.

    x: [B, H, W, C] -> [B, H, W, C].
    """

    def __init__(self, channels: int, head_dim: int | None, *, groups: int | None, eps: float,
                 output_scale: float = 1.0, dtype: Dtype, rngs: nnx.Rngs):
        head_dim = head_dim or channels
        if channels % head_dim:
            raise ValueError(f"attention channels {channels} not divisible by head dim {head_dim}")
        self.heads, self.output_scale = channels // head_dim, output_scale
        self.group_norm = None if groups is None else nnx.GroupNorm(
            channels, num_groups=groups, epsilon=eps, dtype=dtype, rngs=rngs)
        self.to_q = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.to_k = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.to_v = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.to_out = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        # context is unused (self-attention only); the signature matches SpatialTransformer's,
        # so either can be a UNet level's attention.
        b, hh, ww, c = x.shape
        normed = x if self.group_norm is None else self.group_norm(x)
        tokens = normed.reshape(b, hh * ww, c)
        out = attend(self.to_q(tokens), self.to_k(tokens), self.to_v(tokens), self.heads)
        return (self.to_out(out).reshape(b, hh, ww, c) + x) / self.output_scale


class Downsample(nnx.Module):
    """Stride-2 3x3 conv.  [B, H, W, C] -> [B, H/2, W/2, C].

    padding=1 pads all sides by one; padding=0 pads only the bottom and right (the original DDPM
    code's convention, diffusers' downsample_padding=0).
    """

    def __init__(self, channels: int, padding: int = 1, *, dtype: Dtype, rngs: nnx.Rngs):
        if padding not in (0, 1):
            raise ValueError(f"downsample padding must be 0 or 1, got {padding}")
        self.padding = padding
        self.conv = Conv(channels, channels, stride=2, pad=padding, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        # temb is unused: the signature matches a resampling ResBlock, so either can be a level's
        # downsampler.
        if self.padding == 0:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest-neighbour x2, then a 3x3 conv.  [B, H, W, C] -> [B, 2H, 2W, C]."""

    def __init__(self, channels: int, *, dtype: Dtype, rngs: nnx.Rngs):
        self.conv = Conv(channels, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        return self.conv(upsample_nearest(x))
