"""Per-sample targets that meet the batch target: each sample's posterior under the target prior.

The batch loss L(p_hat, p_ref) gives every sample the same push per class, dL/dp_hat, whatever
the sample: with a one-hot target and 92 % of the batch already in the asked class, the 8 % that
are not get only the batch's small residual, and the samples already right are pushed as hard as
they are. Here each sample i gets its own target distribution pi_i: its calibrated prediction p_i
re-weighted by one factor v_k per class, with v chosen so that the batch mean of pi meets p_ref
(the EM correction for a shift of the class prior, Saerens et al. 2002). Samples keep as much of
their own prediction as the target allows; ambiguous samples move first; a class the target
forbids gets v = 0; a target the batch already meets gives pi_i = p_i (no push). The push on
sample i is then d/dh_i of ||p_i - pi_i||^2, bounded like every update (`bounded_step`).

pi_i is soft: a sample the batch needs half in each class is pushed towards 50/50, i.e. towards
the boundary between the classes, where it can end as an in-between image (glasses half drawn;
docs/GUIDANCE.md measures how often). With
`draws` each sample instead commits to one class drawn from pi_i by inverse CDF at its own fixed
uniform number u_i, and is pushed towards that class (one-hot). The draw meets the target in
expectation (the mean of pi is p_ref); because u_i stays the same at every step, a sample's class
changes only when its posterior moves across u_i, and a sample that already fits (pi_i one-hot)
keeps its class whatever u_i.

With `power` G > 1, pi_i is proportional to p_i ** G * v instead: an ambiguous sample is sent to
the class it leans to rather than to the boundary, and nothing is drawn (docs/GUIDANCE.md
measures where that helps and where it does not; `distribution.step_power` applies it in the
last steps only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from dg_jax.guidance.targets import Target, per_target_keys

# Folded into a sample's key (+ the target's index) for its commit draws: apart from the
# sampler's noise indices and from sample-level guidance's cell draws ((1 << 30) + 1 + j, for
# up to 4,096 targets).
COMMIT_DRAW_SALT = (1 << 30) + 1 + 4096

# fixed-point iterations for the class weights v (a demanded class that no sample predicts
# needs a few to grow v by orders of magnitude; 50 leave the batch mean within ~1e-4 of p_ref)
ITERATIONS = 50


def target_posteriors(cells: jax.Array, ref: jax.Array, axis_name: str | None = None,
                      iterations: int = ITERATIONS, power: float | jax.Array = 1.0
                      ) -> jax.Array:
    """cells: each sample's predicted cell distribution [B, C] (calibrated), ref [C] -> pi [B, C],
    pi_i proportional to cells_i ** power * v with mean_i pi_i = ref over the (global, with
    axis_name) batch. power > 1 sends each sample more decisively to the class it leans to
    (the batch still meets ref); 1 is the EM prior correction."""
    log_p = power * jnp.log(jnp.maximum(cells, 1e-12))
    allowed = ref > 0
    log_ref = jnp.log(jnp.where(allowed, ref, 1.0))

    def posteriors(log_v):
        return jax.nn.softmax(jnp.where(allowed, log_p + log_v, -jnp.inf), axis=-1)

    def update(_, log_v):
        mean = jnp.mean(posteriors(log_v), axis=0)
        if axis_name:
            mean = jax.lax.pmean(mean, axis_name)
        return log_v + jnp.where(allowed, log_ref - jnp.log(jnp.maximum(mean, 1e-30)), 0.0)

    # zeros made from the data: inside shard_map the loop carry must vary over devices as the
    # data does (a per-device batch without axis_name)
    log_v = jax.lax.fori_loop(0, iterations, update, 0.0 * log_p[0])
    return posteriors(log_v)


def commit_draws(keys: jax.Array, targets: Sequence[Target]) -> dict[str, jax.Array]:
    """keys [B] -> target name -> u [B], uniform in [0, 1): each sample's fixed number for its
    commit draw (target j uses fold_in(key, salt + j), so it depends only on the sample's key)."""
    return {t.name: jax.vmap(jax.random.uniform)(target_keys)
            for t, target_keys in zip(targets, per_target_keys(keys, targets, COMMIT_DRAW_SALT))}


def drawn_classes(pi: jax.Array, u: jax.Array) -> jax.Array:
    """pi [B, C] (rows sum to 1), u [B] in [0, 1) -> one-hot [B, C]: row i's class at u_i on
    its cumulative distribution (a class with pi_ik = 0 is never drawn)."""
    below = jnp.cumsum(pi, axis=-1) <= u[:, None]
    # rounding can leave the last cumulative sum a hair under u: clamp to the last class
    # the row allows
    last = pi.shape[-1] - 1 - jnp.argmax((pi > 0)[:, ::-1], axis=-1)
    return jax.nn.one_hot(jnp.minimum(jnp.sum(below, axis=-1), last), pi.shape[-1])


def posterior_loss(cells: dict[str, jax.Array], targets: Sequence[Target],
                   refs: dict[str, jax.Array], weights: dict[str, float], batch_size: int,
                   axis_name: str | None = None, draws: dict[str, jax.Array] | None = None,
                   powers: Mapping[str, float | jax.Array] | None = None) -> jax.Array:
    """sum over targets and samples of w ||p_i - pi_i||^2 / batch_size, pi_i held constant
    (with `draws`, target name -> u [B] from `commit_draws`: the one-hot class drawn from pi_i
    instead of pi_i). cells: target name -> [B, C] per-sample cell probabilities (the values
    calibrated, the gradient tempered: `class_probabilities`); batch_size: the global batch,
    so that N * the gradient is each sample's own push, as for the batch loss. powers: target
    name -> its posterior power (default 1)."""
    total = jnp.float32(0.0)
    for t in targets:
        p = cells[t.name]
        pi = target_posteriors(p, refs[t.name], axis_name,
                               power=(powers or {}).get(t.name, 1.0))
        if draws is not None:
            pi = drawn_classes(pi, draws[t.name])
        pi = jax.lax.stop_gradient(pi)
        total = total + weights.get(t.name, 1.0) * jnp.sum((p - pi) ** 2) / batch_size
    return total
