"""Time per sampling step: unguided vs distribution guidance vs the baselines, side by side.

    python -m bench.guidance_overhead [--adp PATH] [--batch-size 64] [--steps 50] [--rounds 5]

Every sampler is compiled first, then the samplers take turns for --rounds rounds (so a busy
machine slows them alike) and the median time per step of each is compared with the unguided one.
Without --adp, an untrained ADP of the default architecture stands in (the cost does not depend on
its weights). Distribution guidance runs with the default posterior power acting on the target.
"""

import argparse

import jax
import numpy as np
from flax import nnx

from bench.timing import median_seconds_in_turns
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.samplers import sample_keys
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.guidance.methods import DistributionGuidance, SampleLevelGuidance
from dg_jax.guidance.targets import parse_target
from dg_jax.loading import load_adp, load_classifier, load_unet
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.sampling import make_sampler
from dg_jax.wrappers import ImageGuidance


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="")
    p.add_argument("--adp", default="")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--target", default="hair=0.5,0.5")
    p.add_argument("--with-image", action=argparse.BooleanOptionalAction, default=True,
                   help="also time image-space guidance (slow: a UNet backward pass per step)")
    a = p.parse_args()
    unet, model_config = load_unet(a.model or None)
    if a.adp:
        adp = load_adp(a.adp)
    else:
        adp = ADP(ADPConfig(attributes=(("hair", 2), ("glasses", 2), ("skin", 3), ("smile", 2)),
                            h_shape=unet.config.h_shape), rngs=nnx.Rngs(0))
    targets = [parse_target(a.target, adp.config.num_classes)]
    sampler = SamplerConfig(num_steps=a.steps)
    guidance = GuidanceConfig(scale=1.0)
    # every attribute read well enough for the default posterior power to act, as on the
    # embedded ADP's hair (its cost does not depend on the figures either)
    accuracy = dict.fromkeys(adp.config.num_classes, 1.0)
    methods = {"unguided": None,
               "distribution": DistributionGuidance(adp, targets, guidance, accuracy=accuracy),
               "sample-level": SampleLevelGuidance(adp, targets, guidance)}
    if a.with_image:
        methods["image-space"] = ImageGuidance(load_classifier(), targets, guidance)
    samplers = {name: make_sampler(unet, model_config, sampler, g).jitted()
                for name, g in methods.items()}
    seconds = median_seconds_in_turns(
        samplers, lambda r: (sample_keys(r, np.arange(a.batch_size)),), a.rounds)
    per_step = {name: s / a.steps for name, s in seconds.items()}
    base = per_step["unguided"]
    print(f"batch {a.batch_size}, {a.steps} steps, {a.rounds} rounds, {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s)")
    print("| sampler | ms per step (median) | ratio to unguided |")
    print("|---|---|---|")
    for name, t in per_step.items():
        print(f"| {name} | {1000 * t:.1f} | {t / base:.3f} |")


if __name__ == "__main__":
    main()
