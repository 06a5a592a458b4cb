"""Measures the model's unguided output and records it in its ADP bundle (report["unguided"]):
label shares (what `--preserve` holds attributes at) and median image sharpness (the quality
guard's washed-out check).

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
    return stats


def main(argv=None) -> int:
    return main_for(RecordUnguidedConfig, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
