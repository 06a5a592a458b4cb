"""Build models from checkpoint bundles (the embedded default unless a path is given)."""

from __future__ import annotations

import os

from flax import nnx

from dg_jax import checkpoints
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.models.classifier import AttributeClassifier, ClassifierConfig
from dg_jax.models.unet import UNet, UNetConfig


def _check_kind(path, meta: dict, kind: str) -> None:
    if meta.get("kind") != kind:
        raise ValueError(f"checkpoint {path} holds a {meta.get('kind')!r}, expected a {kind!r}")


def load_unet(path: str | os.PathLike | None = None) -> tuple[UNet, ScheduleConfig]:
    """Returns (UNet with restored float32 params, its training noise schedule)."""
    path = path or checkpoints.EMBEDDED_UNET
    meta = checkpoints.read_bundle_config(path)
    _check_kind(path, meta, "unet")
    model = UNet(UNetConfig.from_dict(meta["config"]), rngs=nnx.Rngs(0))
    checkpoints.load_params_into(path, model)
    return model, ScheduleConfig(**meta.get("schedule", {}))


def load_classifier(path: str | os.PathLike | None = None) -> AttributeClassifier:
    path = path or checkpoints.EMBEDDED_CLASSIFIER
    meta = checkpoints.read_bundle_config(path)
    _check_kind(path, meta, "classifier")
    model = AttributeClassifier(ClassifierConfig.from_dict(meta["config"]), rngs=nnx.Rngs(0))
    return checkpoints.load_params_into(path, model)
