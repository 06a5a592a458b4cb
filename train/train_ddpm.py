"""Trains the SynthFaces UNet (the embedded default). Resumable: rerun the same command.

The embedded default was made with (see docs/EMBEDDED_MODEL.md):
    python -m train.train_ddpm --workdir runs/synthfaces_unet --batch-size 32 --warmup-steps 200 \
        --steps STEPS --export dg_jax/assets/synthfaces_unet
"""

import sys

from dg_jax.flags import main_for
from dg_jax.training.ddpm import DDPMTrainConfig, train


def main(argv=None) -> int:
    return main_for(DDPMTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
