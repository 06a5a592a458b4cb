"""guided-diffusion's own UNet (../shared/oracles, for comparisons only) with random weights."""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from dg_jax.convert.guided_diffusion import read_flags

ORACLES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "oracles"
# create_model's arguments among the flags
MODEL_FLAGS = ("image_size", "num_channels", "num_res_blocks", "channel_mult", "learn_sigma",
               "class_cond", "attention_resolutions", "num_heads", "num_head_channels",
               "num_heads_upsample", "use_scale_shift_norm", "dropout", "resblock_updown",
               "use_fp16", "use_new_attention_order")


def import_oracle():
    """The guided_diffusion package from ../shared/oracles (needs torch)."""
    if not (ORACLES / "guided_diffusion").is_dir():
        raise FileNotFoundError(f"no guided_diffusion reference at {ORACLES}")
    if str(ORACLES) not in sys.path:
        sys.path.insert(0, str(ORACLES))
    import guided_diffusion

    return guided_diffusion


def reference_model(flags: str | dict, seed: int = 0):
    """guided-diffusion's UNetModel for a preset or flags, in eval mode, with every parameter
    random (its zero-initialised output layers would hide errors): weights ~ N(0, 1/fan_in),
    norm scales ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.1^2)."""
    import torch

    import_oracle()
    from guided_diffusion.script_util import create_model

    full = read_flags(flags)
    model = create_model(**{k: full[k] for k in MODEL_FLAGS}).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim > 1:
                p.copy_(noise / np.sqrt(p[0].numel()))
            else:  # the only 1-D weights are GroupNorm scales
                p.copy_(noise * 0.1 + (1.0 if name.endswith(".weight") else 0.0))
    return model


def reference_forward(model, x_nchw: np.ndarray, t: np.ndarray):
    """(output [B, C, H, W], middle_block output h [B, C, h, w]) of the reference, numpy."""
    import torch

    seen = {}
    hook = model.middle_block.register_forward_hook(lambda m, i, o: seen.__setitem__("h", o))
    with torch.no_grad():
        out = model(torch.from_numpy(x_nchw), torch.from_numpy(t))
    hook.remove()
    return out.numpy(), seen["h"].numpy()
