"""The UNet (ADM / diffusers UNet2DModel and UNet2DConditionModel layout) with h-space access.

h-space is the seam between `encode` and `decode`: `encode` runs the input conv, the down blocks and
the middle block (ResBlock -> Attention -> ResBlock) and returns the middle block's output `h` with
the encoder skips; `decode` runs the up blocks on a (possibly edited) `h` and the *unmodified* skips.
`model(x, t) == model.decode(*model.encode(x, t))`, so guided sampling costs one UNet evaluation.

With `cross_attention_dim` set (Stable Diffusion), the attention levels are SpatialTransformers
that attend to a context (text embeddings [B, L, cross_attention_dim]) passed to `encode`; it
travels in `Encoded.context` to `decode`, which may be given another one (classifier-free guidance
decodes the conditional branch's edited h).

    model = UNet(UNetConfig(), rngs=nnx.Rngs(0))
    enc = model.encode(x, t)                  # x: [B, H, W, C], t: [B]; enc.h, .skips, .temb
    eps = model.decode(enc.h + delta, enc.skips, enc.temb)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from dg_jax import configs
from dg_jax.models.layers import Attention, Conv, Downsample, ResBlock, TimestepMLP, Upsample
from dg_jax.models.transformer import SpatialTransformer


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture; field names follow diffusers' UNet2DModel config where one exists."""

    sample_size: int = 32
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    layers_per_block: int = 2
    down_attention: tuple[bool, ...] = (False, False, True)  # per level, top to bottom
    up_attention: tuple[bool, ...] | None = None  # per up level, bottom to top; None: mirror
    mid_attention: bool = True
    attention_head_dim: int | None = 32  # None: one head over all channels
    norm_num_groups: int = 32
    attn_norm_num_groups: int | None = None  # middle attention's groups; None: as diffusers
    norm_eps: float = 1e-5
    resnet_time_scale_shift: str = "default"  # "default" (add) or "scale_shift"
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    time_embedding_dim: int | None = None  # None: 4 * block_out_channels[0]
    center_input_sample: bool = False
    mid_block_scale_factor: float = 1.0  # the middle block's resnets and attention divide by this
    # Text-conditional UNets (diffusers' UNet2DConditionModel): the context's width, the heads
    # per level (diffusers' `attention_head_dim` there) and transformer blocks per attention.
    cross_attention_dim: int | None = None
    num_attention_heads: tuple[int, ...] | None = None
    transformer_layers_per_block: tuple[int, ...] | None = None  # None: 1 per level
    upcast_attention: bool = False  # attention in float32 when the compute dtype is lower
    downsample_padding: int = 1  # 0: pad bottom/right only (original DDPM checkpoints)
    # "conv" or "resnet"; as in diffusers, "resnet" applies to levels with attention only, plain
    # levels always resample with a conv.
    downsample_type: str = "conv"
    upsample_type: str = "conv"
    # ADM (guided-diffusion's resblock_updown): every level resamples with a ResBlock, whatever
    # downsample_type / upsample_type say.
    resblock_updown: bool = False
    # The up blocks' heads per level, top to bottom, where they differ from the down blocks'
    # (guided-diffusion's num_heads_upsample); None: as num_attention_heads / attention_head_dim.
    up_attention_heads: tuple[int, ...] | None = None
    prediction_type: str = "epsilon"  # what the output means: epsilon, v_prediction or sample
    # "fixed": the output is the prediction alone; "learned_range": [prediction; v] along the
    # channels (out_channels = 2 in_channels), v in [-1, 1] interpolating the log variance of an
    # ancestral step between the posterior's and beta's (guided-diffusion's learn_sigma).
    variance_type: str = "fixed"
    dtype: str = "float32"  # compute dtype ("bfloat16" for speed); parameters stay float32

    def __post_init__(self):
        levels = len(self.block_out_channels)
        if len(self.down_attention) != levels:
            raise ValueError(f"down_attention has {len(self.down_attention)} entries, need {levels}")
        if self.up_attention is not None and len(self.up_attention) != levels:
            raise ValueError(f"up_attention has {len(self.up_attention)} entries, need {levels}")
        if self.resnet_time_scale_shift not in ("default", "scale_shift"):
            raise ValueError(f"unsupported resnet_time_scale_shift {self.resnet_time_scale_shift!r}")
        for name in ("downsample_type", "upsample_type"):
            if getattr(self, name) not in ("conv", "resnet"):
                raise ValueError(f"unsupported {name} {getattr(self, name)!r}; use conv or resnet")
        if self.downsample_padding not in (0, 1):
            raise ValueError(f"unsupported downsample_padding {self.downsample_padding}; use 0 or 1")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")
        if self.variance_type not in ("fixed", "learned_range"):
            raise ValueError(f"unsupported variance_type {self.variance_type!r}; use fixed or "
                             "learned_range")
        if self.variance_type == "learned_range" and self.out_channels != 2 * self.in_channels:
            raise ValueError(f"a learned variance needs out_channels = 2 x in_channels "
                             f"({2 * self.in_channels}), got {self.out_channels}")
        for ch in self.block_out_channels:
            if ch % self.norm_num_groups:
                raise ValueError(f"channels {ch} not divisible by norm_num_groups "
                                 f"{self.norm_num_groups}")
        for name in ("num_attention_heads", "up_attention_heads", "transformer_layers_per_block"):
            value = getattr(self, name)
            if value is not None and len(value) != levels:
                raise ValueError(f"{name} has {len(value)} entries, need {levels}")
        if self.cross_attention_dim is not None and self.num_attention_heads is None:
            raise ValueError("a cross-attention UNet needs num_attention_heads (one per level)")
        if self.sample_size % 2 ** (levels - 1):
            raise ValueError(f"sample_size {self.sample_size} not divisible by 2^{levels - 1}")

    @property
    def up_attention_levels(self) -> tuple[bool, ...]:
        return self.up_attention if self.up_attention is not None else self.down_attention[::-1]

    def attention_heads(self, channels: int, level: int, up: bool = False) -> int:
        """Heads of a self-attention at down level `level` (the middle block: the last level;
        up=True: the up block at that level's resolution)."""
        if up and self.up_attention_heads is not None:
            heads = self.up_attention_heads[level]
        elif self.num_attention_heads is not None:
            heads = self.num_attention_heads[level]
        else:
            heads = channels // (self.attention_head_dim or channels)
        if heads < 1 or channels % heads:
            raise ValueError(f"attention over {channels} channels cannot have {heads} heads")
        return heads

    @property
    def mid_attention_groups(self) -> int | None:
        """diffusers' rule: the middle attention has no norm under scale_shift unless told."""
        if self.attn_norm_num_groups is not None:
            return self.attn_norm_num_groups
        return self.norm_num_groups if self.resnet_time_scale_shift == "default" else None

    @property
    def h_shape(self) -> tuple[int, int, int]:
        """Shape of one sample's h: (H, W, C) at the bottleneck."""
        side = self.sample_size // 2 ** (len(self.block_out_channels) - 1)
        return side, side, self.block_out_channels[-1]

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        d = dict(d)
        # Configs written before mid_block_scale_factor existed had a global factor, always 1.
        if d.pop("output_scale_factor", 1.0) != 1.0:
            raise ValueError("output_scale_factor != 1 is not supported; use mid_block_scale_factor")
        return configs.from_dict(cls, d)


