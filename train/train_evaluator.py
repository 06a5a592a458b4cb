"""Trains the SynthFaces evaluation network (FD labels, KID/FID features). Resumable.

The embedded evaluator was made with:
    python -m train.train_evaluator --export dg_jax/assets/synthfaces_evaluator
"""

import sys

from dg_jax.flags import main_for
from dg_jax.training.classifier import EvaluatorTrainConfig, train


def main(argv=None) -> int:
    return main_for(EvaluatorTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
