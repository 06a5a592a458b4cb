"""Distances between a batch distribution p and a target q (pure functions, [..., K] -> [...]).

All are finite for any target, including targets with 0 or 1 entries: where the chi-square and
KL formulas divide by (or take the log of) q_k, q_k is floored at `min_prob`, which caps the
weight of a class the target forbids at 1 / min_prob instead of making it infinite (the original
code produced NaN there).
"""

from __future__ import annotations

from typing import Literal, get_args

import jax.numpy as jnp

MIN_PROB = 1e-2


def chi_square(p: jnp.ndarray, q: jnp.ndarray, min_prob: float = MIN_PROB) -> jnp.ndarray:
    """Pearson chi-square sum_k (p_k - q_k)^2 / q_k (the original unconditional code's loss)."""
    return jnp.sum((p - q) ** 2 / jnp.maximum(q, min_prob), axis=-1)


def kl(p: jnp.ndarray, q: jnp.ndarray, min_prob: float = MIN_PROB) -> jnp.ndarray:
    """KL(p || q) = sum_k p_k log(p_k / q_k) (the original Stable Diffusion code's loss)."""
    p_safe = jnp.maximum(p, 1e-12)  # p log p -> 0 as p -> 0, with a finite gradient
    return jnp.sum(p * (jnp.log(p_safe) - jnp.log(jnp.maximum(q, min_prob))), axis=-1)


def l2(p: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:
    """Squared Euclidean distance sum_k (p_k - q_k)^2."""
    return jnp.sum((p - q) ** 2, axis=-1)


LossName = Literal["chi_square", "kl", "l2"]
# The configs' type (choices on the command line, checked by check_choices) and the lookup table
# name the same losses.
LOSSES = {"chi_square": chi_square, "kl": kl, "l2": l2}
assert set(get_args(LossName)) == set(LOSSES)
