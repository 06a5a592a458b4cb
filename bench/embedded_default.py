"""Checks the embedded default: 1,024 unguided samples labelled by the embedded classifier.

    python -m bench.embedded_default --num-images 1024 --grid docs/images/embedded_samples.png

Prints images/s of the main job (`dg_jax.generation.run`, labelling and writing included), the
classifier's attribute rates vs BIASED_PROBS, and its mean max-probability on the samples.
"""

import argparse
import json
import pathlib
import tempfile

import numpy as np
from PIL import Image

from dg_jax.data import generated, synthfaces
from dg_jax.data.images import image_grid
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.generation import GenerateConfig, run


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-images", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="")
    p.add_argument("--grid", default="", help="write an 8x8 sample grid PNG here")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = GenerateConfig(out=tmp, num_images=a.num_images, seed=a.seed,
                                batch_size=a.batch_size, model=a.model,
                                sampler=SamplerConfig(num_steps=a.steps, eta=a.eta))
        manifest = run(config)
        data = generated.read_generated(tmp)
    print(f"\nimages/s (sample.generate, {a.steps} DDIM steps, batch {a.batch_size}, eta {a.eta}): "
          f"{manifest['last_run']['images_per_second']}")
    print("\n| attribute | class | BIASED_PROBS | generated | diff (pp) |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for attr, probs in synthfaces.BIASED_PROBS.items():
        shares = manifest["shares"][attr]
        for k, (want, got) in enumerate(zip(probs, shares)):
            worst = max(worst, abs(got - want))
            name = synthfaces.ATTRIBUTES[attr][k]
            print(f"| {attr} | {name} | {want:.3f} | {got:.3f} | {100 * (got - want):+.1f} |")
    confidence = {attr: float(np.mean(np.max(data[f"prob_{attr}"], axis=-1)))
                  for attr in synthfaces.ATTRIBUTES}
    print(f"\nlargest deviation: {100 * worst:.1f} pp")
    print(f"mean max-probability: {json.dumps({k: round(v, 4) for k, v in confidence.items()})}"
          f", overall {np.mean(list(confidence.values())):.4f}")
    if a.grid:
        pathlib.Path(a.grid).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image_grid(data["image"][:64], 8, scale=3)).save(a.grid)
        print(f"grid: {a.grid}")


if __name__ == "__main__":
    main()
