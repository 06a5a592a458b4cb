"""Measures the model's unguided output and records it in its ADP bundle (report["unguided"]):
label shares (what `--preserve` holds attributes at) and image sharpness, its median and its
ratio by class (the quality guard's washed-out and loss-of-detail checks).

    python -m train.record_unguided --adp runs/adp/bundle --out runs/unguided --num-images 1024
"""

import sys

from dg_jax.flags import main_for
from dg_jax.unguided_reference import RecordUnguidedConfig, record_unguided


def run(config: RecordUnguidedConfig):
    stats = record_unguided(config)
    for a, shares in stats["label_shares"].items():
        print(f"{a:>10}  " + " / ".join(f"{100 * s:.1f}" for s in shares) + " %")
    print(f"sharpness (median)  {stats['sharpness']:.4f}   ({stats['num_images']} images)")
    for a, factors in stats["sharpness_by_class"].items():
        print(f"{a:>10}  sharpness by class / median: " + " / ".join(f"{f:.3f}" for f in factors))
    return stats


def main(argv=None) -> int:
    return main_for(RecordUnguidedConfig, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
