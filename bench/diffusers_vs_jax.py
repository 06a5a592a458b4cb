"""Images/s of our jit-compiled DDIM loop vs diffusers' PyTorch DDIMPipeline, same UNet weights.

    python -m bench.diffusers_vs_jax [--size 64] [--batch-size 4] [--steps 25] [--repeats 2]

A random UNet2DModel of a real layout (4 levels, attention at the two lowest resolutions) is built
in PyTorch, saved, and converted with `from_diffusers`; both sides then run deterministic DDIM
(eta 0, no clipping) on the same batch size and step count, one after the other in this process.
Times exclude compilation / warm-up (reported separately); the best of --repeats runs counts.
Needs the [test] extra (torch, diffusers).
"""

import argparse
import json
import tempfile
import time

import jax
import numpy as np
import torch
from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.samplers import sample_keys
from dg_jax.loading import from_diffusers
from dg_jax.sampling import make_sampler


def unet_config(size: int) -> dict:
    return dict(sample_size=size, block_out_channels=(64, 128, 256, 256), layers_per_block=2,
                down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                                  "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                attention_head_dim=32, norm_num_groups=32)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)

    torch.manual_seed(0)
    unet = UNet2DModel(**unet_config(a.size)).eval()
    scheduler = DDIMScheduler(clip_sample=False)
    pipe = DDIMPipeline(unet=unet, scheduler=scheduler)
    with tempfile.TemporaryDirectory() as folder:
        pipe.save_pretrained(folder)
        model, config = from_diffusers(folder)
    params = sum(p.numel() for p in unet.parameters())

    def run_torch():
        with torch.no_grad():
            pipe(batch_size=a.batch_size, num_inference_steps=a.steps, eta=0.0, output_type="np",
                 generator=torch.Generator().manual_seed(0))

    start = time.perf_counter()
    pipe.set_progress_bar_config(disable=True)
    run_torch()
    torch_warmup = time.perf_counter() - start
    torch_s = best_time(run_torch, a.repeats)

    sample = make_sampler(model, config,
                          SamplerConfig(num_steps=a.steps, eta=0.0, clip_sample=0)).jitted()
    keys = sample_keys(0, np.arange(a.batch_size))
    start = time.perf_counter()
    jax.block_until_ready(sample(keys)[0])
    jax_compile = time.perf_counter() - start
    jax_s = best_time(lambda: jax.block_until_ready(sample(keys)[0]), a.repeats)

    result = {
        "unet": f"UNet2DModel {a.size}x{a.size}, channels (64, 128, 256, 256), "
                f"{params / 1e6:.1f} M parameters",
        "batch_size": a.batch_size, "steps": a.steps,
        "torch_threads": torch.get_num_threads(), "jax_devices": str(jax.devices()),
        "diffusers_img_s": round(a.batch_size / torch_s, 3),
        "dg_jax_img_s": round(a.batch_size / jax_s, 3),
        "speedup": round(torch_s / jax_s, 2),
        "diffusers_first_run_s": round(torch_warmup, 1), "dg_jax_compile_and_run_s":
            round(jax_compile, 1),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
