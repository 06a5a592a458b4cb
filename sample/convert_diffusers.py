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

from dg_jax.flags import add_model_config_flag
from dg_jax.loading import load_unet, save_unet


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="diffusers pipeline folder or UNet2DModel folder, or a "
                   "guided-diffusion checkpoint (.pt, .safetensors)")
    add_model_config_flag(p)
    p.add_argument("dest", help="bundle folder to create (must not exist)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="storage dtype of the parameters (restored as float32)")
    a = p.parse_args(argv)
    if pathlib.Path(a.dest).exists():
        print(f"error: {a.dest} exists; choose a new destination", file=sys.stderr)
        return 2
    try:
        model, config = load_unet(a.source, a.model_config or None)
    except (ValueError, ImportError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_unet(a.dest, model, config, a.dtype,
              extra={"source": str(pathlib.Path(a.source).absolute())})
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(f"wrote {a.dest}: {params / 1e6:.2f} M parameters, {config.unet.sample_size} px, "
          f"h {config.unet.h_shape}, {config.schedule.beta_schedule} schedule, "
          f"prediction {config.unet.prediction_type}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
