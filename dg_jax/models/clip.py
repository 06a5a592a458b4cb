"""CLIP (text and vision towers, transformers' `CLIPModel` layout) in Flax NNX.

Stable Diffusion conditions on `CLIPTextModel`'s last hidden state; the zero-shot attribute labeller
scores images against class prompts with the whole `CLIPModel`. Sub-module names follow
transformers' (`encoder.layers.N.self_attn.q_proj`, `pre_layrnorm`, ...) so that conversion is a
key map (dg_jax/convert/clip.py).

    text = CLIPTextModel(CLIPTextConfig(), rngs=nnx.Rngs(0))
    hidden, pooled = text(ids)                  # ids: [B, L] int -> [B, L, D], [B, D]
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from dg_jax import configs
from dg_jax.models.layers import Dtype

_ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP (SD 1.x)
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # OpenCLIP (SD 2.x)
}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """Field names follow transformers' CLIPTextConfig (defaults: SD 1.x's ViT-L/14 text tower)."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407  # 2: the old configs' value, pooled at the highest token id instead
    projection_dim: int | None = None  # set: a text projection (CLIPTextModelWithProjection)
    dtype: str = "float32"

    def __post_init__(self):
        _check(self)

    @classmethod
    def from_dict(cls, d: dict) -> CLIPTextConfig:
        return configs.from_dict(cls, d)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """Field names follow transformers' CLIPVisionConfig."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 14
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int | None = None
    dtype: str = "float32"

    def __post_init__(self):
        _check(self)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} not divisible by patch_size "
                             f"{self.patch_size}")

    @classmethod
    def from_dict(cls, d: dict) -> CLIPVisionConfig:
        return configs.from_dict(cls, d)


def _check(config) -> None:
    if config.hidden_act not in _ACTIVATIONS:
        raise ValueError(f"unsupported CLIP hidden_act {config.hidden_act!r} (supported: "
                         f"{list(_ACTIVATIONS)})")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"CLIP hidden_size {config.hidden_size} not divisible by "
                         f"{config.num_attention_heads} heads")


class SelfAttention(nnx.Module):
    """x: [B, L, D] -> [B, L, D]; `mask` [B, 1, L, L] (True: may attend) or None."""

    def __init__(self, dim: int, heads: int, *, dtype: Dtype, rngs: nnx.Rngs):
        self.heads = heads
        self.q_proj = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.k_proj = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.v_proj = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.out_proj = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        b, n, d = x.shape
        split = lambda y: y.reshape(b, n, self.heads, d // self.heads)  # noqa: E731
        out = jax.nn.dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)),
                                           split(self.v_proj(x)), mask=mask)
        return self.out_proj(out.reshape(b, n, d))


class MLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, act: str, *, dtype: Dtype, rngs: nnx.Rngs):
        self.act = act
        self.fc1 = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(_ACTIVATIONS[self.act](self.fc1(x)))


class EncoderLayer(nnx.Module):
    """Pre-LayerNorm attention and MLP, each with a residual.  x: [B, L, D] -> [B, L, D]."""

    def __init__(self, config, *, dtype: Dtype, rngs: nnx.Rngs):
        d, eps = config.hidden_size, config.layer_norm_eps
        self.layer_norm1 = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)
        self.self_attn = SelfAttention(d, config.num_attention_heads, dtype=dtype, rngs=rngs)
        self.layer_norm2 = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)
        self.mlp = MLP(d, config.intermediate_size, config.hidden_act, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nnx.Module):
    def __init__(self, config, *, dtype: Dtype, rngs: nnx.Rngs):
        self.layers = nnx.List([EncoderLayer(config, dtype=dtype, rngs=rngs)
                                for _ in range(config.num_hidden_layers)])

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class TextEmbeddings(nnx.Module):
    def __init__(self, config: CLIPTextConfig, *, dtype: Dtype, rngs: nnx.Rngs):
        d = config.hidden_size
        self.token_embedding = nnx.Embed(config.vocab_size, d, dtype=dtype, rngs=rngs)
        self.position_embedding = nnx.Embed(config.max_position_embeddings, d, dtype=dtype,
                                            rngs=rngs)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return self.token_embedding(ids) + self.position_embedding(jnp.arange(ids.shape[1]))


class CLIPTextModel(nnx.Module):
    """Token ids [B, L] (L <= max_position_embeddings) -> (last hidden state [B, L, D] after the
    final LayerNorm, pooled [B, D] at the end-of-text token; projected [B, projection_dim] when
    the config has a projection). Attention is causal, as in CLIP."""

    def __init__(self, config: CLIPTextConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = jnp.dtype(config.dtype)
        self.embeddings = TextEmbeddings(config, dtype=dtype, rngs=rngs)
        self.encoder = Encoder(config, dtype=dtype, rngs=rngs)
        self.final_layer_norm = nnx.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps,
                                              dtype=dtype, rngs=rngs)
        self.text_projection = None if config.projection_dim is None else nnx.Linear(
            config.hidden_size, config.projection_dim, use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        n = ids.shape[1]
        if n > self.config.max_position_embeddings:
            raise ValueError(f"{n} tokens, the text encoder takes at most "
                             f"{self.config.max_position_embeddings}")
        causal = jnp.tril(jnp.ones((n, n), bool))[None, None]
        hidden = self.final_layer_norm(self.encoder(self.embeddings(ids), causal))
        if self.config.eos_token_id == 2:
            end = jnp.argmax(ids, axis=-1)  # old configs: the end token has the highest id
        else:
            end = jnp.argmax(ids == self.config.eos_token_id, axis=-1)  # its first occurrence
        pooled = hidden[jnp.arange(ids.shape[0]), end]
        if self.text_projection is not None:
            pooled = self.text_projection(pooled)
        return hidden.astype(jnp.float32), pooled.astype(jnp.float32)


class VisionEmbeddings(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype: Dtype, rngs: nnx.Rngs):
        d, p = config.hidden_size, config.patch_size
        self.patch_size, self.dtype = p, dtype
        self.class_embedding = nnx.Param(jax.random.normal(rngs.params(), (d,)) * d**-0.5)
        init = nnx.initializers.lecun_normal()
        self.patch_embedding = nnx.Param(init(rngs.params(), (p, p, config.num_channels, d)))
        positions = (config.image_size // p) ** 2 + 1
        self.position_embedding = nnx.Embed(positions, d, dtype=dtype, rngs=rngs)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        """pixels: [B, S, S, C] (normalised as CLIP's processor does) -> [B, 1 + patches, D]."""
        dtype = self.dtype or pixels.dtype
        p = self.patch_size
        patches = jax.lax.conv_general_dilated(
            pixels.astype(dtype), self.patch_embedding[...].astype(dtype), (p, p), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        b, _, _, d = patches.shape
        cls = jnp.broadcast_to(self.class_embedding[...].astype(dtype), (b, 1, d))
        tokens = jnp.concatenate([cls, patches.reshape(b, -1, d)], axis=1)
        return tokens + self.position_embedding(jnp.arange(tokens.shape[1]))


class CLIPVisionModel(nnx.Module):
    """pixels [B, S, S, 3] -> pooled [B, D] (the class token after post_layernorm; projected
    [B, projection_dim] when the config has a projection)."""

    def __init__(self, config: CLIPVisionConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = jnp.dtype(config.dtype)
        d, eps = config.hidden_size, config.layer_norm_eps
        self.embeddings = VisionEmbeddings(config, dtype=dtype, rngs=rngs)
        self.pre_layrnorm = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)  # sic
        self.encoder = Encoder(config, dtype=dtype, rngs=rngs)
        self.post_layernorm = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)
        self.visual_projection = None if config.projection_dim is None else nnx.Linear(
            d, config.projection_dim, use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        s = self.config.image_size
        if pixels.shape[1:3] != (s, s):
            raise ValueError(f"CLIP vision takes {s}x{s} images, got {pixels.shape[1:3]}")
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(pixels)))
        pooled = self.post_layernorm(hidden[:, 0])
        if self.visual_projection is not None:
            pooled = self.visual_projection(pooled)
        return pooled.astype(jnp.float32)


