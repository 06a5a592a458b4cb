"""Stable Diffusion's diffusers components (and whole pipeline folders) as ours.

`UNet2DConditionModel` maps onto our `UNet` with cross-attention levels and `AutoencoderKL` onto our
`AutoencoderKL`; options that change the math in ways we do not implement (SDXL's added
embeddings, class embeddings, dual cross-attention, ...) raise ValueError naming the option.
Weights go through `diffusers.load_diffusers_weights`, the same key map as UNet2DModel's.
"""

from __future__ import annotations

import json
import pathlib

from dg_jax.convert.clip import load_clip_text
from dg_jax.convert.diffusers import (
    block_attention,
    check_options,
    load_diffusers_weights,
    read_scheduler,
    shared_unet_fields,
    square_size,
)
from dg_jax.convert.state_dict import read_config, read_state_dict
from dg_jax.models.abstract import abstract_model
from dg_jax.models.config import ModelConfig
from dg_jax.models.stable_diffusion import StableDiffusion
from dg_jax.models.tokenizer import PromptTokenizer
from dg_jax.models.unet import UNet, UNetConfig
from dg_jax.models.vae import AutoencoderKL, VAEConfig

_DOWN_BLOCKS = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
_UP_BLOCKS = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}
_SD_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)  # diffusers' defaults
_SD_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3

# UNet2DConditionModel options: value(s) we support, or None where any value maps onto our config.
_UNET_COND_OPTIONS = {
    "sample_size": None, "in_channels": None, "out_channels": None, "center_input_sample": None,
    "flip_sin_to_cos": None, "freq_shift": None, "down_block_types": None,
    "mid_block_type": ("UNetMidBlock2DCrossAttn",), "up_block_types": None,
    "only_cross_attention": (False,), "block_out_channels": None, "layers_per_block": None,
    "downsample_padding": None, "mid_block_scale_factor": None,
    "dropout": None,  # inference only
    "act_fn": ("silu", "swish"), "norm_num_groups": None, "norm_eps": None,
    "cross_attention_dim": None, "transformer_layers_per_block": None,
    "reverse_transformer_layers_per_block": (None,), "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,), "attention_head_dim": None, "num_attention_heads": None,
    "dual_cross_attention": (False,),
    "use_linear_projection": None,  # 1x1 conv or linear: the same map, both convert
    "class_embed_type": (None,), "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,), "num_class_embeds": (None,), "upcast_attention": None,
    "resnet_time_scale_shift": ("default",), "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1.0,), "time_embedding_type": ("positional",),
    "time_embedding_dim": None, "time_embedding_act_fn": (None,), "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,), "conv_in_kernel": (3,), "conv_out_kernel": (3,),
    "projection_class_embeddings_input_dim": (None,), "attention_type": ("default",),
    "class_embeddings_concat": (False,), "mid_block_only_cross_attention": (None, False),
    "cross_attention_norm": (None,),
    "addition_embed_type_num_heads": None,  # unused without addition_embed_type
}


def unet_cond_config_from_diffusers(raw: dict, prediction_type: str = "epsilon",
                                    dtype: str = "float32") -> UNetConfig:
    """Our UNetConfig (cross-attention levels) for a diffusers UNet2DConditionModel config.json."""
    name = "UNet2DConditionModel"
    cfg = check_options(raw, _UNET_COND_OPTIONS, name)
    down = block_attention(cfg.get("down_block_types", _SD_DOWN), _DOWN_BLOCKS, "down_block_types")
    up = block_attention(cfg.get("up_block_types", _SD_UP), _UP_BLOCKS, "up_block_types")
    levels = len(down)
    # diffusers' `attention_head_dim` is the number of heads when num_attention_heads is unset
    # (a naming slip kept for old configs).
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
    layers = cfg.get("layers_per_block", 2)
    if not isinstance(layers, int):
        raise ValueError(f"unsupported {name} option layers_per_block={layers!r} (one int)")
    context_dim = cfg.get("cross_attention_dim", 1280)
    if not isinstance(context_dim, int):
        raise ValueError(f"unsupported {name} option cross_attention_dim={context_dim!r} (one int)")
    return UNetConfig(
        sample_size=square_size(cfg, name),
        in_channels=cfg.get("in_channels", 4),
        out_channels=cfg.get("out_channels", 4),
        block_out_channels=tuple(cfg.get("block_out_channels", (320, 640, 1280, 1280))),
        layers_per_block=layers,
        down_attention=down,
        up_attention=up,
        attention_head_dim=None,
        **shared_unet_fields(cfg),
        cross_attention_dim=context_dim,
        num_attention_heads=per_level(heads, levels, "attention_head_dim", name),
        transformer_layers_per_block=per_level(cfg.get("transformer_layers_per_block", 1), levels,
                                               "transformer_layers_per_block", name),
        upcast_attention=bool(cfg.get("upcast_attention", False)),
        prediction_type=prediction_type,
        dtype=dtype,
    )


