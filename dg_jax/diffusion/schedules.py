"""Noise schedules: betas and cumulative alphas (pure functions, float64 math, float32 out).

Names follow diffusers' `beta_schedule` values so scheduler configs map one to one:
  linear             betas evenly spaced in [beta_start, beta_end]        (DDPM, Ho et al. 2020)
  scaled_linear      sqrt(betas) evenly spaced                             (Stable Diffusion)
  squaredcos_cap_v2  alpha_bar(t) = cos^2((t/T + s)/(1 + s) * pi/2), s = 0.008, betas <= 0.999
                     (Nichol & Dhariwal 2021); "cosine" is an alias.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """[T] betas evenly spaced from beta_start to beta_end."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def scaled_linear_betas(num_steps: int, beta_start: float = 0.00085,
                        beta_end: float = 0.012) -> np.ndarray:
    """[T] betas whose square roots are evenly spaced."""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=np.float64) ** 2


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """[T] betas of the squared-cosine alpha_bar, clipped at max_beta."""
    def alpha_bar(u):
        return np.cos((u + s) / (1 + s) * np.pi / 2) ** 2

    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    return np.minimum(1 - alpha_bar(u[1:]) / alpha_bar(u[:-1]), max_beta)


_BETAS = {
    "linear": linear_betas,
    "scaled_linear": scaled_linear_betas,
    "squaredcos_cap_v2": cosine_betas,
    "cosine": cosine_betas,
}


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Training noise schedule; field names as in diffusers' scheduler_config.json."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        if self.beta_schedule not in _BETAS:
            raise ValueError(f"unknown beta_schedule {self.beta_schedule!r}; known: {list(_BETAS)}")


def make_betas(config: ScheduleConfig) -> np.ndarray:
    """[T] float64 betas for a schedule config."""
    fn = _BETAS[config.beta_schedule]
    if fn is cosine_betas:
        return fn(config.num_train_timesteps)
    return fn(config.num_train_timesteps, config.beta_start, config.beta_end)


def alphas_cumprod(config: ScheduleConfig) -> jnp.ndarray:
    """[T] float32 alpha_bar_t = prod_{s<=t} (1 - beta_s)."""
    return jnp.asarray(np.cumprod(1.0 - make_betas(config)), jnp.float32)


def add_noise(x0: jnp.ndarray, noise: jnp.ndarray, alpha_bar_t: jnp.ndarray) -> jnp.ndarray:
    """Forward process q(x_t | x_0). x0, noise: [B, ...]; alpha_bar_t: [B] -> x_t [B, ...]."""
    a = alpha_bar_t.reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise


def prediction_target(x0: jnp.ndarray, noise: jnp.ndarray, alpha_bar_t: jnp.ndarray,
                      prediction_type: str) -> jnp.ndarray:
    """What a denoiser trained for `prediction_type` should output at x_t = add_noise(x0, noise).

    epsilon: the noise; sample: x0; v_prediction: v = sqrt(a) noise - sqrt(1 - a) x0
    (Salimans & Ho 2022), which stays well scaled at high noise where epsilon-prediction's x0
    estimate divides by sqrt(a) ~ 0.006. x0, noise: [B, ...]; alpha_bar_t: [B].
    """
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        a = alpha_bar_t.reshape((-1,) + (1,) * (x0.ndim - 1))
        return jnp.sqrt(a) * noise - jnp.sqrt(1 - a) * x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}")
