"""Read local diffusers-format folders into our Flax UNet (no torch needed for safetensors).

    model, config = from_diffusers("ddpm-celebahq-256")   # pipeline folder or its unet/ folder

A pipeline folder (`model_index.json`) loads its `unet/` and `scheduler/`; a model folder
(`config.json` with `_class_name`) loads alone, with the scheduler of a sibling `../scheduler/` if
there is one. Weights are mapped by name onto the module tree (conv kernels OIHW -> HWIO, linear
weights transposed); any key or shape that does not match is an error naming it.
"""

from __future__ import annotations

import json
import pathlib

import jax.numpy as jnp
import numpy as np
from flax import nnx

from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING, SamplerConfig
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.models.abstract import abstract_model
from dg_jax.models.config import ModelConfig
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

WEIGHT_NAME = "diffusion_pytorch_model"


def from_diffusers(path, dtype: str = "float32"):
    """Loads a diffusers UNet2DModel or UNet2DConditionModel (model folder or pipeline folder)
    as our UNet, or a whole Stable Diffusion pipeline folder.

    dtype is the compute dtype ("bfloat16" for speed); parameters are float32. Returns
    (model, ModelConfig with the UNet config, training schedule and sampling defaults); model is
    a `UNet`, or a `StableDiffusion` (UNet, autoencoder, text encoder, tokenizer) for a pipeline
    folder with a text encoder. A pipeline's `vae/` or `text_encoder/` folder alone gives
    (AutoencoderKL or CLIPTextModel, None).
    """
    path = pathlib.Path(path)
    if (path / "model_index.json").is_file():
        if "text_encoder" in json.loads((path / "model_index.json").read_text()):
            from dg_jax.convert.stable_diffusion import load_stable_diffusion

            return load_stable_diffusion(path, dtype)
        unet_dir, scheduler_dir = _pipeline_parts(path)
    elif (path / "config.json").is_file():
        raw = json.loads((path / "config.json").read_text())
        kind = raw.get("_class_name") or (raw.get("architectures") or [None])[0]
        if kind == "AutoencoderKL":
            from dg_jax.convert.stable_diffusion import load_vae

            return load_vae(path, dtype), None
        if kind in ("CLIPTextModel", "CLIPTextModelWithProjection"):
            from dg_jax.convert.clip import load_clip_text

            return load_clip_text(path, dtype), None
        unet_dir, scheduler_dir = path, path.parent / "scheduler"
    else:
        raise FileNotFoundError(f"no diffusers model at {path} (no model_index.json or config.json)")
    raw = json.loads((unet_dir / "config.json").read_text())
    sched_file = scheduler_dir / "scheduler_config.json"
    sched = json.loads(sched_file.read_text()) if sched_file.is_file() else {}
    schedule, sampling, prediction_type = scheduler_from_diffusers(sched)
    if raw.get("_class_name") == "UNet2DConditionModel":
        from dg_jax.convert.stable_diffusion import load_unet_cond

        model = load_unet_cond(unet_dir, prediction_type, dtype)
        return model, ModelConfig(model.config, schedule, sampling)
    if raw.get("_class_name") != "UNet2DModel":
        raise ValueError(f"{unet_dir}: model class {raw.get('_class_name')!r} is not supported; "
                         "dg-jax reads UNet2DModel and UNet2DConditionModel")
    unet_config = unet_config_from_diffusers(raw, prediction_type=prediction_type, dtype=dtype)
    model = abstract_model(UNet, unet_config)
    load_diffusers_weights(model, read_state_dict(unet_dir))
    return model, ModelConfig(unet_config, schedule, sampling)


def is_diffusers_folder(path) -> bool:
    path = pathlib.Path(path)
    if (path / "model_index.json").is_file():
        return True
    config = path / "config.json"
    return config.is_file() and "_class_name" in json.loads(config.read_text())


