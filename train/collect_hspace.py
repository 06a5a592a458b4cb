"""Collects labelled h-space trajectories for ADP training (resumable; rerun to continue).

    python -m train.collect_hspace --out runs/hspace --num-samples 2048 [--source generate]
    python -m train.collect_hspace --out runs/hspace_inv --source invert --num-samples 2048

--source generate records h along the generation path and labels the final images with the
classifier; --source invert DDIM-inverts SynthFaces images, or real ones from --images DIR
labelled by --labels FILE (the original code's path). Takes --model (--model-config) and the
sampler flags of sample.generate; the ADP trained on the result serves samplers with the same
timesteps. For a Stable Diffusion folder (--source generate), --prompt /
--prompts-file give sample i prompt i mod N, h is the conditional branch's, and --clip with
--class-prompt labels by CLIP zero-shot:

    python -m train.collect_hspace --model sd-v1-5 --out runs/sd_h --prompts-file prompts.txt \
        --clip clip-vit-large-patch14 --class-prompt "gender=a photo of a man|a photo of a woman"
"""

import argparse
import json
import sys

from dg_jax.errors import UserError
from dg_jax.flags import (
    add_model_config_flag,
    add_sampler_flags,
    add_text_flags,
    sampler_from_flags,
    text_from_flags,
)
from dg_jax.training.hspace import CollectConfig, collect


def parse_args(argv=None) -> CollectConfig:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-samples", type=int, default=2048)
    p.add_argument("--source", default="generate", choices=["generate", "invert"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=256, help="samples per shard")
    p.add_argument("--model", default="", help="UNet bundle, diffusers folder or "
                   "guided-diffusion checkpoint (with --model-config)")
    add_model_config_flag(p)
    p.add_argument("--classifier", default="", help="labeller bundle (default: embedded)")
    p.add_argument("--invert-probs", default="uniform", choices=["uniform", "biased"],
                   help="class probabilities of the SynthFaces images to invert")
    p.add_argument("--images", default="",
                   help="--source invert: real images to invert instead of SynthFaces: a "
                        "folder (sample i = the i-th file by name) or tfds:NAME[:SPLIT] (a "
                        "locally prepared TFDS set); label them with --labels or --classifier")
    p.add_argument("--labels", default="",
                   help="label file by sample index (CSV index,<attr>,... or .npz) instead of a "
                        "labeller; or tfds:ATTR,NAME=ATTR,... for the binary attributes of a "
                        "TFDS --images set")
    add_sampler_flags(p)
    add_text_flags(p)
    a = p.parse_args(argv)
    return CollectConfig(out=a.out, num_samples=a.num_samples, source=a.source, seed=a.seed,
                         batch_size=a.batch_size, shard_size=a.shard_size, model=a.model,
                         model_config=a.model_config,
                         classifier=a.classifier, sampler=sampler_from_flags(a),
                         invert_probs=a.invert_probs, images=a.images,
                         text=text_from_flags(a),
                         labels=a.labels)


def main(argv=None) -> int:
    try:
        summary = collect(parse_args(argv))
    except (UserError, OSError) as e:  # OSError: missing files, no access to a bucket
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
