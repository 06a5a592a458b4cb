"""Trains an Attribute Distribution Predictor on a train.collect_hspace folder. Resumable.

    python -m train.train_adp --data runs/hspace --workdir runs/adp --export runs/adp/bundle
    python -m train.train_adp --data runs/hspace --kind linear_per_step ...   # the original heads

Prints the held-out accuracy per sampling step and attribute (also stored in the bundle) and plots
it to WORKDIR/heldout_accuracy.png.
"""

import pathlib
import sys

from dg_jax.evaluation.plots import accuracy_plot
from dg_jax.flags import main_for
from dg_jax.training.adp import ADPTrainConfig, train


def run(config: ADPTrainConfig):
    model, report = train(config)
    acc = report["heldout_accuracy"]
    accuracy_plot(pathlib.Path(config.workdir) / "heldout_accuracy.png", report["timesteps"], acc,
                  f"ADP ({config.kind}, {config.features}): {report['heldout_samples']} held-out "
                  f"samples")
    print("step  timestep  " + "  ".join(f"{a:>8}" for a in acc))
    for i, t in enumerate(report["timesteps"]):
        print(f"{i:4d}  {t:8d}  " + "  ".join(f"{acc[a][i]:8.3f}" for a in acc))
    return model, report


def main(argv=None) -> int:
    return main_for(ADPTrainConfig, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
