"""Converts a local diffusers UNet2DModel (pipeline or model folder), or a guided-diffusion
checkpoint with its --model-config, into a dg-jax UNet bundle.

    python -m sample.convert_diffusers ddpm-celebahq-256 models/celebahq [--dtype float32]
    python -m sample.convert_diffusers celebahq_p2.pt models/celebahq_p2 --model-config celebahq_p2

The bundle (orbax params + config.json with the schedule and sampling defaults of the scheduler
config) loads faster than the diffusers folder and without safetensors; `--model models/celebahq`
then works everywhere a UNet is taken. An existing destination is never overwritten.
"""

import dataclasses
import pathlib
import sys
from typing import Literal

import jax
from flax import nnx

from dg_jax.configs import option
from dg_jax.errors import UserError, template_of
from dg_jax.flags import main_for
from dg_jax.loading import load_unet, model_config_option, save_unet


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    source: str = option("", "diffusers pipeline folder or UNet2DModel folder, or a "
                             "guided-diffusion checkpoint (.pt, .safetensors)", positional=True)
    dest: str = option("", "bundle folder to create (must not exist)", positional=True)
    model_config: str = model_config_option()
    dtype: Literal["float32", "bfloat16", "float16"] = option(
        "float32", "storage dtype of the parameters (restored as float32)")


def convert(config: ConvertConfig) -> None:
    if pathlib.Path(config.dest).exists():
        raise UserError(f"{config.dest} exists; choose a new destination")
    try:
        model, model_config = load_unet(config.source, config.model_config or None)
    except (ValueError, ImportError) as e:  # e.g. a checkpoint that does not fit its config
        raise UserError(template_of(e)) from None
    save_unet(config.dest, model, model_config, config.dtype,
              extra={"source": str(pathlib.Path(config.source).absolute())})
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    unet = model_config.unet
    print(f"wrote {config.dest}: {params / 1e6:.2f} M parameters, {unet.sample_size} px, "
          f"h {unet.h_shape}, {model_config.schedule.beta_schedule} schedule, "
          f"prediction {unet.prediction_type}")


def main(argv=None) -> int:
    return main_for(ConvertConfig, convert, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
