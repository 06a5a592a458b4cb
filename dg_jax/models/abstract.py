"""Models built for their shapes only, to be filled by a loader.

    model = abstract_model(UNet, config)      # parameters are jax.ShapeDtypeStructs
    load_params_into(path, model)             # every parameter replaced by a stored array

Random initialisation of a model whose weights are then read costs time and memory for nothing
(Stable Diffusion's UNet: 860 M parameters). Under `nnx.eval_shape` a real `nnx.Rngs` is slow too:
each draw updates its traced counter, and flax then asks the tracer for its sharding, which makes
jax trace back through the whole construction (quadratic: ~30 s for a tiny cross-attention UNet
on this CPU, 2 s with `_OneKey`).
"""

from __future__ import annotations

import jax
from flax import nnx


class _OneKey:
    """Stands in for nnx.Rngs: every stream (rngs.params(), ...) returns the same key."""

    def __getattr__(self, stream: str):
        return lambda: jax.random.key(0)


def abstract_model(cls, *args, **kwargs) -> nnx.Module:
    """`cls(*args, **kwargs, rngs=...)` with abstract parameters (nothing allocated or drawn)."""
    return nnx.eval_shape(lambda: cls(*args, **kwargs, rngs=_OneKey()))
