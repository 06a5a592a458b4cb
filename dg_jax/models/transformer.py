"""Cross-attention transformer blocks of text-conditional UNets (Flax NNX, NHWC).

Stable Diffusion's UNet attends from every latent pixel to the text encoder's tokens inside
`SpatialTransformer`s (diffusers' `Transformer2DModel` with `BasicTransformerBlock`s). Sub-module
names follow diffusers' (norm1, attn1, to_q, proj_in, ...) so that weight conversion is a key map;
only the feed-forward's `net.0.proj` / `net.2` are called `geglu` / `out` here.

    block = SpatialTransformer(320, heads=8, context_dim=768, groups=32, rngs=nnx.Rngs(0))
    y = block(x, context)        # x: [B, H, W, 320], context: [B, L, 768] -> [B, H, W, 320]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dg_jax.models.layers import Dtype, attend


class CrossAttention(nnx.Module):
    """Multi-head attention from x to context (to x itself when context is None).

    x: [B, N, query_dim], context: [B, M, context_dim] -> [B, N, query_dim]. Projections to q, k,
    v have no bias (diffusers' `attention_bias=False`, every Stable Diffusion release).
    """

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, head_dim: int, *,
                 upcast: bool = False, dtype: Dtype, rngs: nnx.Rngs):
        inner = heads * head_dim
        self.heads, self.upcast = heads, upcast
        kv_dim = context_dim or query_dim
        self.to_q = nnx.Linear(query_dim, inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_k = nnx.Linear(kv_dim, inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_v = nnx.Linear(kv_dim, inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_out = nnx.Linear(inner, query_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        context = x if context is None else context
        out = attend(self.to_q(x), self.to_k(context), self.to_v(context), self.heads,
                     self.upcast)
        return self.to_out(out)


class GEGLUFeedForward(nnx.Module):
    """Linear to 2 x inner, value * GELU(gate), Linear back.  x: [B, N, dim] -> [B, N, dim]."""

    def __init__(self, dim: int, mult: int = 4, *, dtype: Dtype, rngs: nnx.Rngs):
        inner = dim * mult
        self.geglu = nnx.Linear(dim, 2 * inner, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(inner, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        value, gate = jnp.split(self.geglu(x), 2, axis=-1)
        return self.out(value * jax.nn.gelu(gate, approximate=False))  # exact (erf) GELU


class TransformerBlock(nnx.Module):
    """Pre-LayerNorm self-attention, cross-attention to the context, GEGLU feed-forward, each with
    a residual.  x: [B, N, dim], context: [B, L, context_dim] -> [B, N, dim]."""

    def __init__(self, dim: int, heads: int, context_dim: int, *, eps: float = 1e-5,
                 upcast: bool = False, dtype: Dtype, rngs: nnx.Rngs):
        head_dim = dim // heads
        attn = dict(upcast=upcast, dtype=dtype, rngs=rngs)
        self.norm1 = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)
        self.attn1 = CrossAttention(dim, None, heads, head_dim, **attn)
        self.norm2 = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)
        self.attn2 = CrossAttention(dim, context_dim, heads, head_dim, **attn)
        self.norm3 = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)
        self.ff = GEGLUFeedForward(dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nnx.Module):
    """GroupNorm, projection to tokens, `depth` TransformerBlocks, projection back, residual.

    x: [B, H, W, C], context: [B, L, context_dim] -> [B, H, W, C]. proj_in / proj_out are linear
    maps per pixel: diffusers' 1x1 convs (SD 1.x) and Linears (SD 2.x, `use_linear_projection`)
    both convert onto them.
    """

    def __init__(self, channels: int, heads: int, context_dim: int, *, groups: int,
                 depth: int = 1, upcast: bool = False, dtype: Dtype, rngs: nnx.Rngs):
        if channels % heads:
            raise ValueError(f"transformer channels {channels} not divisible by {heads} heads")
        self.norm = nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-6, dtype=dtype,
                                  rngs=rngs)
        self.proj_in = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.transformer_blocks = nnx.List([
            TransformerBlock(channels, heads, context_dim, upcast=upcast, dtype=dtype, rngs=rngs)
            for _ in range(depth)])
        self.proj_out = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        if context is None:
            raise ValueError("a cross-attention UNet needs a context [B, L, D] (text embeddings)")
        b, h, w, c = x.shape
        tokens = self.proj_in(self.norm(x).reshape(b, h * w, c))
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return self.proj_out(tokens).reshape(b, h, w, c) + x
