"""Converts a local diffusers UNet2DModel (pipeline or model folder), or a guided-diffusion
checkpoint with its --model-config, into a dg-jax UNet bundle.

    python -m sample.convert_diffusers ddpm-celebahq-256 models/celebahq [--dtype float32]
    python -m sample.convert_diffusers celebahq_p2.pt models/celebahq_p2 --model-config celebahq_p2

The bundle (orbax params + config.json with the schedule and sampling defaults of the scheduler
config) loads faster than the diffusers folder and without safetensors; `--model models/celebahq`
then works everywhere a UNet is taken. An existing destination is never overwritten.
"""

import argparse
import pathlib
import sys

import jax
from flax import nnx

from dg_jax.errors import UserError, template_of
from dg_jax.flags import run_cli
from dg_jax.loading import load_unet, model_config_option, save_unet


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="diffusers pipeline folder or UNet2DModel folder, or a "
                   "guided-diffusion checkpoint (.pt, .safetensors)")
    p.add_argument("dest", help="bundle folder to create (must not exist)")
    p.add_argument("--model-config", default="", help=model_config_option().metadata["help"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="storage dtype of the parameters (restored as float32)")

    def convert():
        a = p.parse_args(argv)
        if pathlib.Path(a.dest).exists():
            raise UserError(f"{a.dest} exists; choose a new destination")
        try:
            model, config = load_unet(a.source, a.model_config or None)
        except (ValueError, ImportError) as e:  # e.g. a checkpoint that does not fit its config
            raise UserError(template_of(e)) from None
        save_unet(a.dest, model, config, a.dtype,
                  extra={"source": str(pathlib.Path(a.source).absolute())})
        params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        print(f"wrote {a.dest}: {params / 1e6:.2f} M parameters, {config.unet.sample_size} px, "
              f"h {config.unet.h_shape}, {config.schedule.beta_schedule} schedule, "
              f"prediction {config.unet.prediction_type}")

    return run_cli(p, convert)


if __name__ == "__main__":
    sys.exit(main())
