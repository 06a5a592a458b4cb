"""How well a UNet estimates x0 from noisy real SynthFaces, per timestep (the docs/EMBEDDED_MODEL.md
diagnosis of epsilon- vs v-prediction).

    python -m bench.high_noise_x0 [--model PATH] [--num-images 256]
"""

import argparse

import jax
import jax.numpy as jnp

from dg_jax.data import synthfaces
from dg_jax.data.images import to_model_range
from dg_jax.diffusion.samplers import predict_x0_eps
from dg_jax.diffusion.schedules import add_noise, alphas_cumprod
from dg_jax.loading import load_unet


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="")
    p.add_argument("--num-images", type=int, default=256)
    a = p.parse_args()
    model, config = load_unet(a.model or None)
    alpha_bar = alphas_cumprod(config.schedule)
    images, _ = synthfaces.generate(a.num_images, 5, synthfaces.BIASED_PROBS)
    x0 = jnp.asarray(to_model_range(images))
    forward = jax.jit(lambda x, t: model(x, t))
    print(f"data: std over images of the image mean {float(x0.mean((1, 2)).std()):.3f}")
    print("| t | eps MSE | x0_hat MSE | std over images of the x0_hat mean |")
    print("|---|---|---|---|")
    for t in (999, 950, 900, 800, 600, 400, 200, 50):
        noise = jax.random.normal(jax.random.fold_in(jax.random.key(0), t), x0.shape)
        ts = jnp.full((x0.shape[0],), t)
        x_t = add_noise(x0, noise, alpha_bar[ts])
        x0_hat, eps_hat = predict_x0_eps(forward(x_t, ts), x_t, alpha_bar[t],
                                         config.unet.prediction_type)
        print(f"| {t} | {float(jnp.mean((eps_hat - noise) ** 2)):.5f} | "
              f"{float(jnp.mean((x0_hat - x0) ** 2)):.3f} | "
              f"{float(x0_hat.mean((1, 2)).std()):.3f} |")


if __name__ == "__main__":
    main()
