"""Trains the SynthFaces attribute classifier (pseudo-labeller) on ground truth. Resumable.

The embedded classifier was made with:
    python -m train.train_classifier --export dg_jax/assets/synthfaces_classifier
"""

import sys

from dg_jax.flags import main_for
from dg_jax.training.classifier import ClassifierTrainConfig, train


def main(argv=None) -> int:
    return main_for(ClassifierTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
