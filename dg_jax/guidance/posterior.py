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
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from dg_jax.guidance.targets import Target

# fixed-point iterations for the class weights v (a demanded class that no sample predicts
# needs a few to grow v by orders of magnitude; 50 leave the batch mean within ~1e-4 of p_ref)
ITERATIONS = 50


def target_posteriors(cells: jax.Array, ref: jax.Array, axis_name: str | None = None,
                      iterations: int = ITERATIONS) -> jax.Array:
    """cells: each sample's predicted cell distribution [B, C] (calibrated), ref [C] -> pi [B, C],
    pi_i proportional to cells_i * v with mean_i pi_i = ref over the (global, with axis_name)
    batch."""
    log_p = jnp.log(jnp.maximum(cells, 1e-12))
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


def posterior_loss(cells: dict[str, jax.Array], targets: Sequence[Target],
                   refs: dict[str, jax.Array], weights: dict[str, float], batch_size: int,
                   axis_name: str | None = None) -> jax.Array:
    """sum over targets and samples of w ||p_i - pi_i||^2 / batch_size, pi_i held constant.
    cells: target name -> [B, C] per-sample cell probabilities (the values calibrated, the
    gradient tempered: `class_probabilities`); batch_size: the global batch, so that N * the
    gradient is each sample's own push, as for the batch loss."""
    total = jnp.float32(0.0)
    for t in targets:
        p = cells[t.name]
        pi = jax.lax.stop_gradient(target_posteriors(p, refs[t.name], axis_name))
        total = total + weights.get(t.name, 1.0) * jnp.sum((p - pi) ** 2) / batch_size
    return total