class CLIPModel(nnx.Module):
    """Both towers with projections and the learned temperature: `logits(pixels, ids)` are
    CLIP's image-text similarities [B_img, B_text]."""

    def __init__(self, text: CLIPTextConfig, vision: CLIPVisionConfig, *, rngs: nnx.Rngs):
        if text.projection_dim is None or text.projection_dim != vision.projection_dim:
            raise ValueError("a CLIPModel needs one projection_dim for both towers, got "
                             f"{text.projection_dim} and {vision.projection_dim}")
        self.text_model = CLIPTextModel(text, rngs=rngs)
        self.vision_model = CLIPVisionModel(vision, rngs=rngs)
        self.logit_scale = nnx.Param(jnp.asarray(2.6592, jnp.float32))  # log(1 / 0.07)

    def text_embeds(self, ids: jax.Array) -> jax.Array:
        """ids: [B, L] -> unit-norm text embeddings [B, projection_dim]."""
        return _unit(self.text_model(ids)[1])

    def image_embeds(self, pixels: jax.Array) -> jax.Array:
        """pixels: [B, S, S, 3] -> unit-norm image embeddings [B, projection_dim]."""
        return _unit(self.vision_model(pixels))

    def logits(self, pixels: jax.Array, ids: jax.Array) -> jax.Array:
        return jnp.exp(self.logit_scale[...]) * self.image_embeds(pixels) @ self.text_embeds(ids).T


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)
