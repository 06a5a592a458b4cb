"""Gradients of a 3x3 convolution on CPU: JAX's own transpose rules vs dg_jax's conv2d.

    python -m bench.conv_backward [--batch-size 64] [--size 32] [--channels 64] [--rounds 5]

Two gradients matter on CPU (dg_jax/models/conv.py):
- the input gradient inside a lax.scan, as guided sampling takes it: JAX transposes a
  convolution into one whose kernel has its input and output dimensions swapped, which XLA:CPU
  runs several times slower in a loop body than at the top level;
- the kernel gradient, as training takes it: from jaxlib 0.9.1 on XLA:CPU runs JAX's form ~30x
  slower than 0.9.0.1 did.
Each is timed for JAX's rule and dg_jax's conv2d, in turns, for stride 1 and 2.
"""

import argparse

import jax

from bench.timing import median_seconds_in_turns
from dg_jax.models.conv import KERNEL_GRADIENT_BY_TAPS, conv2d

STEPS = 4  # scan length


def plain(x, k, stride):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def gradient_fns(conv, stride):
    """(forward + input gradient, in a scan of STEPS) and (forward + kernel gradient)."""
    def loss(x, k):
        return (conv(x, k, stride) ** 2).sum()

    def input_steps(x, k):
        return jax.lax.scan(lambda x, _: (x - 1e-3 * jax.grad(loss)(x, k), None), x,
                            length=STEPS)[0]

    return jax.jit(input_steps), jax.jit(jax.grad(loss, 1))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    convs = {"JAX's rule": plain, "dg_jax conv2d": lambda x, k, s: conv2d(x, k, s, 1)}
    x = jax.random.normal(jax.random.key(0), (a.batch_size, a.size, a.size, a.channels))
    k = 0.05 * jax.random.normal(jax.random.key(1), (3, 3, a.channels, a.channels))
    fns = {}
    for stride in (1, 2):
        for name, conv in convs.items():
            input_steps, kernel_gradient = gradient_fns(conv, stride)
            fns[(stride, "input, in a scan", name)] = input_steps
            fns[(stride, "kernel, top level", name)] = kernel_gradient
    seconds = median_seconds_in_turns(fns, lambda r: (x, k), a.rounds)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}; x [{a.batch_size}, {a.size}, "
          f"{a.size}, {a.channels}], 3x3 kernel, forward + gradient, median of {a.rounds} "
          f"rounds; kernel gradient by taps: {KERNEL_GRADIENT_BY_TAPS}")
    print("| stride | gradient | JAX's rule ms | dg_jax conv2d ms | ratio |")
    print("|---|---|---|---|---|")
    for stride in (1, 2):
        for what in ("input, in a scan", "kernel, top level"):
            per_call = [seconds[(stride, what, name)] / (STEPS if "scan" in what else 1)
                        for name in convs]
            print(f"| {stride} | {what} | {1000 * per_call[0]:.1f} | {1000 * per_call[1]:.1f} "
                  f"| {per_call[1] / per_call[0]:.2f} |")


if __name__ == "__main__":
    main()
