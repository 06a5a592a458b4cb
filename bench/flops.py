"""FLOPs per generated image, and images/s per accelerator chip estimated from them.

    python -m bench.flops
    python -m bench.flops --mfu 0.3 --steps 50

XLA's cost analysis of one jitted UNet evaluation (float32 graph; the count does not depend on
the dtype) for the embedded SynthFaces model and for the published google/ddpm-celebahq-256
architecture (random weights: only shapes matter). Per image: steps x UNet FLOPs (distribution
guidance adds the ADP's forward and backward, under 1 % here). Chip rates are estimates: peak
dense bf16 FLOP/s times an assumed model FLOP utilisation (--mfu), not measurements.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

from dg_jax.models.loading import load_unet
from dg_jax.models.unet import UNet, UNetConfig

# google/ddpm-celebahq-256 (diffusers UNet2DModel config): attention only at 16x16
CELEBAHQ_256 = UNetConfig(sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512),
                          layers_per_block=2,
                          down_attention=(False, False, False, False, True, False),
                          attention_head_dim=None, downsample_padding=0)
# Peak dense bf16 FLOP/s per chip, from Google Cloud's TPU documentation.
PEAK_BF16 = {"TPU v4": 275e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6e": 918e12}


def unet_flops(config: UNetConfig, batch: int = 4) -> tuple[float, int]:
    """(FLOPs per image per UNet evaluation, parameter count)."""
    unet = nnx.eval_shape(lambda: UNet(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(unet)

    def forward(state, x, t):
        return nnx.merge(graphdef, state)(x, t)

    x = jax.ShapeDtypeStruct((batch, config.sample_size, config.sample_size, config.in_channels),
                             jnp.float32)
    t = jax.ShapeDtypeStruct((batch,), jnp.int32)
    cost = jax.jit(forward).lower(state, x, t).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    params = sum(v.size for v in jax.tree.leaves(state))
    return cost["flops"] / batch, params


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOP utilisation")
    a = p.parse_args(argv)
    embedded, _ = load_unet()
    models = {"embedded SynthFaces 32x32": embedded.config, "ddpm-celebahq-256": CELEBAHQ_256}
    print(f"{a.steps} steps per image; chip rates assume {a.mfu:.0%} of peak bf16 (estimates)")
    header = "| model | params (M) | GFLOPs / UNet eval | GFLOPs / image | " + " | ".join(
        f"img/s per {chip} chip" for chip in PEAK_BF16) + " |"
    print(header)
    print("|" + "---|" * (4 + len(PEAK_BF16)))
    for name, config in models.items():
        flops, params = unet_flops(config)
        per_image = flops * a.steps
        rates = [a.mfu * peak / per_image for peak in PEAK_BF16.values()]
        print(f"| {name} | {params / 1e6:.1f} | {flops / 1e9:.2f} | {per_image / 1e9:.0f} | "
              + " | ".join(f"{r:,.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
