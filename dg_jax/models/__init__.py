"""Flax NNX models: the UNet with h-space access, the attribute classifier, and their loaders."""

import importlib

from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet, UNetConfig

# Loaders import dg_jax.convert, which imports this package: resolve them on first use.
_LAZY = {"from_diffusers": "dg_jax.convert.diffusers", "load_unet": "dg_jax.models.loading",
         "save_unet": "dg_jax.models.loading", "load_classifier": "dg_jax.models.loading",
         "load_adp": "dg_jax.models.loading"}

__all__ = ["ModelConfig", "UNet", "UNetConfig", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
