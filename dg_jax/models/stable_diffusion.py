"""A Stable Diffusion model: cross-attention UNet, autoencoder, text encoder and tokenizer.

    sd, config = load_stable_diffusion("stable-diffusion-v1-5")   # dg_jax.convert
    context = sd.encode_prompts(["a photo of a doctor"] * 8)     # [8, 77, 768]
    eps = sd.unet(latents, t, context)                           # latents: [8, 64, 64, 4]

h-space is the UNet's middle block output, as for the unconditional models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
from flax import nnx

from dg_jax.models.clip import CLIPTextModel
from dg_jax.models.tokenizer import PromptTokenizer
from dg_jax.models.unet import UNet
from dg_jax.models.vae import AutoencoderKL


@nnx.jit
def _last_hidden_state(text_encoder: CLIPTextModel, ids: jax.Array) -> jax.Array:
    return text_encoder(ids)[0]


@dataclasses.dataclass
class StableDiffusion:
    unet: UNet
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: PromptTokenizer

    def __post_init__(self):
        width = self.text_encoder.config.hidden_size
        if self.unet.config.cross_attention_dim != width:
            raise ValueError(f"the UNet attends to contexts of width "
                             f"{self.unet.config.cross_attention_dim}, the text encoder gives "
                             f"{width}: UNet and text encoder do not match")
        if self.unet.config.in_channels != self.vae.config.latent_channels:
            raise ValueError(f"the UNet takes {self.unet.config.in_channels} channels, the "
                             f"autoencoder's latents have {self.vae.config.latent_channels}")

    @property
    def image_size(self) -> int:
        return self.unet.config.sample_size * self.vae.config.downscale

    def encode_prompts(self, prompts: Sequence[str]) -> jax.Array:
        """prompts -> context [B, L, D]: the text encoder's last hidden state (the UNet's
        conditioning; "" is the unconditional branch of classifier-free guidance)."""
        return _last_hidden_state(self.text_encoder, self.tokenizer(prompts))
