"""Trains the SynthFaces evaluation network (FD labels, KID/FID features). Resumable.

The embedded evaluator was made with:
    python -m train.train_evaluator --export dg_jax/assets/synthfaces_evaluator
"""

from dg_jax.flags import main_for
from dg_jax.training.classifier import EvaluatorTrainConfig, train

if __name__ == "__main__":
    main_for(EvaluatorTrainConfig, train, __doc__)
