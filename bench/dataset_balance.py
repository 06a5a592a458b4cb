"""Dataset-level balance at a small batch: the shares of the whole data set against the target.

    python -m bench.dataset_balance                         # 2,000 images, batch 8, hair=0.5,0.5
    python -m bench.dataset_balance --balances dataset,batch --num-images 512

Runs `sample.generate` on the embedded model for each --balances mode (dataset: each batch is
steered to the data set's deficit; batch: each batch to p_ref on its own, the paper) and prints
the labeller's shares from the manifest with the largest deviation, in percentage points.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sample import generate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/dataset_balance")
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--target", default="hair=0.5,0.5")
    p.add_argument("--balances", default="dataset")
    a = p.parse_args(argv)
    rows = []
    for balance in a.balances.split(","):
        out = Path(a.out) / f"{balance}_b{a.batch_size}_n{a.num_images}"
        if generate.main(["--out", str(out), "--num-images", str(a.num_images),
                          "--batch-size", str(a.batch_size), "--method", "distribution",
                          "--target", a.target, "--balance", balance]) != 0:
            return 1
        manifest = json.loads((out / "manifest.json").read_text())
        name = a.target.split("=")[0]
        rows.append(f"| {balance} | {a.batch_size} | {manifest['num_images']} | "
                    + "/".join(f"{100 * s:.2f}" for s in manifest["shares"][name])
                    + f" | {100 * manifest['max_deviation'][name]:.2f} |")
    print(f"target {a.target}")
    print("| balance | batch | images | achieved shares (%) | max deviation (pp) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
