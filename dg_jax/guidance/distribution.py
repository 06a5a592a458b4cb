"""Batch distributions and the distribution-guided h update (pure functions).

For a batch of N samples with per-attribute class probabilities from the predictor,
p_hat = mean_i softmax(logits_i / tau); the loss sum_targets L(p_hat, p_ref) is differentiated
w.r.t. h only (through the predictor, never through the UNet) and h' = h - s_t * N * dL/dh (the
paper; `push="batch"`). By default p_hat takes the predictor's calibrated softmax(logits), each
sample is pushed towards its own target distribution (guidance/posterior.py; `push="commit"`:
towards one class drawn from it; in the last fifth of the loop that target is sharpened by a
posterior power on the attributes the ADP reads well), and each sample's step is bounded
relative to ||h_i|| (`bounded_step`).

Why the factor N: p_hat is a mean, so dL/dh_i carries a 1/N. Multiplying it back makes the push
on each sample depend on how far p_hat is from p_ref, not on the batch size, so one `scale`
works at batch 16 and at batch 4096 (the original code's scale had to be retuned per batch size).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal

import jax
import jax.numpy as jnp

from dg_jax.configs import check_choices, named_value, option
from dg_jax.errors import UserError
from dg_jax.guidance.losses import LOSSES, LossName
from dg_jax.guidance.posterior import posterior_loss
from dg_jax.guidance.targets import Target

# h [B, ...] -> attribute -> logits [B, K]
Predictor = Callable[[jax.Array], dict[str, jax.Array]]


def _bound(text: str) -> float | None:
    """--max-h-step's value: 0 or inf mean unbounded (None)."""
    value = float(text)
    return None if value == 0 or math.isinf(value) else value


