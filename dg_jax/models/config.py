"""What a loaded denoiser comes with besides its weights."""

from __future__ import annotations

import dataclasses

from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.models.unet import UNetConfig


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """unet: architecture; schedule: the training noise schedule; sampling: the model's sampling
    defaults (every field set), which a user's SamplerConfig overrides field by field."""

    unet: UNetConfig
    schedule: ScheduleConfig
    sampling: SamplerConfig
