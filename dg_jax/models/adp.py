"""Attribute Distribution Predictor (ADP): h-space vector (and timestep) -> class logits.

Two kinds, one interface `adp(h, t, step) -> {attribute: logits [B, K]}`:
  mlp              the paper's time-conditioned MLP: features of h (mean-pooled over H, W, or
                   flattened) + a sinusoidal embedding of t -> 2 hidden SiLU layers -> logits.
  linear_per_step  the original code: one linear head per sampling step on flattened h; the loop
                   step index selects the head, so it only fits the timesteps it was trained on.
Several attributes, each with its own number of classes, share one predictor.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from dg_jax import configs
from dg_jax.models.layers import timestep_embedding


@dataclasses.dataclass(frozen=True)
class ADPConfig:
    attributes: tuple[tuple[str, int], ...]  # (name, number of classes)
    h_shape: tuple[int, int, int]  # one sample's h: (H, W, C)
    kind: str = "mlp"  # mlp | linear_per_step
    features: str = "pool"  # mlp input: pool (mean over H, W) | flatten
    hidden: int = 256
    time_dim: int = 64
    timesteps: tuple[int, ...] | None = None  # linear_per_step: the sampling timesteps, in order

    def __post_init__(self):
        if self.kind not in ("mlp", "linear_per_step"):
            raise ValueError(f"unknown ADP kind {self.kind!r}; use mlp or linear_per_step")
        if self.features not in ("pool", "flatten"):
            raise ValueError(f"unknown ADP features {self.features!r}; use pool or flatten")
        if self.kind == "linear_per_step" and not self.timesteps:
            raise ValueError("a linear_per_step ADP needs the sampling timesteps it serves")
        if not self.attributes or any(k < 2 for _, k in self.attributes):
            raise ValueError("an ADP needs at least one attribute with >= 2 classes")

    @property
    def num_classes(self) -> dict[str, int]:
        return dict(self.attributes)

    @classmethod
    def from_dict(cls, d: dict) -> ADPConfig:
        d = dict(d)
        d["attributes"] = tuple((str(n), int(k)) for n, k in d["attributes"])
        return configs.from_dict(cls, d)


class ADP(nnx.Module):
    """h: [B, H, W, C], t: [B] timesteps, step: scalar loop index -> {attr: logits [B, K]}."""

    def __init__(self, config: ADPConfig, *, rngs: nnx.Rngs):
        self.config = config
        out = sum(k for _, k in config.attributes)
        hh, ww, c = config.h_shape
        flat = hh * ww * c
        if config.kind == "linear_per_step":
            steps = len(config.timesteps)
            init = nnx.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=(0,))
            self.kernel = nnx.Param(init(rngs.params(), (steps, flat, out), jnp.float32))
            self.bias = nnx.Param(jnp.zeros((steps, out), jnp.float32))
        else:
            width = c if config.features == "pool" else flat
            self.norm = nnx.LayerNorm(width, rngs=rngs)
            self.hidden_1 = nnx.Linear(width + config.time_dim, config.hidden, rngs=rngs)
            self.hidden_2 = nnx.Linear(config.hidden, config.hidden, rngs=rngs)
            self.head = nnx.Linear(config.hidden, out, rngs=rngs)

    def __call__(self, h: jax.Array, t: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
        c = self.config
        h = h.astype(jnp.float32)
        if c.kind == "linear_per_step":
            logits = h.reshape(h.shape[0], -1) @ self.kernel[step] + self.bias[step]
        else:
            x = h.mean(axis=(1, 2)) if c.features == "pool" else h.reshape(h.shape[0], -1)
            t = jnp.broadcast_to(jnp.asarray(t), (h.shape[0],))
            x = jnp.concatenate([self.norm(x), timestep_embedding(t, c.time_dim)], axis=-1)
            logits = self.head(nnx.silu(self.hidden_2(nnx.silu(self.hidden_1(x)))))
        return split_logits(logits, c.attributes)


def split_logits(logits: jax.Array, attributes) -> dict[str, jax.Array]:
    """[B, sum K] -> {attr: [B, K]} in the order of `attributes`."""
    out, start = {}, 0
    for name, k in attributes:
        out[name] = logits[:, start:start + k]
        start += k
    return out
