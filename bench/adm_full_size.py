"""The paper's P2 CelebA-HQ architecture (celebahq_p2) at full size, with random weights: parity
with guided-diffusion's PyTorch UNet, seconds per UNet evaluation side by side, and the cost of
distribution guidance per sampling step.

    python -m bench.adm_full_size [--batches 1 4] [--rounds 3] [--steps 4]
    python -m bench.adm_full_size --parts sampling --rounds 5     # one part only

One run: the same random weights in both frameworks (bench.adm_reference), each timed function
compiled (JAX) or warmed up (PyTorch) first, then all take turns for --rounds rounds (median
reported). The guided sampler pushes the batch with an untrained ADP on h (8x8x512; the cost does
not depend on its weights).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench.adm_reference import reference_forward, reference_model
from bench.timing import median_seconds_in_turns
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.samplers import sample_keys
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.guidance.methods import DistributionGuidance
from dg_jax.guidance.targets import parse_target
from dg_jax.loading import load_unet
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.sampling import make_sampler


def nchw(x) -> np.ndarray:
    return np.asarray(x).transpose(0, 3, 1, 2)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="sampling steps of the guided/unguided runs")
    p.add_argument("--sampling-batch", type=int, default=4)
    p.add_argument("--parts", nargs="+", default=["parity", "speed", "sampling"],
                   choices=["parity", "speed", "sampling"])
    a = p.parse_args(argv)
    import torch

    reference = reference_model("celebahq_p2")
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(reference.state_dict(), f"{tmp}/celebahq_p2.pt")
        start = time.perf_counter()
        unet, model_config = load_unet(f"{tmp}/celebahq_p2.pt", "celebahq_p2")
        load_s = time.perf_counter() - start
    params = sum(x.size for x in jax.tree.leaves(nnx.state(unet, nnx.Param)))
    print(f"celebahq_p2: {params / 1e6:.2f} M parameters (reference "
          f"{sum(p.numel() for p in reference.parameters()) / 1e6:.2f} M), loaded in "
          f"{load_s:.1f} s; h {model_config.unet.h_shape}; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, jax {jax.__version__} on "
          f"{jax.devices()[0].platform}")

    graphdef, state = nnx.split(unet)
    forward = jax.jit(lambda state, x, t: nnx.merge(graphdef, state)(x, t))
    if "parity" in a.parts:
        parity(reference, forward, state)
    if "speed" in a.parts:
        speed(reference, forward, state, a.batches, a.rounds)
    if "sampling" in a.parts:
        sampling(unet, model_config, a.steps, a.sampling_batch, a.rounds)


def parity(reference, forward, state) -> None:
    x = np.random.RandomState(0).randn(1, 256, 256, 3).astype(np.float32)
    t = np.array([500])
    want, _ = reference_forward(reference, x.transpose(0, 3, 1, 2).copy(), t)
    got = nchw(forward(state, jnp.asarray(x), jnp.asarray(t)))
    error, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    print(f"parity, batch 1 at t=500: max |dg-jax - reference| = {error:.2e}, output scale "
          f"(max |reference|) {scale:.2f}: {error / scale:.1e} of the scale")


def speed(reference, forward, state, batches: list[int], rounds: int) -> None:
    """Seconds per UNet evaluation, dg-jax and PyTorch taking turns."""
    def ours(b):
        return lambda x, t: forward(state, jnp.asarray(x[:b]), jnp.asarray(t[:b]))

    def theirs(b):
        return lambda x, t: _torch_call(reference, x[:b], t[:b])

    fns = {}
    for b in batches:
        fns[("dg-jax", b)], fns[("pytorch", b)] = ours(b), theirs(b)
    largest = max(batches)
    seconds = median_seconds_in_turns(fns, lambda r: (
        np.random.RandomState(r).randn(largest, 256, 256, 3).astype(np.float32),
        np.full((largest,), 500)), rounds)
    print("\n| batch | dg-jax s / UNet eval | PyTorch s / UNet eval | PyTorch / dg-jax |")
    print("|---|---|---|---|")
    for b in batches:
        jx, pt = seconds[("dg-jax", b)], seconds[("pytorch", b)]
        print(f"| {b} | {jx:.2f} | {pt:.2f} | {pt / jx:.2f} |")


def sampling(unet, model_config, steps: int, batch: int, rounds: int) -> None:
    """Seconds per sampling step, unguided and distribution-guided, taking turns."""
    adp = ADP(ADPConfig(attributes=(("gender", 2), ("race", 4)),
                        h_shape=model_config.unet.h_shape), rngs=nnx.Rngs(0))
    targets = [parse_target("gender=0.5,0.5", adp.config.num_classes),
               parse_target("race=uniform", adp.config.num_classes)]
    sampler_config = SamplerConfig(num_steps=steps)
    samplers = {
        "unguided": make_sampler(unet, model_config, sampler_config).jitted(),
        "distribution": make_sampler(unet, model_config, sampler_config, DistributionGuidance(
            adp, targets, GuidanceConfig(scale=1.0))).jitted()}
    per_run = median_seconds_in_turns(
        samplers, lambda r: (sample_keys(r, np.arange(batch)),), rounds)
    unguided = per_run["unguided"] / steps
    guided = per_run["distribution"] / steps
    print(f"\nsampling at batch {batch}, {steps} DDIM steps, {rounds} rounds: "
          f"unguided {unguided:.2f} s/step, distribution-guided {guided:.2f} s/step, "
          f"ratio {guided / unguided:.3f}")


def _torch_call(model, x_nhwc: np.ndarray, t: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())
        return model(x, torch.from_numpy(t)).numpy()


if __name__ == "__main__":
    main()
