"""DDIM / DDPM steps, DDIM inversion and the compiled sampling loop (pure functions).

Conventions: `alpha_bar` is the [T] cumulative product of (1 - beta); a step goes from timestep t
to t_prev < t (t_prev = -1 means the clean end, alpha_bar_prev = 1). Model outputs are interpreted
by `prediction_type` (epsilon, v_prediction or sample), as diffusers does.

Randomness is per sample: `keys` is a [B] array of typed keys, and the noise of sample b at loop
step i is normal(fold_in(keys[b], i)), so a sample's trajectory does not depend on its batch mates
or on how the batch is split over devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from dg_jax.diffusion.respacing import is_respacing, respaced_timesteps

# model_fn(x_t [B,H,W,C], t [B] int32, step_index scalar int32) -> (model_output [B,H,W,C], aux);
# a model with a learned variance outputs [B,H,W,2C]: the prediction, then v (`split_output`)
ModelFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, Any]]


SamplingMethod = Literal["ddim", "ddpm", "dpm++2m"]
METHODS = get_args(SamplingMethod)


def sample_keys(seed: int, indices) -> jax.Array:
    """The keys of samples `indices` [B] of a run with this seed: [B] typed keys
    fold_in(key(seed), index). A sample's images depend only on (seed, its index)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))


def sampling_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "trailing",
                       steps_offset: int = 0, multistep: bool = False) -> np.ndarray:
    """Descending int32 timesteps [num_steps], spaced as diffusers' `timestep_spacing`.

    leading:  0, r, 2r, ... reversed (+ steps_offset), r = T // num_steps   (DDIM paper, SD)
    trailing: T-1, T-1-r', ... with r' = T / num_steps                     (starts at pure noise)
    linspace: round(linspace(0, T-1, num_steps)) reversed
    a guided-diffusion respacing ("ddim50", "250", "10,20,30"; its count must be num_steps)
    multistep: as diffusers' multistep solvers (DPM-Solver++), leading and linspace lay
    num_steps + 1 points and drop the lowest (their last step goes to t = 0 itself).
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    if is_respacing(spacing):
        ts = respaced_timesteps(num_train_timesteps, spacing)
        if len(ts) != num_steps:
            raise ValueError(f"spacing {spacing!r} gives {len(ts)} steps, not {num_steps}")
        return ts[::-1].copy()
    if multistep and spacing in ("leading", "linspace"):
        return sampling_timesteps(num_train_timesteps, num_steps + 1, spacing, steps_offset)[:-1]
    if spacing == "leading":
        ts = np.arange(num_steps) * (num_train_timesteps // num_steps) + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps)) - 1
        ts = ts[::-1]
    elif spacing == "linspace":
        ts = np.round(np.linspace(0, num_train_timesteps - 1, num_steps))
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; use leading, trailing or linspace")
    return ts[::-1].astype(np.int32).copy()


def previous_timesteps(timesteps: np.ndarray) -> np.ndarray:
    """The t_prev of each step: the next timestep in the list, -1 after the last."""
    return np.append(timesteps[1:], -1).astype(np.int32)


def alpha_bar_at(alpha_bar: jax.Array, t: jax.Array, final: float | jax.Array = 1.0) -> jax.Array:
    """alpha_bar[t], with alpha_bar[-1] := final (1: the clean end; diffusers' DDIM with
    set_alpha_to_one=False uses alpha_bar[0])."""
    return jnp.where(t >= 0, alpha_bar[jnp.maximum(t, 0)], final)


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    a = jnp.asarray(a, x.dtype)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) if a.ndim else a


def split_output(model_output: jax.Array, variance_type: str = "fixed"
                 ) -> tuple[jax.Array, jax.Array | None]:
    """(prediction [B, H, W, C], v [B, H, W, C] or None): a learned-variance ("learned_range")
    model's output holds the prediction's channels, then v's."""
    if variance_type == "fixed":
        return model_output, None
    if variance_type == "learned_range":
        return tuple(jnp.split(model_output, 2, axis=-1))
    raise ValueError(f"unknown variance_type {variance_type!r}")