def _pipeline_parts(path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    index = json.loads((path / "model_index.json").read_text())
    for part in ("vae", "vqvae"):
        if part in index:
            raise ValueError(f"{path}: {index.get('_class_name')} has a {part!r} but no text "
                             "encoder; latent unconditional pipelines are not supported")
    if "unet" not in index:
        raise ValueError(f"{path}: model_index.json names no 'unet'")
    return path / "unet", path / "scheduler"


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


def read_config(folder, class_name: str | None = None, what: str | None = None) -> dict:
    """folder/config.json; with `class_name`, it must describe that diffusers class
    (`_class_name`). `what` names the model in the error when config.json is missing."""
    file = pathlib.Path(folder) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"no {what or class_name or 'model'} at {folder} (no config.json)")
    raw = json.loads(file.read_text())
    if class_name is not None and raw.get("_class_name") != class_name:
        raise ValueError(f"{folder}: model class {raw.get('_class_name')!r}, expected {class_name}")
    return raw


def read_state_dict(folder, weight_name: str = WEIGHT_NAME) -> dict[str, np.ndarray]:
    """All tensors of `folder`'s weights as float32 numpy arrays: diffusers' files are called
    diffusion_pytorch_model, transformers' (CLIP) model.

    Reads .safetensors (also sharded, with its .index.json) without torch; .bin needs torch.
    """
    folder = pathlib.Path(folder)
    single = folder / f"{weight_name}.safetensors"
    index = folder / f"{weight_name}.safetensors.index.json"
    if single.is_file():
        return _read_safetensors([single])
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return _read_safetensors([folder / f for f in files])
    binary = folder / f"{weight_name}.bin"
    if binary.is_file():
        try:
            import torch
        except ImportError:
            raise ImportError(f"{binary} is a PyTorch pickle and needs torch to read; install "
                              "torch or save the model as safetensors") from None
        state = torch.load(binary, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise FileNotFoundError(f"no {weight_name}.safetensors or .bin in {folder}")


def _read_safetensors(files) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    for f in files:
        # framework="flax" because numpy has no bfloat16; converted to float32 numpy below.
        with safe_open(str(f), framework="flax") as reader:
            for key in reader.keys():
                out[key] = np.asarray(reader.get_tensor(key), np.float32)
    return out


def load_diffusers_weights(model: nnx.Module, state_dict: dict[str, np.ndarray]) -> nnx.Module:
    """Copies a diffusers state dict into `model`; every parameter must be matched exactly once."""
    return load_converted(model, dict(_convert_entry(k, v) for k, v in state_dict.items()))


def load_converted(model: nnx.Module, converted: dict[str, np.ndarray]) -> nnx.Module:
    """Copies arrays named by their dotted path in `model` ("down_blocks.0.conv1.kernel") into its
    parameters; every parameter must be matched exactly once, with its shape.

    `model` may be abstract (`models.abstract.abstract_model`), as the loaders build it."""
    state = nnx.state(model, nnx.Param)
    ours = _flatten(nnx.to_pure_dict(state))
    missing, unexpected = sorted(set(ours) - set(converted)), sorted(set(converted) - set(ours))
    if missing or unexpected:
        raise ValueError(f"weights do not fit the config: {len(missing)} missing "
                         f"{missing[:4]}, {len(unexpected)} unexpected {unexpected[:4]}")
    for name, value in converted.items():
        if name.endswith(".kernel") and value.ndim == 4 and ours[name].ndim == 2:
            value = value[0, 0]  # 1x1 conv weights of old attention blocks, as a linear kernel
        if value.shape != ours[name].shape:
            raise ValueError(f"weight {name}: shape {value.shape}, the config needs "
                             f"{ours[name].shape}")
        converted[name] = jnp.asarray(value)
    nnx.replace_by_pure_dict(state, _unflatten(converted))
    nnx.update(model, state)
    return model


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


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        out.update(_flatten(v, name + ".") if isinstance(v, dict) else {name: v})
    return out


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(int(p) if p.isdigit() else p, {})
        node[leaf] = value
    return tree
