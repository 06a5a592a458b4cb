"""diffusers' UNet2DModel folders and scheduler configs as our UNet and sampling defaults (no
torch needed for safetensors). `dg_jax.loading.from_diffusers` picks the loader for a folder.

Weights are mapped by name onto the module tree (conv kernels OIHW -> HWIO, linear weights
transposed); any key or shape that does not match is an error naming it.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from flax import nnx

from dg_jax.convert.state_dict import load_converted, read_config, read_state_dict
from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING, SamplerConfig
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.models.abstract import abstract_model
from dg_jax.models.unet import UNet, UNetConfig

_DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}  # type -> has attention
_UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}

# UNet2DModel options: value(s) we support, or None where any value maps onto our config.
_UNET_OPTIONS = {
    "sample_size": None, "in_channels": None, "out_channels": None,
    "center_input_sample": None, "time_embedding_type": ("positional",),
    "time_embedding_dim": None, "freq_shift": None, "flip_sin_to_cos": None,
    "down_block_types": None, "mid_block_type": ("UNetMidBlock2D",), "up_block_types": None,
    "block_out_channels": None, "layers_per_block": None, "mid_block_scale_factor": None,
    "downsample_padding": None, "downsample_type": None, "upsample_type": None,
    "dropout": None,  # inference only
    "act_fn": ("silu", "swish"), "attention_head_dim": None, "norm_num_groups": None,
    "attn_norm_num_groups": None, "norm_eps": None, "resnet_time_scale_shift": None,
    "add_attention": None, "class_embed_type": (None,), "num_class_embeds": (None,),
    "num_train_timesteps": None,  # only used by time_embedding_type="learned"
}

# Where our module tree differs from diffusers' state-dict names (old checkpoints' attention
# names included: query/key/value/proj_attn).
_RENAMES = [
    ("mid_block.resnets.0.", "mid_resnet_1."), ("mid_block.resnets.1.", "mid_resnet_2."),
    ("mid_block.attentions.0.", "mid_attention."),
    (".downsamplers.0.", ".downsampler."), (".upsamplers.0.", ".upsampler."),
    (".to_out.0.", ".to_out."), (".proj_attn.", ".to_out."),
    (".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."),
    (".ff.net.0.proj.", ".ff.geglu."), (".ff.net.2.", ".ff.out."),  # transformer blocks (SD)
]

def is_diffusers_folder(path) -> bool:
    path = pathlib.Path(path)
    if (path / "model_index.json").is_file():
        return True
    config = path / "config.json"
    return config.is_file() and "_class_name" in json.loads(config.read_text())


def pipeline_parts(path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """An unconditional pipeline folder -> (its unet/ folder, its scheduler/ folder)."""
    index = json.loads((path / "model_index.json").read_text())
    for part in ("vae", "vqvae"):
        if part in index:
            raise ValueError(f"{path}: {index.get('_class_name')} has a {part!r} but no text "
                             "encoder; latent unconditional pipelines are not supported")
    if "unet" not in index:
        raise ValueError(f"{path}: model_index.json names no 'unet'")
    return path / "unet", path / "scheduler"


def read_scheduler(folder) -> tuple[ScheduleConfig, SamplerConfig, str]:
    """folder/scheduler_config.json (diffusers' defaults if there is none) -> (training schedule,
    sampling defaults, prediction type)."""
    file = pathlib.Path(folder) / "scheduler_config.json"
    return scheduler_from_diffusers(json.loads(file.read_text()) if file.is_file() else {})


def load_unet2d(folder, prediction_type: str = "epsilon", dtype: str = "float32") -> UNet:
    """A UNet2DModel folder (config.json + weights) as our UNet."""
    config = unet_config_from_diffusers(read_config(folder, "UNet2DModel"),
                                        prediction_type=prediction_type, dtype=dtype)
    return load_diffusers_weights(abstract_model(UNet, config), read_state_dict(folder))


def unet_config_from_diffusers(raw: dict, prediction_type: str = "epsilon",
                               dtype: str = "float32") -> UNetConfig:
    """Our UNetConfig for a diffusers UNet2DModel config.json; unsupported options raise
    ValueError naming the option."""
    cfg = check_options(raw, _UNET_OPTIONS, "UNet2DModel")
    down = block_attention(cfg.get("down_block_types"), _DOWN_BLOCKS, "down_block_types")
    up = block_attention(cfg.get("up_block_types"), _UP_BLOCKS, "up_block_types")
    return UNetConfig(
        sample_size=square_size(cfg, "UNet2DModel"),
        in_channels=cfg.get("in_channels", 3),
        out_channels=cfg.get("out_channels", 3),
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg.get("layers_per_block", 2),
        down_attention=down,
        up_attention=up,
        mid_attention=cfg.get("add_attention", True),
        attention_head_dim=cfg.get("attention_head_dim", 8),
        attn_norm_num_groups=cfg.get("attn_norm_num_groups"),
        resnet_time_scale_shift=cfg.get("resnet_time_scale_shift", "default"),
        **shared_unet_fields(cfg),
        downsample_type=cfg.get("downsample_type", "conv"),
        upsample_type=cfg.get("upsample_type", "conv"),
        prediction_type=prediction_type,
        dtype=dtype,
    )


def shared_unet_fields(cfg: dict) -> dict:
    """UNetConfig fields that UNet2DModel and UNet2DConditionModel configs state alike."""
    return dict(
        norm_num_groups=cfg.get("norm_num_groups", 32),
        norm_eps=cfg.get("norm_eps", 1e-5),
        flip_sin_to_cos=cfg.get("flip_sin_to_cos", True),
        freq_shift=float(cfg.get("freq_shift", 0)),
        time_embedding_dim=cfg.get("time_embedding_dim"),
        center_input_sample=cfg.get("center_input_sample", False),
        mid_block_scale_factor=float(cfg.get("mid_block_scale_factor", 1.0)),
        downsample_padding=cfg.get("downsample_padding", 1),
    )


def check_options(raw: dict, options: dict, class_name: str) -> dict:
    """raw's options (no "_" keys) after checking each against `options` (name -> the values we
    support, or None for any); the first unsupported one raises ValueError naming it."""
    cfg = {k: v for k, v in raw.items() if not k.startswith("_")}
    for key, value in cfg.items():
        if key not in options:
            raise ValueError(f"unsupported {class_name} option {key!r}")
        allowed = options[key]
        if allowed is not None and value not in allowed:
            raise ValueError(f"unsupported {class_name} option {key}={value!r} "
                             f"(supported: {list(allowed)})")
    if cfg.get("norm_num_groups", 32) is None:
        raise ValueError(f"unsupported {class_name} option norm_num_groups=None")
    return cfg


def square_size(cfg: dict, class_name: str) -> int:
    size = cfg.get("sample_size")
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            raise ValueError(f"unsupported {class_name} option sample_size={size} (not square)")
        size = size[0]
    if size is None:
        raise ValueError(f"{class_name} config has no sample_size")
    return int(size)


def block_attention(types, known: dict, option: str) -> tuple[bool, ...]:
    """Per level, whether its block type (one of `known`: type -> has attention) attends."""
    if not types:
        raise ValueError(f"the config has no {option}")
    for t in types:
        if t not in known:
            raise ValueError(f"unsupported {option}: block type {t!r} (supported: {list(known)})")
    return tuple(known[t] for t in types)


# Scheduler defaults where a config omits a field, per diffusers' scheduler classes.
_CLIPPING_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")


def scheduler_from_diffusers(cfg: dict) -> tuple[ScheduleConfig, SamplerConfig, str]:
    """(training schedule, sampling defaults, prediction_type) from a scheduler_config.json dict.

    An empty dict gives diffusers' DDPMScheduler defaults. Options that change the math in ways
    our samplers do not implement raise ValueError naming the option.
    """
    if cfg.get("trained_betas") is not None:
        raise ValueError("unsupported scheduler option trained_betas (explicit beta list)")
    for flag in ("thresholding", "rescale_betas_zero_snr"):
        if cfg.get(flag):
            raise ValueError(f"unsupported scheduler option {flag}=True")
    # None: multistep solvers' configs (no variance to choose)
    if cfg.get("variance_type", "fixed_small") not in (None, "fixed_small", "fixed_small_log"):
        raise ValueError(f"unsupported scheduler option variance_type={cfg['variance_type']!r} "
                         "(supported: fixed_small)")
    schedule = ScheduleConfig(
        num_train_timesteps=cfg.get("num_train_timesteps", 1000),
        beta_schedule=cfg.get("beta_schedule", "linear"),
        beta_start=cfg.get("beta_start", 1e-4),
        beta_end=cfg.get("beta_end", 0.02),
    )
    clip = cfg.get("clip_sample", cfg.get("_class_name", "DDPMScheduler") in _CLIPPING_SCHEDULERS)
    sampling = SamplerConfig(
        spacing=cfg.get("timestep_spacing", "leading"),
        steps_offset=cfg.get("steps_offset", 0),
        clip_sample=float(cfg.get("clip_sample_range", 1.0)) if clip else 0.0,
        set_alpha_to_one=cfg.get("set_alpha_to_one", True),
    ).resolve(DEFAULT_SAMPLING)
    return schedule, sampling, cfg.get("prediction_type", "epsilon")


def load_diffusers_weights(model: nnx.Module, state_dict: dict[str, np.ndarray]) -> nnx.Module:
    """Copies a diffusers state dict into `model`; every parameter must be matched exactly once."""
    return load_converted(model, dict(_convert_entry(k, v) for k, v in state_dict.items()))


def _convert_entry(key: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """diffusers key and tensor -> our dotted parameter name and array."""
    name = "." + key
    for old, new in _RENAMES:
        name = name.replace(old, new)
    name = name[1:]
    stem, leaf = name.rsplit(".", 1)
    if leaf == "bias":
        return name, value
    if leaf != "weight":
        raise ValueError(f"unexpected tensor {key!r}")
    if value.ndim == 4:  # conv OIHW -> HWIO
        return f"{stem}.kernel", value.transpose(2, 3, 1, 0)
    if value.ndim == 2:  # linear [out, in] -> [in, out]
        return f"{stem}.kernel", value.T
    return f"{stem}.scale", value  # norm