def predict_x0_eps(model_output: jax.Array, x_t: jax.Array, alpha_bar_t: jax.Array,
                   prediction_type: str = "epsilon") -> tuple[jax.Array, jax.Array]:
    """(x0_hat, eps_hat) from the model output. alpha_bar_t: scalar or [B]."""
    a = _bcast(alpha_bar_t, x_t)
    sa, s1a = jnp.sqrt(a), jnp.sqrt(1 - a)
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (x_t - s1a * eps) / sa
    elif prediction_type == "sample":
        x0 = model_output
        eps = (x_t - sa * x0) / s1a
    elif prediction_type == "v_prediction":
        x0 = sa * x_t - s1a * model_output
        eps = sa * model_output + s1a * x_t
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r}")
    return x0, eps


def output_per_epsilon(alpha_bar_t: jax.Array, prediction_type: str = "epsilon") -> jax.Array:
    """d(model output)/d(eps_hat) at fixed x_t: how a change of the predicted noise shows in the
    output of an epsilon (1), v (1 / sqrt(a)) or sample (-sqrt(1 - a) / sqrt(a)) model.
    Classifier-style guidance shifts eps_hat; this carries the shift into the model's output."""
    a = jnp.asarray(alpha_bar_t)
    if prediction_type == "epsilon":
        return jnp.ones_like(a)
    if prediction_type == "v_prediction":
        return 1 / jnp.sqrt(a)
    if prediction_type == "sample":
        return -jnp.sqrt(1 - a) / jnp.sqrt(a)
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def _clip(x0: jax.Array, eps: jax.Array, x_t, a, clip_sample: float | None):
    """Clips x0_hat to [-c, c] and recomputes eps from it, so the step stays consistent (as
    guided-diffusion; diffusers with use_clipped_model_output=True)."""
    if clip_sample is None:
        return x0, eps
    x0 = jnp.clip(x0, -clip_sample, clip_sample)
    return x0, (x_t - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)


def ddim_step(x_t: jax.Array, model_output: jax.Array, alpha_bar_t: jax.Array,
              alpha_bar_prev: jax.Array, noise: jax.Array | None = None, eta: float = 0.0,
              prediction_type: str = "epsilon", clip_sample: float | None = None) -> jax.Array:
    """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, eq. 12).

    sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev);
    x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma * noise.
    eta = 0: deterministic; eta = 1: the DDPM posterior variance (the original code's setting).
    """
    a, a_prev = _bcast(alpha_bar_t, x_t), _bcast(alpha_bar_prev, x_t)
    x0, eps = predict_x0_eps(model_output, x_t, alpha_bar_t, prediction_type)
    x0, eps = _clip(x0, eps, x_t, a, clip_sample)
    sigma = eta * jnp.sqrt((1 - a_prev) / (1 - a)) * jnp.sqrt(1 - a / a_prev)
    x_prev = jnp.sqrt(a_prev) * x0 + jnp.sqrt(jnp.maximum(1 - a_prev - sigma**2, 0.0)) * eps
    if noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev


