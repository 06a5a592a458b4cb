"""Load models: our checkpoint bundles (the embedded default unless a path is given) and local
diffusers folders; save UNet bundles."""

from __future__ import annotations

import os

from dg_jax import checkpoints, configs
from dg_jax.convert.diffusers import from_diffusers, is_diffusers_folder
from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING, SamplerConfig
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.models.abstract import abstract_model
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.classifier import AttributeClassifier, ClassifierConfig
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet, UNetConfig


def _check_kind(path, meta: dict, kind: str) -> None:
    if meta.get("kind") != kind:
        raise ValueError(f"checkpoint {path} holds a {meta.get('kind')!r}, expected a {kind!r}")


def load_unet(path: str | os.PathLike | None = None) -> tuple[UNet, ModelConfig]:
    """Returns (UNet with float32 params, its ModelConfig) from a bundle or a diffusers folder."""
    path = path or checkpoints.EMBEDDED_UNET
    if is_diffusers_folder(path):
        return from_diffusers(path)
    meta = checkpoints.read_bundle_config(path)
    _check_kind(path, meta, "unet")
    config = ModelConfig(
        unet=UNetConfig.from_dict(meta["config"]),
        schedule=configs.from_dict(ScheduleConfig, meta.get("schedule", {})),
        # Bundles written before sampling defaults were stored sample as our models do.
        sampling=configs.from_dict(SamplerConfig, meta.get("sampling", {})).resolve(
            DEFAULT_SAMPLING),
    )
    model = abstract_model(UNet, config.unet)
    checkpoints.load_params_into(path, model)
    return model, config


def save_unet(path: str | os.PathLike, model: UNet, config: ModelConfig,
              dtype: str = "float32", extra: dict | None = None) -> None:
    """Writes a UNet bundle that `load_unet` restores with the same ModelConfig; `extra` goes
    into its config.json as information (e.g. where the weights came from)."""
    extra = {"schedule": configs.to_dict(config.schedule),
             "sampling": configs.to_dict(config.sampling), **(extra or {})}
    checkpoints.save_bundle(path, "unet", configs.to_dict(config.unet), model, dtype, extra)


def load_classifier(path: str | os.PathLike | None = None) -> AttributeClassifier:
    path = path or checkpoints.EMBEDDED_CLASSIFIER
    meta = checkpoints.read_bundle_config(path)
    _check_kind(path, meta, "classifier")
    model = abstract_model(AttributeClassifier, ClassifierConfig.from_dict(meta["config"]))
    return checkpoints.load_params_into(path, model)


def load_adp(path: str | os.PathLike) -> ADP:
    meta = checkpoints.read_bundle_config(path)
    _check_kind(path, meta, "adp")
    model = abstract_model(ADP, ADPConfig.from_dict(meta["config"]))
    return checkpoints.load_params_into(path, model)
