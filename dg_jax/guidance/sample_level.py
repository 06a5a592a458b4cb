"""Sample-level guidance, the paper's baseline (pure functions).

Each sample gets its own target cell, drawn from p_ref with the sample's key, and is pushed there
alone with -log p(cell): the batch reaches p_ref only as far as the draws do, and every sample is
pushed, also one whose class the batch already has enough of. Distribution guidance pushes only as
much as the batch as a whole needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from dg_jax.guidance.distribution import (
    GuidanceConfig,
    Predictor,
    References,
    batch_distribution,
    target_weights,
)
from dg_jax.guidance.targets import Target, per_target_keys

# Folded into a sample's key to draw its target cells, apart from the sampler's noise indices.
CELL_DRAW_SALT = (1 << 30) + 1


def draw_cells(keys: jax.Array, targets: Sequence[Target], refs: References | None = None
               ) -> dict[str, jax.Array]:
    """Per-sample target cells: keys [B] -> target name -> int32 [B], cell ~ p_ref (or
    refs[name]; row-major over the target's attributes). Target j uses fold_in(key, salt + j), so
    it depends only on the sample's key."""
    cells = {}
    for target, target_keys in zip(targets, per_target_keys(keys, targets, CELL_DRAW_SALT)):
        ref = jnp.asarray(target.array) if refs is None else refs[target.name]
        logp = jnp.log(ref)  # -inf for forbidden cells: never drawn
        cells[target.name] = jax.vmap(lambda k, logp=logp: jax.random.categorical(k, logp))(
            target_keys).astype(jnp.int32)
    return cells


def cell_log_probability(log_probs: dict[str, jax.Array], target: Target,
                         cells: jax.Array) -> jax.Array:
    """log p(cell) per sample [B] from per-attribute log-probabilities [B, K_a]: for a joint
    target the sum over its attributes of the log-probability of the cell's class."""
    classes = jnp.unravel_index(cells, target.num_classes)
    return sum(jnp.take_along_axis(log_probs[a], c[:, None], axis=1)[:, 0]
               for a, c in zip(target.attributes, classes))


def sample_level_loss(logits: dict[str, jax.Array], targets: Sequence[Target],
                      cells: dict[str, jax.Array], temperature: float,
                      weights: dict[str, float] | None = None
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(sum over samples and targets of -w log p(cell), target name -> batch distribution
    p_hat); `weights` (default 1) weigh the targets.

    A sum, not a mean: each sample's gradient is its own, whatever the batch size.
    """
    scaled = {a: v.astype(jnp.float32) / temperature for a, v in logits.items()}
    log_probs = {a: jax.nn.log_softmax(v, axis=-1) for a, v in scaled.items()}
    probs = {a: jnp.exp(v) for a, v in log_probs.items()}
    loss = -sum((weights or {}).get(t.name, 1.0)
                * jnp.sum(cell_log_probability(log_probs, t, cells[t.name])) for t in targets)
    return loss, {t.name: batch_distribution(probs, t) for t in targets}


def guide_h_per_sample(h: jax.Array, predict: Predictor, targets: Sequence[Target],
                       cells: dict[str, jax.Array], config: GuidanceConfig, scale: jax.Array
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """h [B, ...] -> (h - s_t * d(-log p(cell))/dh, p_hat before the update)."""
    loss = lambda h: sample_level_loss(predict(h), targets, cells, config.temperature,  # noqa: E731
                                       target_weights(config))
    grad, p_hats = jax.grad(loss, has_aux=True)(h.astype(jnp.float32))
    return h - (scale * grad).astype(h.dtype), p_hats

