"""Held-out accuracy of several ADP bundles on one h-space collection, side by side: every bundle
is read on the same held-out samples (the split `train.train_adp` uses: every 7th sample at the
default --holdout), so ADPs trained on collections of different sizes compare fairly as long as
the smaller collection is a prefix of this one (same command and seed).

    python -m bench.adp_accuracy --data runs/hspace_6k dg_jax/assets/synthfaces_adp \
        runs/adp_6k_export runs/adp_6k_adv05s_export

Prints a markdown table: accuracy per attribute at the last sampling step.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
from flax import nnx

from dg_jax.data.hspace import HSpaceSource
from dg_jax.loading import load_adp
from dg_jax.training.adp import ADPTrainConfig, heldout_accuracy, split_indices


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a train.collect_hspace output folder")
    p.add_argument("--holdout", type=float, default=ADPTrainConfig.holdout)
    p.add_argument("bundles", nargs="+", help="ADP bundles")
    a = p.parse_args()
    source = HSpaceSource(a.data)
    first = source[0]
    names = list(first["probs"])
    _, held = split_indices(len(source), a.holdout)
    print(f"{len(held)} held-out samples of {a.data}, accuracy at the last step\n")
    print("| ADP | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for bundle in a.bundles:
        graphdef, params = nnx.split(load_adp(bundle), nnx.Param)
        accuracy = heldout_accuracy(graphdef, params, source, held, names,
                                    jnp.asarray(first["timesteps"], jnp.float32))
        print(f"| {bundle} | " + " | ".join(f"{accuracy[n][-1]:.3f}" for n in names) + " |",
              flush=True)


if __name__ == "__main__":
    main()