def dpm_solver_2m_step(x_t: jax.Array, x0: jax.Array, alpha_bar_t: jax.Array,
                       alpha_bar_prev: jax.Array, x0_before: jax.Array, lambda_before: jax.Array,
                       second_order: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One DPM-Solver++(2M) step x_t -> x_{t_prev} from data predictions (Lu et al. 2022; the
    midpoint form, diffusers' default). Returns (x_prev, lambda_t) for the next step's history.

    lambda = log(alpha / sigma) with alpha = sqrt(a), sigma = sqrt(1 - a); h = lambda_prev -
    lambda_t. First order (= deterministic DDIM): x' = sigma_prev / sigma_t x - alpha_prev
    (e^-h - 1) x0. Second order adds -alpha_prev (e^-h - 1) / 2 * D1 with D1 = (x0 - x0_before)
    h / (lambda_t - lambda_before), the slope from the previous step's x0 (`x0_before` at
    `lambda_before`); `second_order` (a bool scalar) picks it.
    """
    a, a_prev = _bcast(alpha_bar_t, x_t), _bcast(alpha_bar_prev, x_t)
    lam_t = 0.5 * (jnp.log(alpha_bar_t) - jnp.log1p(-alpha_bar_t))
    lam_prev = 0.5 * (jnp.log(alpha_bar_prev) - jnp.log1p(-alpha_bar_prev))  # inf at a_prev = 1
    h = _bcast(lam_prev - lam_t, x_t)
    step = jnp.sqrt(a_prev) * jnp.expm1(-h)
    first = jnp.sqrt((1 - a_prev) / (1 - a)) * x_t - step * x0
    d1 = (x0 - x0_before) * h / _bcast(lam_t - lambda_before, x_t)
    return jnp.where(second_order, first - 0.5 * step * d1, first), lam_t


def ddpm_step(x_t: jax.Array, model_output: jax.Array, alpha_bar_t: jax.Array,
              alpha_bar_prev: jax.Array, noise: jax.Array, prediction_type: str = "epsilon",
              clip_sample: float | None = None, v: jax.Array | None = None) -> jax.Array:
    """One ancestral step: a draw from the posterior q(x_{t_prev} | x_t, x0_hat).

    With beta = 1 - a_t / a_prev: mean = sqrt(a_prev) beta / (1 - a_t) x0
    + sqrt(1 - beta) (1 - a_prev) / (1 - a_t) x_t, variance = (1 - a_prev) / (1 - a_t) beta;
    with a learned v [B, H, W, C] in [-1, 1], log variance = f log(beta) + (1 - f) log(posterior
    variance), f = (v + 1) / 2 (Nichol & Dhariwal 2021). Pass noise 0 at the last step.
    """
    a, a_prev = _bcast(alpha_bar_t, x_t), _bcast(alpha_bar_prev, x_t)
    x0, eps = predict_x0_eps(model_output, x_t, alpha_bar_t, prediction_type)
    x0, _ = _clip(x0, eps, x_t, a, clip_sample)
    beta = 1 - a / a_prev
    mean = (jnp.sqrt(a_prev) * beta / (1 - a)) * x0 + (jnp.sqrt(1 - beta) * (1 - a_prev) / (1 - a)) * x_t
    log_variance = jnp.log(jnp.maximum((1 - a_prev) / (1 - a) * beta, 1e-20))
    if v is not None:
        frac = (v + 1) / 2
        log_variance = frac * jnp.log(beta) + (1 - frac) * log_variance
    return mean + jnp.exp(0.5 * log_variance) * noise


def ddim_invert_step(x_t: jax.Array, model_output: jax.Array, alpha_bar_t: jax.Array,
                     alpha_bar_next: jax.Array, prediction_type: str = "epsilon") -> jax.Array:
    """Deterministic DDIM step *up* the chain, x_t -> x_{t_next} (t_next > t), eta = 0."""
    x0, eps = predict_x0_eps(model_output, x_t, alpha_bar_t, prediction_type)
    a_next = _bcast(alpha_bar_next, x_t)
    return jnp.sqrt(a_next) * x0 + jnp.sqrt(1 - a_next) * eps


def per_sample_normal(keys: jax.Array, step: jax.Array, shape: tuple[int, ...],
                      dtype=jnp.float32) -> jax.Array:
    """keys: [B] -> noise [B, *shape], sample b from fold_in(keys[b], step)."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step), shape, dtype))(keys)


# Loop step index used to draw x_T, kept apart from the per-step noise indices 0..S-1.
INITIAL_NOISE_STEP = 1 << 30


def initial_noise(keys: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """x_T for each sample: keys [B] -> [B, *shape]."""
    return per_sample_normal(keys, INITIAL_NOISE_STEP, shape)


def sample(model_fn: ModelFn, x_T: jax.Array, keys: jax.Array, alpha_bar: jax.Array,
           timesteps: np.ndarray, method: str = "ddim", eta: float = 0.0,
           prediction_type: str = "epsilon", clip_sample: float | None = None,
           final_alpha_bar: float | jax.Array = 1.0, variance_type: str = "fixed"):
    """Runs the reverse process from x_T with lax.scan (traced once, whatever the step count).

    x_T: [B, H, W, C]; keys: [B]; timesteps: descending [S] ints; the last step goes to
    alpha_bar = final_alpha_bar. variance_type "learned_range": the model's output also holds v,
    which sets the variance of ddpm steps (ddim and dpm++2m use the prediction alone).
    Returns (x_0 [B, H, W, C], aux stacked over steps: leaves [S, ...]).
    method: ddim (eta: its noise), ddpm, or dpm++2m (DPM-Solver++(2M), deterministic; first
    order at the first and the last step, as diffusers' with its final sigma 0).
    """
    if method not in METHODS:
        raise ValueError(f"unknown sampling method {method!r}; use {', '.join(METHODS)}")
    ts = jnp.asarray(timesteps, jnp.int32)
    prev = jnp.asarray(previous_timesteps(np.asarray(timesteps)), jnp.int32)
    stochastic = method == "ddpm" or (method == "ddim" and eta > 0)
    last = len(timesteps) - 1

    def body(carry, step):
        x, (x0_before, lambda_before) = carry
        i, t, t_prev = step
        out, aux = model_fn(x, jnp.full((x.shape[0],), t), i)
        out, v = split_output(out, variance_type)
        a, a_prev = alpha_bar_at(alpha_bar, t), alpha_bar_at(alpha_bar, t_prev, final_alpha_bar)
        noise = per_sample_normal(keys, i, x.shape[1:], x.dtype) if stochastic else None
        if method == "ddim":
            x = ddim_step(x, out, a, a_prev, noise, eta, prediction_type, clip_sample)
        elif method == "ddpm":  # the last step adds no noise (the mean is the sample)
            x = ddpm_step(x, out, a, a_prev, jnp.where(i < last, noise, 0.0), prediction_type,
                          clip_sample, v)
        else:
            x0, eps = predict_x0_eps(out, x, a, prediction_type)
            x0, _ = _clip(x0, eps, x, _bcast(a, x), clip_sample)
            x, lambda_before = dpm_solver_2m_step(x, x0, a, a_prev, x0_before, lambda_before,
                                                  (i > 0) & (i < last))
            x0_before = x0
        return (x, (x0_before, lambda_before)), aux

    history = (jnp.zeros_like(x_T), jnp.float32(0.0))  # x0 and lambda of the step before
    (x0, _), aux = jax.lax.scan(body, (x_T, history),
                                (jnp.arange(len(timesteps), dtype=jnp.int32), ts, prev))
    return x0, aux


def invert(model_fn: ModelFn, x_0: jax.Array, alpha_bar: jax.Array, timesteps: np.ndarray,
           prediction_type: str = "epsilon", variance_type: str = "fixed"):
    """DDIM inversion x_0 -> x_{t_max} through every timestep of `timesteps` (descending, as
    for `sample`), one step per timestep.

    Step i goes from level t_{i-1} (t_{-1} = clean, alpha_bar = 1) to t_i, with the model evaluated
    on the current x at the target timestep t_i (diffusers' DDIMInverseScheduler does the same), so
    `aux` is recorded at exactly the timesteps sampling visits. Returns (x_T, aux stacked, [S, ...])
    in ascending-timestep order.
    """
    up = jnp.asarray(np.asarray(timesteps)[::-1], jnp.int32)  # ascending
    below = jnp.concatenate([jnp.array([-1], jnp.int32), up[:-1]])

    def body(x, step):
        i, t_from, t_to = step
        out, aux = model_fn(x, jnp.full((x.shape[0],), t_to), i)
        x_next = ddim_invert_step(x, split_output(out, variance_type)[0],
                                  alpha_bar_at(alpha_bar, t_from), alpha_bar[t_to],
                                  prediction_type)
        return x_next, aux

    return jax.lax.scan(body, x_0, (jnp.arange(len(up), dtype=jnp.int32), below, up))
