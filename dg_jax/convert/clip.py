"""Read local transformers CLIP folders (config.json + model.safetensors) into our Flax CLIP.

    text = load_clip_text("sd-v1-5/text_encoder")    # CLIPTextModel (or ...WithProjection)
    clip = load_clip("clip-vit-large-patch14")       # CLIPModel: both towers, zero-shot labels

Weights are mapped by name (Linear weights transposed, the patch conv OIHW -> HWIO); every
parameter must be matched exactly once, as for diffusers models.
"""

from __future__ import annotations

import pathlib

import numpy as np

from dg_jax.convert.state_dict import load_converted, read_config, read_state_dict
from dg_jax.models.abstract import abstract_model
from dg_jax.models.clip import CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig

_TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps",
                "eos_token_id")
_VISION_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps")


def _pick(raw: dict, fields: tuple[str, ...], **extra) -> dict:
    return {k: raw[k] for k in fields if raw.get(k) is not None} | extra


def load_clip_text(folder, dtype: str = "float32") -> CLIPTextModel:
    """A CLIPTextModel / CLIPTextModelWithProjection folder (Stable Diffusion's text_encoder/)."""
    folder = pathlib.Path(folder)
    raw = read_config(folder, what="CLIP model")
    state = read_state_dict(folder, "model")
    projection = state.get("text_projection.weight")
    config = CLIPTextConfig(**_pick(raw, _TEXT_FIELDS, dtype=dtype, projection_dim=None if
                                    projection is None else projection.shape[0]))
    model = abstract_model(CLIPTextModel, config)
    return load_converted(model, _convert(state, lambda k: k.removeprefix("text_model.")))


def load_clip(folder, dtype: str = "float32") -> CLIPModel:
    """A CLIPModel folder (both towers, projections, logit scale)."""
    folder = pathlib.Path(folder)
    raw = read_config(folder, what="CLIP model")
    dim = raw.get("projection_dim", 512)
    text = CLIPTextConfig(**_pick(raw.get("text_config", {}), _TEXT_FIELDS, dtype=dtype,
                                  projection_dim=dim))
    vision = CLIPVisionConfig(**_pick(raw.get("vision_config", {}), _VISION_FIELDS, dtype=dtype,
                                      projection_dim=dim))
    model = abstract_model(CLIPModel, text, vision)
    moves = {"text_projection.": "text_model.text_projection.",
             "visual_projection.": "vision_model.visual_projection."}

    def rename(key: str) -> str:
        for old, new in moves.items():
            if key.startswith(old):
                return new + key[len(old):]
        return key

    return load_converted(model, _convert(read_state_dict(folder, "model"), rename))


def _convert(state: dict[str, np.ndarray], rename) -> dict[str, np.ndarray]:
    """transformers keys -> our dotted parameter names and layouts."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):  # a buffer older checkpoints saved
            continue
        name = rename(key)
        stem, _, leaf = name.rpartition(".")
        if leaf == "bias":
            out[name] = value
        elif leaf != "weight":  # class_embedding, logit_scale
            out[name] = value
        elif value.ndim == 4:  # the patch embedding conv, a bare parameter here
            out[stem] = value.transpose(2, 3, 1, 0)
        elif stem.endswith("_embedding"):  # token / position tables (nnx.Embed)
            out[f"{stem}.embedding"] = value
        elif value.ndim == 2:
            out[f"{stem}.kernel"] = value.T
        else:
            out[f"{stem}.scale"] = value
    return out
