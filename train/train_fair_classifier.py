"""Trains a classifier for a target attribute on a real set where it is confounded with a
sensitive attribute, optionally with generated images added, and grades its group fairness on a
balanced test set (accuracy per group, worst group, equalized-odds and demographic-parity gaps).
Writes WORKDIR/report.json. Resumable.

    # SynthFaces: smiling faces mostly darker-skinned (bias 0.9), plus balanced generated faces
    python -m train.train_fair_classifier --workdir runs/fair/b --generated runs/fair/distribution
    # CelebA prepared in a local TFDS data dir, at 64 px, with generated images of that size
    python -m train.train_fair_classifier --workdir runs/celeba --real tfds:celeb_a \\
        --tfds-data-dir ~/tensorflow_datasets --target smile --tfds-target Smiling \\
        --sensitive male --tfds-sensitive Male --image-size 64 --num-images 20000 \\
        --generated runs/celeba_generated

The whole comparison (real only, + distribution-guided, + unguided, + sample-level images; 3
seeds) is bench/fair_classifier.py.
"""

import sys

from dg_jax.flags import main_for
from dg_jax.training.fair_classifier import FairClassifierConfig, train_fair_classifier


def main(argv=None) -> int:
    return main_for(FairClassifierConfig, train_fair_classifier, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
