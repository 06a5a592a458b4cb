"""The global batch distribution two ways, side by side: jax.shard_map with a pmean over the data
axis (what make_sampler does with a mesh) against plain jax.jit over a batch-sharded array (XLA's
partitioner inserts the all-reduce of the batch mean).

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m bench.shard_map_vs_jit \
        [--batch-size 64] [--steps 10] [--rounds 5]

Both run the embedded model with distribution guidance (its shipped ADP) on the same keys; the
script prints how far their images and p_hat trace differ, their first-call (compile) times and
their median time per sampling step.
"""

import argparse
import time

import jax
import numpy as np

from bench.timing import median_seconds_in_turns
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.samplers import sample_keys
from dg_jax.guidance.methods import DistributionGuidance
from dg_jax.guidance.targets import parse_target
from dg_jax.loading import load_adp, load_unet
from dg_jax.parallel import batch_sharding, data_mesh, replicate
from dg_jax.sampling import make_sampler


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--target", default="hair=0.5,0.5")
    a = p.parse_args()
    unet, model_config = load_unet()
    adp = load_adp()
    guidance = DistributionGuidance(adp, [parse_target(a.target, adp.config.num_classes)])
    config = SamplerConfig(num_steps=a.steps)
    mesh = data_mesh()

    with_shard_map = make_sampler(unet, model_config, config, guidance, mesh=mesh)
    plain = make_sampler(unet, model_config, config, guidance)
    params = replicate(plain.params, mesh)
    refs = plain.refs
    run_shard_map, run_jit = jax.jit(with_shard_map), jax.jit(plain)
    fns = {"shard_map + pmean": lambda keys: run_shard_map(with_shard_map.params, keys, refs),
           "jit, sharded batch": lambda keys: run_jit(params, keys, refs)}

    def keys_for(r):
        keys = sample_keys(r, np.arange(a.batch_size))
        return (jax.device_put(keys, batch_sharding(mesh)),)

    compile_seconds = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(*keys_for(0)))
        compile_seconds[name] = time.perf_counter() - start
    (x_a, trace_a), (x_b, trace_b) = (fn(*keys_for(0)) for fn in fns.values())
    # per image: float rounding differs between the two programs, and a few images of a
    # stochastic sampling loop amplify it (as between one device and four)
    image_diff = np.abs(np.asarray(x_a) - np.asarray(x_b)).max(axis=(1, 2, 3))
    p_hat_diff = max(float(np.abs(np.asarray(trace_a["p_hat"][k]) -
                                  np.asarray(trace_b["p_hat"][k])).max())
                     for k in trace_a["p_hat"])
    seconds = median_seconds_in_turns(fns, keys_for, a.rounds)
    print(f"batch {a.batch_size} over {len(mesh.devices)} devices "
          f"({jax.devices()[0].platform}), {a.steps} steps, {a.rounds} rounds")
    print(f"images: median max |difference| {np.median(image_diff):.1e}, "
          f"{int((image_diff > 0.05).sum())} of {len(image_diff)} differ by > 0.05; p_hat "
          f"max |difference| {p_hat_diff:.1e}")
    base = seconds["shard_map + pmean"]
    for name, s in seconds.items():
        print(f"{name:>20}: first call (compile + run) {compile_seconds[name]:6.1f} s, "
              f"{s / a.steps * 1000:7.1f} ms/step ({s / base:.3f}x)")


if __name__ == "__main__":
    main()
