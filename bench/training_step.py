"""One DDPM training step of the embedded UNet on CPU, with dg_jax's conv2d (its CPU form) and
with lax.conv_general_dilated's own gradients (the form GPU and TPU run).

    python -m bench.training_step [--batch-size 64] [--rounds 5]

The kernel gradient is what jaxlib >= 0.9.1 runs ~30x slower on CPU (dg_jax/models/conv.py).
"""

import argparse
from unittest import mock

import jax
import jax.numpy as jnp
from flax import nnx

from bench.timing import median_seconds_in_turns
from dg_jax.diffusion.schedules import ScheduleConfig, alphas_cumprod
from dg_jax.models import conv
from dg_jax.models.unet import UNet
from dg_jax.training.ddpm import SYNTHFACES_UNET, DDPMTrainConfig, make_optimizer, make_train_step


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    graphdef, params = nnx.split(UNet(SYNTHFACES_UNET, rngs=nnx.Rngs(0)), nnx.Param)
    optimizer = make_optimizer(DDPMTrainConfig())
    state = dict(params=params, ema=params, opt=optimizer.init(params),
                 step=jnp.zeros((), jnp.int32))
    size = SYNTHFACES_UNET.sample_size
    x0 = jax.random.uniform(jax.random.key(1), (a.batch_size, size, size, 3), minval=-1)
    key = jax.random.key(2)
    fns = {}
    for name, cpu_form in (("dg_jax conv2d", True), ("lax convolution", False)):
        step = make_train_step(graphdef, optimizer, alphas_cumprod(ScheduleConfig()), 0.999)
        with mock.patch.object(conv, "cpu_form", lambda cpu_form=cpu_form: cpu_form):
            jax.block_until_ready(step(state, x0, key))  # traced with this form
        fns[name] = step
    seconds = median_seconds_in_turns(fns, lambda r: (state, x0, key), a.rounds)
    ours, plain = seconds["dg_jax conv2d"], seconds["lax convolution"]
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, batch {a.batch_size}, median of "
          f"{a.rounds} steps: dg_jax conv2d {ours:.2f} s, lax convolution {plain:.2f} s, "
          f"ratio {ours / plain:.2f} (kernel gradient by taps: {conv.KERNEL_GRADIENT_BY_TAPS})")


if __name__ == "__main__":
    main()
