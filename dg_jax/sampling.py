"""Jit-compiled samplers built from a UNet: unguided, or distribution-guided in h-space.

A sampler maps per-sample keys [B] to images [B, H, W, C] in [-1, 1] and a trace (the batch
distributions p_hat at every step when guided; h at every step on request). Both kinds evaluate
the UNet once per step: the guided one splits it at h (`encode` -> guide h -> `decode`), with the
gradient taken through the ADP only.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dg_jax.diffusion import samplers
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.schedules import alphas_cumprod, make_betas
from dg_jax.guidance.distribution import GuidanceConfig, guide_h, step_scale
from dg_jax.guidance.targets import Target
from dg_jax.models.adp import ADP
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet


def sampling_plan(model_config: ModelConfig, config: SamplerConfig):
    """(resolved SamplerConfig, descending timesteps [S] np.int32, alpha_bar [T], final alpha_bar)."""
    config = config.resolve(model_config.sampling)
    schedule = model_config.schedule
    alpha_bar = alphas_cumprod(schedule)
    ts = samplers.sampling_timesteps(schedule.num_train_timesteps, config.num_steps,
                                     config.spacing, config.steps_offset)
    final = 1.0 if config.set_alpha_to_one else alpha_bar[0]
    return config, ts, alpha_bar, final


def check_adp_fits(adp: ADP, unet: UNet, timesteps: np.ndarray) -> None:
    """An ADP must read this UNet's h (and, per-step heads, these exact timesteps)."""
    if tuple(adp.config.h_shape) != tuple(unet.config.h_shape):
        raise ValueError(f"ADP expects h of shape {tuple(adp.config.h_shape)} but the UNet's h is "
                         f"{tuple(unet.config.h_shape)}: ADP and UNet do not match")
    if adp.config.timesteps is not None and tuple(adp.config.timesteps) != tuple(
            int(t) for t in timesteps):
        raise ValueError(f"this per-step ADP was trained for {len(adp.config.timesteps)} "
                         f"sampling steps {list(adp.config.timesteps)[:3]}..., the sampler uses "
                         f"{len(timesteps)} steps {list(timesteps)[:3]}...")


def make_sampler(model: UNet, model_config: ModelConfig, config: SamplerConfig,
                 adp: ADP | None = None, targets: Sequence[Target] = (),
                 guidance: GuidanceConfig | None = None, record_h: bool = False):
    """Returns a jitted keys [B] -> (images [B, H, W, C] in [-1, 1], trace).

    trace["p_hat"]: target name -> batch distribution before each step's update [S, K] (guided
    only); trace["h"]: h at every step, [S, B, h, w, c] float16 (before guidance), if record_h.
    Without adp/targets the sampler is unguided. Fields of `config` left None take the model's
    sampling defaults.
    """
    config, ts, alpha_bar, final = sampling_plan(model_config, config)
    guided = adp is not None and len(targets) > 0
    if guided:
        check_adp_fits(adp, model, ts)
    guidance = guidance or GuidanceConfig()
    betas = jnp.asarray(make_betas(model_config.schedule), jnp.float32)
    c = model.config
    shape = (c.sample_size, c.sample_size, c.in_channels)
    graphdef, state = nnx.split((model, adp))

    @jax.jit
    def sample(state, keys):
        unet, predictor = nnx.merge(graphdef, state)

        def model_fn(x, t, i):
            enc = unet.encode(x, t)
            trace, h = {}, enc.h
            if record_h:
                trace["h"] = h.astype(jnp.float16)
            if guided:
                scale = step_scale(guidance, i, betas[t[0]], len(ts))
                h, trace["p_hat"] = guide_h(h, lambda h: predictor(h, t, i), targets, guidance,
                                            scale)
            return unet.decode(h, enc.skips, enc.temb), trace

        x_T = samplers.initial_noise(keys, shape)
        x0, trace = samplers.sample(model_fn, x_T, keys, alpha_bar, ts, config.method,
                                    config.eta, c.prediction_type, config.clip_range, final)
        return jnp.clip(x0, -1, 1), trace

    return lambda keys: sample(state, keys)


def make_h_inverter(model: UNet, model_config: ModelConfig, config: SamplerConfig):
    """Returns a jitted images [B, H, W, C] in [-1, 1] -> h [S, B, h, w, c] float16: DDIM
    inversion (eta 0) through the sampler's timesteps, h in sampling order (step 0 = noisiest)."""
    config, ts, alpha_bar, _ = sampling_plan(model_config, config)
    graphdef, state = nnx.split(model)
    prediction_type = model.config.prediction_type

    @jax.jit
    def invert(state, x0):
        unet = nnx.merge(graphdef, state)

        def model_fn(x, t, i):
            enc = unet.encode(x, t)
            return unet.decode(enc.h, enc.skips, enc.temb), enc.h.astype(jnp.float16)

        _, hs = samplers.invert(model_fn, x0, alpha_bar, ts, prediction_type)
        return hs[::-1]  # inversion visits timesteps ascending

    return lambda images: invert(state, images)
