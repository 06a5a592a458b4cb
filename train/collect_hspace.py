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

import json
import sys

from dg_jax.flags import add_prompts_file_flag, config_parser, parse_config, run_cli
from dg_jax.training.hspace import CollectConfig, collect


def main(argv=None) -> int:
    parser = config_parser(CollectConfig, __doc__)
    add_prompts_file_flag(parser)

    def run():
        config, _ = parse_config(parser, CollectConfig, argv)
        print(json.dumps(collect(config), indent=2))

    return run_cli(parser, run)


if __name__ == "__main__":
    sys.exit(main())
