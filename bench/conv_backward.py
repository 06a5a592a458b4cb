"""Input gradient of a 3x3 convolution inside lax.scan: JAX's transpose rule vs dg_jax's conv2d.

    python -m bench.conv_backward [--batch-size 64] [--size 32] [--channels 64] [--rounds 5]

Image-space guidance differentiates the UNet w.r.t. its input at every step of a lax.scan. JAX
transposes a convolution into one whose kernel has its input and output dimensions swapped; on
CPU, XLA runs that form several times slower inside a loop body (scan, cond) than at the top
level. `dg_jax.models.layers.conv2d` gives the same gradient as a convolution with the flipped
kernel laid out HWIO. Both are timed in turns, inside a scan and outside, for stride 1 and 2.
"""

import argparse

import jax

from bench.timing import median_seconds_in_turns
from dg_jax.models.layers import conv2d

STEPS = 4  # scan length


def input_gradient(conv, stride):
    return lambda x, k: jax.grad(lambda x: (conv(x, k, stride) ** 2).sum())(x)


def in_scan(grad):
    return lambda x, k: jax.lax.scan(lambda x, _: (x - 1e-3 * grad(x, k), None), x,
                                     length=STEPS)[0]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    convs = {"jax transpose rule": lambda x, k, s: jax.lax.conv_general_dilated(
                 x, k, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")),
             "dg_jax conv2d": lambda x, k, s: conv2d(x, k, s, 1)}
    x = jax.random.normal(jax.random.key(0), (a.batch_size, a.size, a.size, a.channels))
    k = 0.05 * jax.random.normal(jax.random.key(1), (3, 3, a.channels, a.channels))
    fns = {}
    for stride in (1, 2):
        for name, conv in convs.items():
            grad = input_gradient(conv, stride)
            fns[(stride, name, "top level")] = jax.jit(grad)
            fns[(stride, name, "in scan")] = jax.jit(in_scan(grad))
    seconds = median_seconds_in_turns(fns, lambda r: (x, k), a.rounds)
    per_call = {key: s / (STEPS if key[2] == "in scan" else 1) for key, s in seconds.items()}
    print(f"x [{a.batch_size}, {a.size}, {a.size}, {a.channels}], 3x3 kernel, forward + input "
          f"gradient, median of {a.rounds} rounds, {jax.devices()[0].platform}")
    print("| stride | gradient | where | ms | ratio to top level |")
    print("|---|---|---|---|---|")
    for (stride, name, where), t in per_call.items():
        top = per_call[(stride, name, "top level")]
        print(f"| {stride} | {name} | {where} | {1000 * t:.1f} | {t / top:.2f} |")


if __name__ == "__main__":
    main()