def per_level(value, levels: int, option: str, class_name: str) -> tuple[int, ...]:
    """An int for every level, or a list with one int per level -> a tuple of `levels` ints."""
    if isinstance(value, int):
        return (value,) * levels
    if isinstance(value, list | tuple) and len(value) == levels and all(
            isinstance(v, int) for v in value):
        return tuple(value)
    raise ValueError(f"unsupported {class_name} option {option}={value!r} (an int or one per "
                     f"level, {levels} levels)")


_VAE_OPTIONS = {
    "in_channels": None, "out_channels": None, "down_block_types": None, "up_block_types": None,
    "block_out_channels": None, "layers_per_block": None, "act_fn": ("silu", "swish"),
    "latent_channels": None, "norm_num_groups": None,
    "sample_size": None,  # the tiling size: we do not tile
    "scaling_factor": None, "shift_factor": None, "latents_mean": (None,), "latents_std": (None,),
    "force_upcast": None,  # a float16 workaround; our parameters are float32
    "use_quant_conv": None, "use_post_quant_conv": None, "mid_block_add_attention": None,
}


def vae_config_from_diffusers(raw: dict, dtype: str = "float32") -> VAEConfig:
    """Our VAEConfig for a diffusers AutoencoderKL config.json."""
    name = "AutoencoderKL"
    cfg = check_options(raw, _VAE_OPTIONS, name)
    chans = tuple(cfg.get("block_out_channels", (64,)))
    for option, block in (("down_block_types", "DownEncoderBlock2D"),
                          ("up_block_types", "UpDecoderBlock2D")):
        types = cfg.get(option, (block,))
        if list(types) != [block] * len(chans):
            raise ValueError(f"unsupported {name} option {option}={types!r} (supported: "
                             f"{block} for each of the {len(chans)} levels)")
    return VAEConfig(
        in_channels=cfg.get("in_channels", 3),
        out_channels=cfg.get("out_channels", 3),
        block_out_channels=chans,
        layers_per_block=cfg.get("layers_per_block", 1),
        latent_channels=cfg.get("latent_channels", 4),
        norm_num_groups=cfg.get("norm_num_groups", 32),
        mid_block_add_attention=cfg.get("mid_block_add_attention", True),
        use_quant_conv=cfg.get("use_quant_conv", True),
        use_post_quant_conv=cfg.get("use_post_quant_conv", True),
        scaling_factor=float(cfg.get("scaling_factor", 0.18215)),
        shift_factor=float(cfg.get("shift_factor") or 0.0),
        dtype=dtype,
    )


def load_unet_cond(folder, prediction_type: str = "epsilon", dtype: str = "float32") -> UNet:
    """A UNet2DConditionModel folder (config.json + weights) as our cross-attention UNet."""
    raw = read_config(folder, "UNet2DConditionModel")
    config = unet_cond_config_from_diffusers(raw, prediction_type, dtype)
    model = abstract_model(UNet, config)
    return load_diffusers_weights(model, read_state_dict(folder))


def load_vae(folder, dtype: str = "float32") -> AutoencoderKL:
    """An AutoencoderKL folder (config.json + weights) as our AutoencoderKL."""
    config = vae_config_from_diffusers(read_config(folder, "AutoencoderKL"), dtype)
    model = abstract_model(AutoencoderKL, config)
    return load_diffusers_weights(model, read_state_dict(folder))


def load_stable_diffusion(folder, dtype: str = "float32") -> tuple[StableDiffusion, ModelConfig]:
    """A diffusers Stable Diffusion pipeline folder (model_index.json with unet, vae,
    text_encoder, tokenizer, scheduler) -> (StableDiffusion, ModelConfig with the UNet config,
    the training schedule and the scheduler's sampling defaults)."""
    folder = pathlib.Path(folder)
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise FileNotFoundError(f"no Stable Diffusion pipeline at {folder} (no model_index.json)")
    index = json.loads(index_file.read_text())
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if part not in index:
            raise ValueError(f"{folder}: model_index.json names no {part!r}; a Stable Diffusion "
                             "pipeline needs unet, vae, text_encoder, tokenizer and scheduler")
    schedule, sampling, prediction_type = read_scheduler(folder / "scheduler")
    unet = load_unet_cond(folder / "unet", prediction_type, dtype)
    text_encoder = load_clip_text(folder / "text_encoder", dtype)
    tokenizer = PromptTokenizer(folder / "tokenizer", text_encoder.config.max_position_embeddings)
    sd = StableDiffusion(unet, load_vae(folder / "vae", dtype), text_encoder, tokenizer)
    return sd, ModelConfig(unet.config, schedule, sampling)
