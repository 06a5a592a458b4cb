"""Stable Diffusion components in float32 and bfloat16 against the PyTorch float32 references.

    python -m bench.sd_precision [--channels 32,64] [--seed 0]

Random diffusers / transformers models with SD 1.x's layout at a small width (no weights can be
downloaded here) are saved, loaded as ours with `dtype` float32 and bfloat16 (compute dtype;
parameters stay float32), and run on the same inputs. Prints the max abs error and the error
relative to the reference's largest magnitude, per component.
"""

import argparse
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dg_jax.convert.clip import load_clip_text
from dg_jax.convert.stable_diffusion import load_unet_cond, load_vae


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", default="32,64")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import diffusers
    import torch
    import transformers

    chans = tuple(int(c) for c in a.channels.split(","))
    torch.manual_seed(a.seed)
    rng = np.random.RandomState(a.seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, block_out_channels=chans, layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * (len(chans) - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(chans) - 1),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=8).eval()
    vae = diffusers.AutoencoderKL(block_out_channels=chans,
                                  down_block_types=("DownEncoderBlock2D",) * len(chans),
                                  up_block_types=("UpDecoderBlock2D",) * len(chans),
                                  latent_channels=4, norm_num_groups=8).eval()
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=998, eos_token_id=999,
        pad_token_id=999)).eval()
    x = rng.randn(2, 16, 16, 4).astype(np.float32)
    t = np.array([10.0, 800.0])
    context = rng.randn(2, 77, 64).astype(np.float32)
    z = rng.randn(2, 16, 16, 4).astype(np.float32)
    ids = rng.randint(0, 998, size=(2, 77))
    nchw = lambda y: torch.from_numpy(y.transpose(0, 3, 1, 2))  # noqa: E731
    with torch.no_grad():
        refs = {
            "UNet2DConditionModel (eps)": unet(nchw(x), torch.from_numpy(t),
                                               encoder_hidden_states=torch.from_numpy(context)
                                               ).sample.numpy().transpose(0, 2, 3, 1),
            "AutoencoderKL decode": vae.decode(nchw(z)).sample.numpy().transpose(0, 2, 3, 1),
            "CLIPTextModel last hidden": text(torch.from_numpy(ids)).last_hidden_state.numpy(),
        }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name, model in (("unet", unet), ("vae", vae), ("text", text)):
            model.save_pretrained(tmp / name)
        print(f"channels {chans}; max abs error (relative to max |reference|)")
        print("| component | float32 | bfloat16 |")
        print("|---|---|---|")
        for name, ref in refs.items():
            row = []
            for dtype in ("float32", "bfloat16"):
                if name.startswith("UNet"):
                    ours = nnx.jit(lambda m, *args: m(*args))(
                        load_unet_cond(tmp / "unet", dtype=dtype), jnp.asarray(x),
                        jnp.asarray(t), jnp.asarray(context))
                elif name.startswith("Auto"):
                    ours = nnx.jit(lambda m, y: m.decode(y))(load_vae(tmp / "vae", dtype=dtype),
                                                             jnp.asarray(z))
                else:
                    ours = nnx.jit(lambda m, y: m(y)[0])(load_clip_text(tmp / "text", dtype=dtype),
                                                         jnp.asarray(ids))
                err = float(np.abs(np.asarray(jax.device_get(ours), np.float32) - ref).max())
                row.append(f"{err:.2e} ({err / np.abs(ref).max():.1e})")
            print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
