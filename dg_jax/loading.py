"""Loading models: dg-jax checkpoint bundles (the embedded default unless a path is given), local
diffusers folders and guided-diffusion (ADM) checkpoints; saving UNet bundles.

    unet, config = load_unet()                      # the embedded SynthFaces UNet
    unet, config = load_unet("ddpm-celebahq-256")   # a diffusers pipeline or UNet2DModel folder
    unet, config = load_unet("celebahq_p2.pt", model_config="celebahq_p2")  # or flags.json
    adp = load_adp("runs/adp/bundle")

Models are built abstractly (no random initialisation) and filled with the checkpoint's
parameters.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from dg_jax import checkpoints, configs
from dg_jax.convert.clip import load_clip_text
from dg_jax.convert.diffusers import is_diffusers_folder, load_unet2d, pipeline_parts, read_scheduler
from dg_jax.convert.guided_diffusion import PRESETS, load_adm_unet
from dg_jax.convert.stable_diffusion import load_stable_diffusion, load_unet_cond, load_vae
from dg_jax.convert.state_dict import read_config
from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING, SamplerConfig
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.errors import UserError
from dg_jax.models.abstract import abstract_model
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.classifier import AttributeClassifier, ClassifierConfig
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet, UNetConfig

__all__ = ["from_diffusers", "load_adp", "load_classifier", "load_unet", "save_unet"]


def model_config_option():
    """A job config's `model_config` field: a guided-diffusion `model`'s architecture."""
    return configs.option("", "a guided-diffusion --model's architecture: a preset "
                              f"({', '.join(PRESETS)}) or a JSON file of its create_model and "
                              "diffusion flags")


def from_diffusers(path, dtype: str = "float32"):
    """Loads a diffusers UNet2DModel or UNet2DConditionModel (model folder or pipeline folder)
    as our UNet, or a whole Stable Diffusion pipeline folder.

    A pipeline folder (`model_index.json`) loads its `unet/` and `scheduler/`; a model folder
    (`config.json` with `_class_name`) loads alone, with the scheduler of a sibling
    `../scheduler/` if there is one. dtype is the compute dtype ("bfloat16" for speed);
    parameters are float32. Returns (model, ModelConfig with the UNet config, training schedule
    and sampling defaults); model is a `UNet`, or a `StableDiffusion` (UNet, autoencoder, text
    encoder, tokenizer) for a pipeline folder with a text encoder. A pipeline's `vae/` or
    `text_encoder/` folder alone gives (AutoencoderKL or CLIPTextModel, None).
    """
    path = pathlib.Path(path)
    if (path / "model_index.json").is_file():
        if "text_encoder" in json.loads((path / "model_index.json").read_text()):
            return load_stable_diffusion(path, dtype)
        unet_dir, scheduler_dir = pipeline_parts(path)
    elif (path / "config.json").is_file():
        raw = json.loads((path / "config.json").read_text())
        kind = raw.get("_class_name") or (raw.get("architectures") or [None])[0]
        if kind == "AutoencoderKL":
            return load_vae(path, dtype), None
        if kind in ("CLIPTextModel", "CLIPTextModelWithProjection"):
            return load_clip_text(path, dtype), None
        unet_dir, scheduler_dir = path, path.parent / "scheduler"
    else:
        raise FileNotFoundError(f"no diffusers model at {path} (no model_index.json or config.json)")
    schedule, sampling, prediction_type = read_scheduler(scheduler_dir)
    kind = read_config(unet_dir).get("_class_name")
    if kind == "UNet2DConditionModel":
        model = load_unet_cond(unet_dir, prediction_type, dtype)
    elif kind == "UNet2DModel":
        model = load_unet2d(unet_dir, prediction_type, dtype)
    else:
        raise ValueError(f"{unet_dir}: model class {kind!r} is not supported; dg-jax reads "
                         "UNet2DModel and UNet2DConditionModel")
    return model, ModelConfig(model.config, schedule, sampling)


def _bundle_config(path, kind: str) -> dict:
    """A bundle's config.json, which must describe a `kind` ("unet", "adp", "classifier")."""
    meta = checkpoints.read_bundle_config(path)
    if meta.get("kind") != kind:
        raise ValueError(f"checkpoint {path} holds a {meta.get('kind')!r}, expected a {kind!r}")
    return meta


def _load_module(path, kind: str, module_cls, config_cls):
    """A bundle of one module whose config.json "config" is config_cls's fields."""
    config = config_cls.from_dict(_bundle_config(path, kind)["config"])
    return checkpoints.load_params_into(path, abstract_model(module_cls, config))


# Files (not folders) that hold a guided-diffusion state dict.
ADM_SUFFIXES = (".pt", ".pth", ".safetensors")


def load_unet(path: str | os.PathLike | None = None, model_config: str | dict | None = None,
              dtype: str | None = None) -> tuple[UNet, ModelConfig]:
    """Returns (UNet with float32 params, its ModelConfig) from a bundle, a diffusers folder, or
    a guided-diffusion checkpoint file with `model_config` (a preset name from
    `dg_jax.convert.guided_diffusion.PRESETS`, or a JSON file / dict of its create_model and
    diffusion flags); no path: the embedded SynthFaces UNet. dtype: the compute dtype
    ("bfloat16": activations and matmuls in bf16, parameters stay float32); None: a bundle's
    own, else float32."""
    path = path or checkpoints.EMBEDDED_UNET
    if pathlib.Path(path).suffix in ADM_SUFFIXES:
        if model_config is None:
            raise UserError(f"{path} is a guided-diffusion checkpoint: give its architecture as "
                            f"{{model_config}}, a preset ({', '.join(PRESETS)}) or a JSON file "
                            "of its flags")
        return load_adm_unet(path, model_config, dtype or "float32")
    if model_config is not None:
        raise UserError("{model_config} is for guided-diffusion checkpoints (.pt, "
                        ".safetensors); bundles and diffusers folders carry their own config")
    if is_diffusers_folder(path):
        return from_diffusers(path, dtype or "float32")
    meta = _bundle_config(path, "unet")
    unet_config = UNetConfig.from_dict(meta["config"])
    config = ModelConfig(
        unet=dataclasses.replace(unet_config, dtype=dtype or unet_config.dtype),
        schedule=configs.from_dict(ScheduleConfig, meta.get("schedule", {})),
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
    """An attribute classifier bundle; no path: the embedded SynthFaces labeller."""
    return _load_module(path or checkpoints.EMBEDDED_CLASSIFIER, "classifier",
                        AttributeClassifier, ClassifierConfig)


def load_adp(path: str | os.PathLike | None = None) -> ADP:
    """An ADP bundle; no path: the embedded SynthFaces ADP (for the embedded UNet)."""
    return _load_module(path or checkpoints.EMBEDDED_ADP, "adp", ADP, ADPConfig)