@dataclasses.dataclass(frozen=True)
class GuidanceConfig:
    loss: LossName = option(
        "chi_square", "the distribution loss L(p_hat, p_ref)", flag="guidance-loss")
    # Per-sample step size (batch-size independent, see the module doc), bounded by max_step.
    # The default suits the embedded SynthFaces model and its ADP (docs/GUIDANCE.md: 3,000 left
    # glasses and smile short of 0.3/0.7 and uniform targets, 30,000 overshot smile); for another
    # model or ADP, sweep it: it depends on the scale of h and the ADP's slopes.
    scale: float = option(
        10000.0, "how hard guidance pushes towards the targets at each step (the step size s, "
                 "batch-size independent); classifier-free guidance of text models is "
                 "--guidance-scale", flag="push-scale")
    temperature: float = option(8.0, "tau: softmax temperature of the ADP logits (original "
                                     "code: 8)")
    start_step: int = option(1, "first guided loop step (0 = the noisiest; original: all but "
                                "the first)", flag="guidance-start")
    end_step: int | None = option(None, "guide the loop steps before this one (default: all)",
                                  flag="guidance-end")
    schedule: Literal["beta_power", "constant"] = option(
        "beta_power", "s_t = scale * beta_t ** 0.05 (original code), or constant",
        flag="guidance-schedule")
    # Attributes differ in how far a push on h moves the image (on the embedded model hair needs
    # about twice glasses' scale).
    target_weights: tuple[str, ...] = option(
        (), "TARGET=W: weigh that target's loss W times (default 1), e.g. hair=2 for an "
            "attribute that moves less per push; repeatable", flag="target-weight")
    # Trust region. Without it a strong or one-hot target throws h far outside what the decoder
    # has seen, and the images turn into blobs or noise (docs/GUIDANCE.md).
    max_step: float | None = option(
        1.0, "trust region: each sample's change of h per step is at most this fraction of "
             "||h||; 0 or inf: unbounded (the original code)", flag="max-h-step", parse=_bound)
    # False: as the original code; tau then also squeezes p_hat towards uniform, so a 0.3/0.7
    # or one-hot target is met in p_hat while the images' shares are elsewhere.
    calibrated: bool = option(
        True, "p_hat from the ADP's softmax(logits), the gradient from softmax(logits / tau); "
              "--no-calibrated: both tempered (the original code)")
    # posterior: samples that already fit are left alone; commit: as posterior, but an
    # ambiguous sample is pushed to one class rather than to the boundary (guidance/posterior.py)
    push: Literal["posterior", "commit", "batch"] = option(
        "posterior", "posterior: each sample towards its own prediction re-weighted so that the "
                     "batch meets the target; commit: towards one class drawn from that "
                     "re-weighted prediction; batch: every sample by the batch loss's gradient "
                     "(the paper)", flag="guidance-push")
    # The default, 4 in the last fifth of the loop on attributes read at 0.85 or better: where
    # the two networks read an in-between sample differently, sending it to one class in the
    # last steps is what takes hair + skin under FD 0.03 at every seed measured, at the same
    # image quality (docs/GUIDANCE.md, "Sending ambiguous samples to the class they lean to").
    posterior_power: float = option(
        4.0, "posterior and commit pushes: each sample's target is its prediction raised to "
             "this power, re-weighted to meet the batch target; above 1 an ambiguous sample is "
             "sent to the class it leans to rather than to the boundary",
        flag="posterior-power")
    # Late only: a power throughout costs image quality where many samples change class (on
    # the embedded model the matched KID of hair 0.5/0.5 + glasses 0.3/0.7 rose from 1.1 to 2.2
    # times the unguided one), and the in-between images it resolves are left by the last steps.
    power_from: float = option(
        0.8, "the posterior power applies from this fraction of the sampling loop on (the loop "
             "steps i >= round(f * steps)); before it the power is 1. 0: every step",
        flag="posterior-power-from")
    # A power sends each ambiguous sample the way the ADP leans, so the ADP's misreadings of an
    # attribute add up instead of averaging out (on the embedded model smile, read at 0.82,
    # moves away from a 0.3/0.7 target under a power). An ADP bundle that records no accuracy
    # (another model's) gets the power on no target, i.e. the plain posterior push.
    power_min_accuracy: float = option(
        0.85, "the posterior power applies only to targets whose every attribute the ADP reads "
             "at this held-out accuracy or better (its best step, as its bundle records it); "
             "the others keep power 1. 0: every target",
        flag="posterior-power-min-accuracy")

    def __post_init__(self):
        for spec in self.target_weights:
            parsed = named_value(spec)
            if parsed is None or not parsed[0]:
                raise UserError(f"{{target_weights}}: bad {spec!r}; use TARGET=WEIGHT, e.g. "
                                "hair=2")
        check_choices(self)
        for name in ("scale", "temperature", "max_step", "posterior_power", "power_from",
                     "power_min_accuracy"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UserError(f"{{{name}}} must be finite, got {value}")
        if self.posterior_power <= 0:
            raise UserError(f"{{posterior_power}} must be > 0, got {self.posterior_power}")
        for name in ("power_from", "power_min_accuracy"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{{{name}}} must be in [0, 1], got {getattr(self, name)}")
        if self.temperature <= 0:
            raise UserError(f"{{temperature}} must be > 0, got {self.temperature}")
        if self.scale < 0:
            raise UserError(f"{{scale}} must be >= 0, got {self.scale}")
        if self.max_step is not None and self.max_step <= 0:
            raise UserError(f"{{max_step}} must be > 0 (or None), got {self.max_step}")


def target_weights(config: GuidanceConfig) -> dict[str, float]:
    """target name -> loss weight (targets not named: 1)."""
    return dict(map(named_value, config.target_weights))


def class_probabilities(logits: dict[str, jax.Array], temperature: float,
                        calibrated: bool = False) -> dict[str, jax.Array]:
    """attribute -> softmax(logits / tau), each [B, K]. calibrated: the values are
    softmax(logits) and only the gradient is softmax(logits / tau)'s (a straight-through
    estimate: the shares the ADP believes in, with the tempered softmax's gradient, which does
    not vanish for confident samples)."""
    out = {}
    for a, v in logits.items():
        soft = jax.nn.softmax(v.astype(jnp.float32) / temperature, axis=-1)
        if calibrated:
            sharp = jax.lax.stop_gradient(jax.nn.softmax(v.astype(jnp.float32), axis=-1))
            soft = sharp + soft - jax.lax.stop_gradient(soft)
        out[a] = soft
    return out


def cell_probabilities(probs: dict[str, jax.Array], attributes: Sequence[str]) -> jax.Array:
    """Per-sample probabilities of the target's cells: [B, prod K], row-major over `attributes`
    (the outer product of the marginals for a joint target)."""
    out = probs[attributes[0]]
    for a in attributes[1:]:
        out = (out[:, :, None] * probs[a][:, None, :]).reshape(out.shape[0], -1)
    return out


def batch_distribution(probs: dict[str, jax.Array], target: Target,
                       axis_name: str | None = None) -> jax.Array:
    """p_hat [prod K]: the batch mean of the target's cell probabilities; with `axis_name`
    (inside shard_map) the mean is over the global batch."""
    p = jnp.mean(cell_probabilities(probs, target.attributes), axis=0)
    return jax.lax.pmean(p, axis_name) if axis_name else p


# target name -> the distribution [prod K] a batch is pushed towards, when it is not the target's
# own p_ref: dataset-level balance (dg_jax/balance.py) steers each batch to the remaining deficit.
References = dict[str, jax.Array]


def default_refs(targets: Sequence[Target]) -> References:
    """target name -> its own p_ref [prod K]."""
    return {t.name: jnp.asarray(t.array, jnp.float32) for t in targets}


def distribution_loss(probs: dict[str, jax.Array], targets: Sequence[Target], loss: str,
                      axis_name: str | None = None, refs: References | None = None,
                      weights: dict[str, float] | None = None
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(sum over targets of w * L(p_hat, p_ref), target name -> p_hat); `refs` replaces p_ref,
    `weights` (default 1) weigh the targets."""
    fn = LOSSES[loss]
    total, p_hats = jnp.float32(0.0), {}
    for target in targets:
        p_hat = batch_distribution(probs, target, axis_name)
        ref = jnp.asarray(target.array) if refs is None else refs[target.name]
        total = total + (weights or {}).get(target.name, 1.0) * fn(p_hat, ref)
        p_hats[target.name] = p_hat
    return total, p_hats


def step_scale(config: GuidanceConfig, step: jax.Array, beta_t: jax.Array,
               num_steps: int) -> jax.Array:
    """s_t for loop step `step` (0 = first, noisiest) at a timestep with beta_t; 0 outside the
    guidance interval."""
    end = num_steps if config.end_step is None else config.end_step
    active = (step >= config.start_step) & (step < end)
    shape = beta_t ** 0.05 if config.schedule == "beta_power" else jnp.ones_like(beta_t)
    return jnp.where(active, config.scale * shape, 0.0)


def step_power(config: GuidanceConfig, step: jax.Array, num_steps: int) -> jax.Array:
    """The posterior power G at loop step `step` (0 = first, noisiest): config.posterior_power
    from step round(power_from * num_steps) on, 1 before it."""
    late = step >= round(config.power_from * num_steps)
    return jnp.where(late, config.posterior_power, 1.0).astype(jnp.float32)


# GuidanceConfig fields added after data sets were first written, each with the value that does
# what was done before it existed (records leave a field out while it holds that value).
LATER_FIELDS = {"posterior_power": 1.0, "power_from": 0.0, "power_min_accuracy": 0.0}


def powered_targets(config: GuidanceConfig, targets: Sequence[Target],
                    accuracy: Mapping[str, float] | None) -> frozenset[str]:
    """The names of the targets the posterior power applies to: those whose every attribute
    the ADP reads at config.power_min_accuracy or better (`accuracy`: attribute -> held-out
    accuracy at the ADP's best step; an attribute without one counts as unread)."""
    accuracy = accuracy or {}
    return frozenset(t.name for t in targets if all(
        accuracy.get(a, 0.0) >= config.power_min_accuracy for a in t.attributes))


def bounded_step(h: jax.Array, step: jax.Array, max_step: float | None
                 ) -> tuple[jax.Array, jax.Array]:
    """Each sample's step scaled down to at most max_step * ||h_i|| (a per-sample trust region).
    h, step: [B, ...] -> (step [B, ...], ||step_i|| / ||h_i|| [B] after the bound)."""
    axes = tuple(range(1, h.ndim))
    h_norm = jnp.sqrt(jnp.sum(jnp.square(h.astype(jnp.float32)), axis=axes))
    step_norm = jnp.sqrt(jnp.sum(jnp.square(step), axis=axes))
    if max_step is not None:
        factor = jnp.minimum(1.0, max_step * h_norm / jnp.maximum(step_norm, 1e-30))
        step = step * factor.reshape(-1, *([1] * len(axes)))
        step_norm = step_norm * factor
    return step, step_norm / jnp.maximum(h_norm, 1e-30)


def guide_h(h: jax.Array, predict: Predictor, targets: Sequence[Target], config: GuidanceConfig,
            scale: jax.Array, axis_name: str | None = None, refs: References | None = None,
            draws: dict[str, jax.Array] | None = None, power: jax.Array | float | None = None,
            powered: Collection[str] | None = None
            ) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
    """One distribution-guidance update of h: [B, ...] -> (h' [B, ...], p_hat before the update,
    relative change ||h'_i - h_i|| / ||h_i|| [B]).

    `scale` is s_t (from `step_scale`). With `axis_name` (inside shard_map) p_hat is the global
    batch's and N the global batch size. `refs` replaces the targets' p_ref. `draws` (target
    name -> u [B], `posterior.commit_draws`) are the samples' fixed numbers that push="commit"
    needs. `power` is the posterior power at this step, for the targets named in `powered`
    (the others keep power 1). By default config.posterior_power acts on every target at every
    call; a sampler following the config passes `step_power` and `powered_targets` instead (the
    default config has power 4 only in the last fifth of the loop and only on attributes the
    ADP reads well). Each sample's step is bounded by config.max_step
    (`bounded_step`).
    """
    if (config.push == "commit") != (draws is not None):
        raise ValueError("push='commit' needs the samples' draws (posterior.commit_draws), and "
                         "only it takes them")
    n = h.shape[0] * (jax.lax.psum(1, axis_name) if axis_name else 1)
    power = config.posterior_power if power is None else power
    powers = {t.name: power if powered is None or t.name in powered else 1.0 for t in targets}

    def loss_of_h(h):
        probs = class_probabilities(predict(h), config.temperature, config.calibrated)
        if config.push == "batch":
            return distribution_loss(probs, targets, config.loss, axis_name, refs,
                                     target_weights(config))
        p_hats = {t.name: batch_distribution(probs, t, axis_name) for t in targets}
        cells = {t.name: cell_probabilities(probs, t.attributes) for t in targets}
        return posterior_loss(cells, targets, refs or default_refs(targets),
                              target_weights(config), n, axis_name, draws,
                              powers=powers), p_hats

    grad, p_hats = jax.grad(loss_of_h, has_aux=True)(h.astype(jnp.float32))
    step, change = bounded_step(h, scale * n * grad, config.max_step)
    return h - step.astype(h.dtype), p_hats, change
