"""openai/guided-diffusion (ADM) checkpoints as our UNet: P2-weighting's face models, ADM's
ImageNet model, and any `create_model` configuration.

    unet, config = load_adm_unet("celebahq_p2.pt", "celebahq_p2")   # or "flags.json"

A checkpoint is a plain state dict; its architecture is not in it, so it comes as guided-diffusion's
`create_model` flags: a named preset (`PRESETS`) or a JSON file with the flags a model was trained
with (as on its training command line), plus the diffusion flags (diffusion_steps, noise_schedule,
timestep_respacing, ...). The ADM layout maps onto our UNet as it is: scale-shift norm, ResBlock
up/down sampling (`resblock_updown`), fixed head counts or head widths, and the learned variance
(`variance_type="learned_range"`); h is the output of ADM's `middle_block`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile

import numpy as np
from etils import epath

from dg_jax.convert.state_dict import load_converted, parameter_shapes, read_safetensors
from dg_jax.diffusion.respacing import respaced_steps
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.models.abstract import abstract_model
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet, UNetConfig

# create_model's own defaults, and the diffusion flags that come with a model.
FLAG_DEFAULTS = dict(
    image_size=64, num_channels=128, num_res_blocks=2, channel_mult="", learn_sigma=False,
    class_cond=False, attention_resolutions="16", num_heads=1, num_head_channels=-1,
    num_heads_upsample=-1, use_scale_shift_norm=False, dropout=0.0, resblock_updown=False,
    use_fp16=False, use_new_attention_order=False, use_checkpoint=False,
    diffusion_steps=1000, noise_schedule="linear", timestep_respacing="", predict_xstart=False,
    rescale_timesteps=False, use_kl=False, rescale_learned_sigmas=False, sigma_small=False,
)

# The published flags: P2-weighting's README (all four: the 93 M "light ADM" at 256 px) and ADM's
# README for its unconditional ImageNet 256 model.
_P2 = dict(image_size=256, num_channels=128, num_res_blocks=1, attention_resolutions="16",
           num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True,
           learn_sigma=True, noise_schedule="linear", diffusion_steps=1000)
PRESETS = {
    "celebahq_p2": _P2,
    "ffhq_p2": _P2,
    "afhqdog_p2": _P2,
    "metfaces_p2": _P2,
    "imagenet256_uncond": dict(image_size=256, num_channels=256, num_res_blocks=2,
                               attention_resolutions="32,16,8", num_head_channels=64,
                               resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True,
                               noise_schedule="linear", diffusion_steps=1000, use_fp16=True),
}

# create_model's channel multipliers when channel_mult is "".
_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


def read_flags(model_config: str | dict) -> dict:
    """A preset name, a JSON file of create_model / diffusion flags, or such a dict -> every flag
    (the unset ones at create_model's defaults). Unknown flags and presets raise ValueError."""
    if isinstance(model_config, dict):
        given = model_config
    elif model_config in PRESETS:
        given = PRESETS[model_config]
    elif str(model_config).endswith(".json"):
        path = epath.Path(model_config)
        if not path.is_file():
            raise FileNotFoundError(f"no model config at {path}")
        try:
            given = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"model config {path} is not valid JSON: {e}") from None
    else:
        raise ValueError(f"unknown model config {model_config!r}: a preset "
                         f"({', '.join(PRESETS)}) or a JSON file of guided-diffusion flags")
    unknown = sorted(set(given) - set(FLAG_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown guided-diffusion flag {unknown[0]!r} in the model config")
    return {**FLAG_DEFAULTS, **given}


def unet_config(flags: dict, dtype: str = "float32") -> UNetConfig:
    """Our UNetConfig for guided-diffusion's create_model flags (all of them, `read_flags`)."""
    f = flags
    if f["class_cond"]:
        raise ValueError("class-conditional guided-diffusion models (class_cond) are not "
                         "supported; use an unconditional checkpoint")
    if f["channel_mult"]:
        mult = tuple(float(m) for m in str(f["channel_mult"]).split(","))
    elif f["image_size"] in _CHANNEL_MULT:
        mult = _CHANNEL_MULT[f["image_size"]]
    else:
        raise ValueError(f"no default channel_mult for image_size {f['image_size']}; give "
                         "channel_mult (512 px models start at 0.5, which is not supported)")
    if mult[0] != 1 or any(m != int(m) for m in mult):
        raise ValueError(f"channel_mult {f['channel_mult'] or mult} must be whole numbers "
                         "starting at 1 (our time embedding is as wide as the first level)")
    mult = tuple(int(m) for m in mult)
    attention_at = {f["image_size"] // int(r) for r in str(f["attention_resolutions"]).split(",")}
    levels = len(mult)
    fixed_heads = f["num_head_channels"] == -1
    up_heads = f["num_heads_upsample"] if f["num_heads_upsample"] != -1 else f["num_heads"]
    return UNetConfig(
        sample_size=f["image_size"], in_channels=3, out_channels=6 if f["learn_sigma"] else 3,
        block_out_channels=tuple(m * f["num_channels"] for m in mult),
        layers_per_block=f["num_res_blocks"],
        down_attention=tuple(2**level in attention_at for level in range(levels)),
        mid_attention=True,
        attention_head_dim=None if fixed_heads else f["num_head_channels"],
        num_attention_heads=(f["num_heads"],) * levels if fixed_heads else None,
        up_attention_heads=(up_heads,) * levels if fixed_heads else None,
        norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if f["use_scale_shift_norm"] else "default",
        flip_sin_to_cos=True, freq_shift=0.0, resblock_updown=bool(f["resblock_updown"]),
        prediction_type="sample" if f["predict_xstart"] else "epsilon",
        variance_type="learned_range" if f["learn_sigma"] else "fixed",
        dtype=dtype,
    )


def adm_model_config(model_config: str | dict, dtype: str = "float32") -> ModelConfig:
    """(UNet, training schedule, sampling defaults) of a preset or JSON flags.

    Sampling defaults: guided-diffusion's x0 clipping to [-1, 1] (clip_denoised), its
    timestep_respacing if the flags give one, else 50 steps from t = T - 1 to 0 (linspace: the
    paper's schedule)."""
    f = read_flags(model_config)
    steps = f["diffusion_steps"]
    if f["rescale_timesteps"] and steps != 1000:
        raise ValueError("rescale_timesteps with diffusion_steps != 1000 is not supported")
    if f["noise_schedule"] == "linear":  # guided-diffusion scales DDPM's betas to the step count
        schedule = ScheduleConfig(steps, "linear", 1e-4 * 1000 / steps, 0.02 * 1000 / steps)
    elif f["noise_schedule"] == "cosine":
        schedule = ScheduleConfig(steps, "cosine")
    else:
        raise ValueError(f"unknown noise_schedule {f['noise_schedule']!r}; use linear or cosine")
    respacing = f["timestep_respacing"]
    sampling = SamplerConfig(num_steps=respaced_steps(respacing) if respacing else 50,
                             spacing=respacing or "linspace", steps_offset=0, clip_sample=1.0,
                             set_alpha_to_one=True)
    return ModelConfig(unet_config(f, dtype), schedule, sampling)


def read_adm_state_dict(path) -> dict[str, np.ndarray]:
    """A guided-diffusion checkpoint (.pt state dict, or the same tensors as .safetensors; local
    or gs://) as float32 numpy arrays (fp16 checkpoints included)."""
    path = epath.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        if "://" not in str(path):
            return read_safetensors([path])
        with tempfile.TemporaryDirectory() as tmp:  # safetensors reads local files only
            local = pathlib.Path(tmp) / path.name
            local.write_bytes(path.read_bytes())
            return read_safetensors([local])
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path} is a PyTorch checkpoint and needs torch to read; install "
                          "torch, or convert it to .safetensors") from None
    with path.open("rb") as f:  # streamed, local or remote: no second copy in memory
        state = torch.load(f, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(hasattr(v, "float") for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    return {k: v.float().numpy() for k, v in state.items()}


@dataclasses.dataclass(frozen=True)
class _Tensor:
    """One checkpoint tensor: its shape there, and how it becomes our parameter(s)."""

    shape: tuple[int, ...]
    convert: object  # array -> {our name: array}


def _conv(adm: str, ours: str, shapes: dict) -> dict[str, _Tensor]:
    k, _, cin, cout = shapes[f"{ours}.kernel"]
    return {f"{adm}.weight": _Tensor((cout, cin, k, k), lambda w: {
                f"{ours}.kernel": w.transpose(2, 3, 1, 0)}),
            f"{adm}.bias": _Tensor((cout,), lambda b: {f"{ours}.bias": b})}


def _linear(adm: str, ours: str, shapes: dict, conv1d: bool = False) -> dict[str, _Tensor]:
    """A linear layer (or a 1x1 Conv1d: weight [out, in, 1]) -> kernel [in, out]."""
    cin, cout = shapes[f"{ours}.kernel"]
    tail = (1,) if conv1d else ()
    return {f"{adm}.weight": _Tensor((cout, cin) + tail, lambda w: {
                f"{ours}.kernel": w.reshape(cout, cin).T}),
            f"{adm}.bias": _Tensor((cout,), lambda b: {f"{ours}.bias": b})}


def _norm(adm: str, ours: str, shapes: dict) -> dict[str, _Tensor]:
    (c,) = shapes[f"{ours}.scale"]
    return {f"{adm}.weight": _Tensor((c,), lambda w: {f"{ours}.scale": w}),
            f"{adm}.bias": _Tensor((c,), lambda b: {f"{ours}.bias": b})}


def _resblock(adm: str, ours: str, shapes: dict) -> dict[str, _Tensor]:
    out = {**_norm(f"{adm}.in_layers.0", f"{ours}.norm1", shapes),
           **_conv(f"{adm}.in_layers.2", f"{ours}.conv1", shapes),
           **_linear(f"{adm}.emb_layers.1", f"{ours}.time_emb_proj", shapes),
           **_norm(f"{adm}.out_layers.0", f"{ours}.norm2", shapes),
           **_conv(f"{adm}.out_layers.3", f"{ours}.conv2", shapes)}
    if f"{ours}.conv_shortcut.kernel" in shapes:
        out.update(_conv(f"{adm}.skip_connection", f"{ours}.conv_shortcut", shapes))
    return out


def _attention(adm: str, ours: str, shapes: dict, heads: int, new_order: bool) -> dict:
    """qkv (a Conv1d to 3C channels) split into our to_q / to_k / to_v. The legacy order holds
    each head's q, k, v together ([heads, 3, C/heads]); the new order all q, then k, then v
    ([3, heads, C/heads]). Our heads are contiguous blocks of C/heads features, head-major."""
    c = shapes[f"{ours}.to_q.kernel"][0]
    layout = (3, heads, c // heads) if new_order else (heads, 3, c // heads)
    part = 0 if new_order else 1  # the axis that picks q, k or v

    def split(x):  # [3C, ...] -> q, k, v as [C, ...]
        x = x.reshape(layout + x.shape[1:])
        return [np.take(x, i, axis=part).reshape((c,) + x.shape[3:]) for i in range(3)]

    names = ("to_q", "to_k", "to_v")
    return {**_norm(f"{adm}.norm", f"{ours}.group_norm", shapes),
            f"{adm}.qkv.weight": _Tensor((3 * c, c, 1), lambda w: {
                f"{ours}.{n}.kernel": p.T for n, p in zip(names, split(w[:, :, 0]))}),
            f"{adm}.qkv.bias": _Tensor((3 * c,), lambda b: {
                f"{ours}.{n}.bias": p for n, p in zip(names, split(b))}),
            **_linear(f"{adm}.proj_out", f"{ours}.to_out", shapes, conv1d=True)}


def adm_tensors(config: UNetConfig, new_order: bool, shapes: dict) -> dict[str, _Tensor]:
    """Every tensor an ADM checkpoint of this architecture holds, by its state-dict key, in
    guided-diffusion's module order. shapes: our parameters' shapes by dotted name."""
    c, levels = config, len(config.block_out_channels)

    def attention(adm, ours, level, up=False):
        heads = c.attention_heads(c.block_out_channels[level], level, up)
        return _attention(adm, ours, shapes, heads, new_order)

    out = {**_linear("time_embed.0", "time_embedding.linear_1", shapes),
           **_linear("time_embed.2", "time_embedding.linear_2", shapes),
           **_conv("input_blocks.0.0", "conv_in", shapes)}
    block = 1
    for level in range(levels):
        for j in range(c.layers_per_block):
            out.update(_resblock(f"input_blocks.{block}.0", f"down_blocks.{level}.resnets.{j}",
                                 shapes))
            if c.down_attention[level]:
                out.update(attention(f"input_blocks.{block}.1",
                                     f"down_blocks.{level}.attentions.{j}", level))
            block += 1
        if level < levels - 1:
            ours = f"down_blocks.{level}.downsampler"
            out.update(_resblock(f"input_blocks.{block}.0", ours, shapes) if c.resblock_updown
                       else _conv(f"input_blocks.{block}.0.op", f"{ours}.conv", shapes))
            block += 1
    out.update({**_resblock("middle_block.0", "mid_resnet_1", shapes),
                **attention("middle_block.1", "mid_attention", levels - 1),
                **_resblock("middle_block.2", "mid_resnet_2", shapes)})
    block = 0
    for i, level in enumerate(reversed(range(levels))):
        for j in range(c.layers_per_block + 1):
            adm, ours = f"output_blocks.{block}", f"up_blocks.{i}"
            out.update(_resblock(f"{adm}.0", f"{ours}.resnets.{j}", shapes))
            index = 1
            if c.up_attention_levels[i]:
                out.update(attention(f"{adm}.1", f"{ours}.attentions.{j}", level, up=True))
                index = 2
            if level > 0 and j == c.layers_per_block:
                out.update(_resblock(f"{adm}.{index}", f"{ours}.upsampler", shapes)
                           if c.resblock_updown
                           else _conv(f"{adm}.{index}.conv", f"{ours}.upsampler.conv", shapes))
            block += 1
    out.update({**_norm("out.0", "conv_norm_out", shapes), **_conv("out.2", "conv_out", shapes)})
    return out


def load_adm_weights(model: UNet, state_dict: dict[str, np.ndarray],
                     new_attention_order: bool = False) -> UNet:
    """Copies a guided-diffusion state dict into `model` (abstract or not). The first key that
    is missing, unexpected or of another shape raises ValueError naming it (and both shapes)."""
    expected = adm_tensors(model.config, new_attention_order, parameter_shapes(model))
    if "label_emb.weight" in state_dict:
        raise ValueError("the checkpoint is class-conditional (label_emb.weight); only "
                         "unconditional guided-diffusion models are supported")
    for key, tensor in expected.items():
        if key not in state_dict:
            raise ValueError(f"the checkpoint lacks {key} {tensor.shape}, which the model "
                             "config needs: is it the right preset or JSON?")
        if tuple(state_dict[key].shape) != tensor.shape:
            raise ValueError(f"{key}: shape {tuple(state_dict[key].shape)} in the checkpoint, "
                             f"{tensor.shape} in the model config")
    for key in state_dict:
        if key not in expected:
            raise ValueError(f"the checkpoint has {key} {tuple(state_dict[key].shape)}, which "
                             "the model config does not: is it the right preset or JSON?")
    converted = {}
    for key, tensor in expected.items():
        converted.update(tensor.convert(np.asarray(state_dict[key], np.float32)))
    return load_converted(model, converted)


def load_adm_unet(path, model_config: str | dict, dtype: str = "float32"
                  ) -> tuple[UNet, ModelConfig]:
    """A guided-diffusion checkpoint file and its flags (a preset name, a JSON file or a dict)
    -> (our UNet, built abstractly and filled; its ModelConfig). dtype: the compute dtype."""
    flags = read_flags(model_config)
    config = adm_model_config(flags, dtype)
    model = abstract_model(UNet, config.unet)
    state = read_adm_state_dict(path)
    return load_adm_weights(model, state, flags["use_new_attention_order"]), config
