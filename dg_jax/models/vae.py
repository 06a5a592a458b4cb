"""Stable Diffusion's KL autoencoder (diffusers' `AutoencoderKL`) in Flax NNX, NHWC.

Images in [-1, 1] <-> latents at 1/2^(levels-1) resolution. `encode` / `decode` are the raw maps
(latent moments, decoded images); `images_to_latents` / `latents_to_images` add the scaling the
diffusion model was trained with, latent = scaling_factor * (z - shift_factor).

    vae = AutoencoderKL(VAEConfig(), rngs=nnx.Rngs(0))
    latents = vae.images_to_latents(x)          # x: [B, 256, 256, 3] -> [B, 32, 32, 4]
    images = vae.latents_to_images(latents)     # -> [B, 256, 256, 3]
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from dg_jax import configs
from dg_jax.models.layers import Attention, Conv, Downsample, ResBlock, Upsample

_EPS = 1e-6  # every norm of diffusers' autoencoder


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture and latent scaling; field names follow diffusers' AutoencoderKL config."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0
    dtype: str = "float32"  # compute dtype; parameters stay float32

    def __post_init__(self):
        for ch in self.block_out_channels:
            if ch % self.norm_num_groups:
                raise ValueError(f"channels {ch} not divisible by norm_num_groups "
                                 f"{self.norm_num_groups}")

    @property
    def downscale(self) -> int:
        """Image side / latent side."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        return configs.from_dict(cls, d)


class Level(nnx.Module):
    """ResBlocks then an optional resampler (an encoder's down or a decoder's up block)."""

    def __init__(self, resnets, downsampler=None, upsampler=None):
        self.resnets = nnx.List(resnets)
        self.downsampler, self.upsampler = downsampler, upsampler

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x, None)
        if self.downsampler is not None:
            x = self.downsampler(x)
        if self.upsampler is not None:
            x = self.upsampler(x)
        return x


class Coder(nnx.Module):
    """conv_in, levels, middle (ResBlock, attention, ResBlock), norm, SiLU, conv_out: the shape of
    both the encoder and the decoder.  [B, H, W, cin] -> [B, H', W', cout]."""

    def __init__(self, cin: int, cout: int, chans: tuple[int, ...], layers: int, up: bool,
                 config: VAEConfig, *, dtype, rngs: nnx.Rngs):
        res = dict(groups=config.norm_num_groups, eps=_EPS, scale_shift=False, dtype=dtype,
                   rngs=rngs)
        self.up = up
        self.conv_in = Conv(cin, chans[-1] if up else chans[0], dtype=dtype, rngs=rngs)
        blocks, prev = [], chans[-1] if up else chans[0]
        order = list(reversed(chans)) if up else list(chans)
        for i, ch in enumerate(order):
            last = i == len(order) - 1
            resnets = [ResBlock(prev if j == 0 else ch, ch, None, **res) for j in range(layers)]
            resample = {} if last else (
                {"upsampler": Upsample(ch, dtype=dtype, rngs=rngs)} if up else
                {"downsampler": Downsample(ch, padding=0, dtype=dtype, rngs=rngs)})
            blocks.append(Level(resnets, **resample))
            prev = ch
        mid = chans[-1]
        self.mid_resnet_1 = ResBlock(mid, mid, None, **res)
        self.mid_attention = Attention(
            mid, None, groups=config.norm_num_groups, eps=_EPS, dtype=dtype,
            rngs=rngs) if config.mid_block_add_attention else None
        self.mid_resnet_2 = ResBlock(mid, mid, None, **res)
        if up:
            self.up_blocks = nnx.List(blocks)
        else:
            self.down_blocks = nnx.List(blocks)
        self.conv_norm_out = nnx.GroupNorm(prev, num_groups=config.norm_num_groups, epsilon=_EPS,
                                           dtype=dtype, rngs=rngs)
        self.conv_out = Conv(prev, cout, dtype=dtype, rngs=rngs)

    def middle(self, x: jax.Array) -> jax.Array:
        x = self.mid_resnet_1(x, None)
        if self.mid_attention is not None:
            x = self.mid_attention(x)
        return self.mid_resnet_2(x, None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        if self.up:  # the decoder runs the middle block first, the encoder last
            x = self.middle(x)
            for block in self.up_blocks:
                x = block(x)
        else:
            for block in self.down_blocks:
                x = block(x)
            x = self.middle(x)
        return self.conv_out(nnx.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
    """Encoder to latent moments, decoder from latents (both NHWC, images in [-1, 1])."""

    def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        dtype = jnp.dtype(c.dtype)
        z2 = 2 * c.latent_channels
        self.encoder = Coder(c.in_channels, z2, c.block_out_channels, c.layers_per_block,
                             False, c, dtype=dtype, rngs=rngs)
        self.decoder = Coder(c.latent_channels, c.out_channels, c.block_out_channels,
                             c.layers_per_block + 1, True, c, dtype=dtype, rngs=rngs)
        self.quant_conv = Conv(z2, z2, 1, dtype=dtype, rngs=rngs) if c.use_quant_conv else None
        self.post_quant_conv = Conv(c.latent_channels, c.latent_channels, 1, dtype=dtype,
                                    rngs=rngs) if c.use_post_quant_conv else None

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [B, H, W, 3] -> (mean, logvar) of z, each [B, H/f, W/f, latent_channels]."""
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jax.Array) -> jax.Array:
        """z: [B, h, w, latent_channels] (unscaled) -> images [B, h*f, w*f, 3]."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z).astype(jnp.float32)

    def images_to_latents(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """x: [B, H, W, 3] in [-1, 1] -> the diffusion model's latents (the mean, or a sample of
        z with `key`)."""
        mean, logvar = self.encode(x)
        z = mean if key is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(
            key, mean.shape)
        return self.config.scaling_factor * (z - self.config.shift_factor)

    def latents_to_images(self, latents: jax.Array) -> jax.Array:
        """The diffusion model's latents -> images [B, H, W, 3], about [-1, 1] (not clipped)."""
        c = self.config
        return self.decode(latents / c.scaling_factor + c.shift_factor)
