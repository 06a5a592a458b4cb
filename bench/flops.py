"""FLOPs per generated image, and images/s per accelerator chip estimated from them.

    python -m bench.flops
    python -m bench.flops --mfu 0.3 --steps 50

XLA's cost analysis of one jitted UNet evaluation (float32 graph; the count does not depend on
the dtype) for the embedded SynthFaces model, the published google/ddpm-celebahq-256 architecture,
the paper's P2 CelebA-HQ model (guided-diffusion's ADM, preset celebahq_p2) and Stable Diffusion
1.5 at 512 px (abstract weights: only shapes matter). Per image: steps x
UNet FLOPs (distribution guidance adds the ADP's forward and backward, under 1 % here); Stable
Diffusion adds classifier-free guidance (2 UNet evaluations per step: the unconditional and the
conditional half) and one autoencoder decode. Chip rates are estimates: peak dense bf16 FLOP/s
times an assumed model FLOP utilisation (--mfu), not measurements.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

from dg_jax.convert.guided_diffusion import adm_model_config
from dg_jax.loading import load_unet
from dg_jax.models.abstract import abstract_model
from dg_jax.models.unet import UNet, UNetConfig
from dg_jax.models.vae import AutoencoderKL, VAEConfig

# google/ddpm-celebahq-256 (diffusers UNet2DModel config): attention only at 16x16
CELEBAHQ_256 = UNetConfig(sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512),
                          layers_per_block=2,
                          down_attention=(False, False, False, False, True, False),
                          attention_head_dim=None, downsample_padding=0)
# stable-diffusion-v1-5 (diffusers UNet2DConditionModel and AutoencoderKL configs), 64x64 latents
SD15_UNET = UNetConfig(sample_size=64, in_channels=4, out_channels=4,
                       block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                       down_attention=(True, True, True, False),
                       up_attention=(False, True, True, True), attention_head_dim=None,
                       cross_attention_dim=768, num_attention_heads=(8, 8, 8, 8))
SD15_VAE = VAEConfig(block_out_channels=(128, 256, 512, 512), layers_per_block=2)
SD_CONTEXT = (77, 768)  # CLIP ViT-L/14 text tokens
# Peak dense bf16 FLOP/s per chip, from Google Cloud's TPU and NVIDIA's data sheets.
PEAK_BF16 = {"TPU v4": 275e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6e": 918e12,
             "H100/H200 SXM": 989e12}


def flops_of(module, call, *shapes, batch: int = 4) -> tuple[float, int]:
    """(FLOPs per sample of call(module, *inputs) for inputs of `shapes` (per sample, float32),
    parameter count), from XLA's cost analysis of the lowered graph."""
    graphdef, state = nnx.split(module)
    inputs = [jax.ShapeDtypeStruct((batch, *s), jnp.float32) for s in shapes]
    lowered = jax.jit(lambda state, *xs: call(nnx.merge(graphdef, state), *xs)).lower(
        state, *inputs)
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"] / batch, sum(v.size for v in jax.tree.leaves(state))


def unet_flops(config: UNetConfig, batch: int = 4) -> tuple[float, int]:
    """(FLOPs per image per UNet evaluation, parameter count)."""
    side = config.sample_size
    shapes = [(side, side, config.in_channels), ()]
    if config.cross_attention_dim is not None:
        shapes.append(SD_CONTEXT)
    return flops_of(abstract_model(UNet, config), lambda m, x, t, *c: m(x, t, *c), *shapes,
                    batch=batch)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOP utilisation")
    a = p.parse_args(argv)
    embedded, _ = load_unet()
    # name -> (UNet config, UNet evaluations per step, FLOPs once per image)
    vae_decode, _ = flops_of(abstract_model(AutoencoderKL, SD15_VAE), lambda m, z: m.decode(z),
                             (64, 64, 4), batch=1)
    models = {"embedded SynthFaces 32x32": (embedded.config, 1, 0.0),
              "ddpm-celebahq-256": (CELEBAHQ_256, 1, 0.0),
              "P2 celebahq_p2 256 (ADM)": (adm_model_config("celebahq_p2").unet, 1, 0.0),
              "stable-diffusion-v1-5 512 px (CFG)": (SD15_UNET, 2, vae_decode)}
    print(f"Stable Diffusion 1.5's autoencoder decode: {vae_decode / 1e9:,.0f} GFLOPs per image")
    print(f"{a.steps} steps per image; chip rates assume {a.mfu:.0%} of peak bf16 (estimates)")
    header = "| model | params (M) | GFLOPs / UNet eval | GFLOPs / image | " + " | ".join(
        f"img/s per {chip} chip" for chip in PEAK_BF16) + " |"
    print(header)
    print("|" + "---|" * (4 + len(PEAK_BF16)))
    for name, (config, evals, once) in models.items():
        flops, params = unet_flops(config)
        per_image = evals * flops * a.steps + once
        rates = [a.mfu * peak / per_image for peak in PEAK_BF16.values()]
        print(f"| {name} | {params / 1e6:.1f} | {flops / 1e9:.2f} | {per_image / 1e9:.0f} | "
              + " | ".join(f"{r:,.0f}" if r >= 10 else f"{r:.1f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