class Encoded(NamedTuple):
    """What `encode` returns: h [B, h, w, C], skips (tuple of [B, H_i, W_i, C_i]), temb [B, D],
    and the context [B, L, D_ctx] of a cross-attention UNet (None otherwise)."""

    h: jax.Array
    skips: tuple[jax.Array, ...]
    temb: jax.Array
    context: jax.Array | None = None


class DownLevel(nnx.Module):
    def __init__(self, resnets, attentions, downsampler):
        self.resnets = nnx.List(resnets)
        self.attentions = nnx.List(attentions) if attentions else None
        self.downsampler = downsampler


class UpLevel(nnx.Module):
    def __init__(self, resnets, attentions, upsampler):
        self.resnets = nnx.List(resnets)
        self.attentions = nnx.List(attentions) if attentions else None
        self.upsampler = upsampler


class UNet(nnx.Module):
    """Noise-prediction UNet. x: [B, H, W, in_channels], t: [B] -> [B, H, W, out_channels]
    (with a learned variance: the prediction's channels, then v's)."""

    def __init__(self, config: UNetConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        dtype = jnp.dtype(c.dtype)
        chans = c.block_out_channels
        temb_dim = c.time_embedding_dim or chans[0] * 4
        res = dict(groups=c.norm_num_groups, eps=c.norm_eps,
                   scale_shift=c.resnet_time_scale_shift == "scale_shift", dtype=dtype, rngs=rngs)
        depth = c.transformer_layers_per_block or (1,) * len(chans)

        def attention(channels: int, level: int, groups: int | None = c.norm_num_groups,
                      output_scale: float = 1.0, up: bool = False):
            """The attention of down level `level` (the middle block: the last level's; up: the
            up block at that level's resolution)."""
            if c.cross_attention_dim is None:
                head_dim = channels // c.attention_heads(channels, level, up)
                return Attention(channels, head_dim, groups=groups, eps=c.norm_eps,
                                 output_scale=output_scale, dtype=dtype, rngs=rngs)
            return SpatialTransformer(channels, c.num_attention_heads[level], c.cross_attention_dim,
                                      groups=c.norm_num_groups, depth=depth[level],
                                      upcast=c.upcast_attention, dtype=dtype, rngs=rngs)

        self.time_embedding = TimestepMLP(chans[0], temb_dim, c.flip_sin_to_cos, c.freq_shift,
                                          dtype=dtype, rngs=rngs)
        self.conv_in = Conv(c.in_channels, chans[0], dtype=dtype, rngs=rngs)

        skip_channels = [chans[0]]
        down, cin = [], chans[0]
        for level, cout in enumerate(chans):
            last = level == len(chans) - 1
            resnets, attentions = [], []
            for _ in range(c.layers_per_block):
                resnets.append(ResBlock(cin, cout, temb_dim, **res))
                if c.down_attention[level]:
                    attentions.append(attention(cout, level))
                skip_channels.append(cout)
                cin = cout
            downsampler = None
            if not last:
                skip_channels.append(cout)
                if c.resblock_updown or (c.down_attention[level]
                                         and c.downsample_type == "resnet"):
                    downsampler = ResBlock(cout, cout, temb_dim, resample="down", **res)
                else:
                    downsampler = Downsample(cout, c.downsample_padding, dtype=dtype, rngs=rngs)
            down.append(DownLevel(resnets, attentions, downsampler))
        self.down_blocks = nnx.List(down)

        mid_scale = c.mid_block_scale_factor
        self.mid_resnet_1 = ResBlock(cin, cin, temb_dim, output_scale=mid_scale, **res)
        self.mid_attention = attention(
            cin, len(chans) - 1, groups=c.mid_attention_groups,
            output_scale=mid_scale) if c.mid_attention else None
        self.mid_resnet_2 = ResBlock(cin, cin, temb_dim, output_scale=mid_scale, **res)

        up = []
        for i, cout in enumerate(reversed(chans)):
            last = i == len(chans) - 1
            resnets, attentions = [], []
            for _ in range(c.layers_per_block + 1):
                resnets.append(ResBlock(cin + skip_channels.pop(), cout, temb_dim, **res))
                if c.up_attention_levels[i]:
                    attentions.append(attention(cout, len(chans) - 1 - i, up=True))
                cin = cout
            upsampler = None
            if not last:
                if c.resblock_updown or (c.up_attention_levels[i]
                                         and c.upsample_type == "resnet"):
                    upsampler = ResBlock(cout, cout, temb_dim, resample="up", **res)
                else:
                    upsampler = Upsample(cout, dtype=dtype, rngs=rngs)
            up.append(UpLevel(resnets, attentions, upsampler))
        self.up_blocks = nnx.List(up)

        self.conv_norm_out = nnx.GroupNorm(cin, num_groups=c.norm_num_groups, epsilon=c.norm_eps,
                                           dtype=dtype, rngs=rngs)
        self.conv_out = Conv(cin, c.out_channels, dtype=dtype, rngs=rngs)

    def encode(self, x: jax.Array, t: jax.Array, context: jax.Array | None = None) -> Encoded:
        """x: [B, H, W, C_in], t: [B] (or scalar), context: [B, L, D_ctx] for a cross-attention
        UNet -> Encoded(h, skips, temb, context)."""
        t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
        if self.config.center_input_sample:
            x = 2 * x - 1
        temb = self.time_embedding(t)
        x = self.conv_in(x)
        skips = [x]
        for level in self.down_blocks:
            for j, resnet in enumerate(level.resnets):
                x = resnet(x, temb)
                if level.attentions is not None:
                    x = level.attentions[j](x, context)
                skips.append(x)
            if level.downsampler is not None:
                x = level.downsampler(x, temb)
                skips.append(x)
        x = self.mid_resnet_1(x, temb)
        if self.mid_attention is not None:
            x = self.mid_attention(x, context)
        h = self.mid_resnet_2(x, temb)
        return Encoded(h, tuple(skips), temb, context)

    def decode(self, h: jax.Array, skips: tuple[jax.Array, ...], temb: jax.Array,
               context: jax.Array | None = None) -> jax.Array:
        """h: [B, h, w, C] (edited or not), skips, temb (and context) from `encode`
        -> [B, H, W, C_out]."""
        x, skips = h.astype(temb.dtype), list(skips)
        for level in self.up_blocks:
            for j, resnet in enumerate(level.resnets):
                x = resnet(jnp.concatenate([x, skips.pop()], axis=-1), temb)
                if level.attentions is not None:
                    x = level.attentions[j](x, context)
            if level.upsampler is not None:
                x = level.upsampler(x, temb)
        x = self.conv_out(nnx.silu(self.conv_norm_out(x)))
        return x.astype(jnp.float32)

    def __call__(self, x: jax.Array, t: jax.Array, context: jax.Array | None = None) -> jax.Array:
        return self.decode(*self.encode(x, t, context))
