"""Generates an attribute-labelled image data set (the main job).

    python -m sample.generate --out out/faces --num-images 1024 --seed 0 --batch-size 64 [--png]

Uses the embedded SynthFaces model unless --model points at a checkpoint bundle or a local diffusers
UNet2DModel folder (whose scheduler config sets the sampling defaults). Rerunning the same command
continues an interrupted run; an --out made with another config is refused.
"""

import argparse
import json
import sys

from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.errors import UserError
from dg_jax.generation import GenerateConfig, run


def parse_args(argv=None) -> GenerateConfig:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-images", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=1024, help="images per array_record shard")
    p.add_argument("--model", default="",
                   help="UNet bundle or diffusers folder (default: the embedded model)")
    p.add_argument("--classifier", default="",
                   help="labeller bundle (default: the embedded SynthFaces classifier); "
                        "'none' writes unlabelled images")
    p.add_argument("--steps", type=int, default=50, help="sampling steps")
    p.add_argument("--spacing", choices=["leading", "trailing", "linspace"],
                   help="timestep spacing (default: the model's)")
    p.add_argument("--steps-offset", type=int, help="offset of leading timesteps (default: model's)")
    p.add_argument("--method", dest="sampler_method", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--eta", type=float, default=1.0,
                   help="DDIM noise (1: as the original code; 0: deterministic)")
    p.add_argument("--clip-sample", type=float,
                   help="clip x0_hat to [-c, c] each step; 0: off, as the paper (default: the "
                        "model's; 1 for the embedded model)")
    p.add_argument("--png", action="store_true", help="also write OUT/png/<index>.png")
    a = p.parse_args(argv)
    try:
        sampler = SamplerConfig(num_steps=a.steps, method=a.sampler_method, eta=a.eta,
                                spacing=a.spacing, steps_offset=a.steps_offset,
                                clip_sample=a.clip_sample)
    except ValueError as e:
        raise UserError(str(e)) from None
    return GenerateConfig(out=a.out, num_images=a.num_images, seed=a.seed,
                          batch_size=a.batch_size, shard_size=a.shard_size, model=a.model,
                          classifier=a.classifier, sampler=sampler, png=a.png)


def main(argv=None) -> int:
    try:
        config = parse_args(argv)
        config.validate()
        manifest = run(config)
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: manifest[k] for k in ("num_images", "shares", "last_run")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
