"""Replays the quality guard's loss-of-detail check on data sets already written: where would it
have stopped them, and how close did the others come? For choosing `--min-detail` for a model, or
checking a new line against runs made before it.

    python -m bench.detail_replay --adp dg_jax/assets/synthfaces_adp \
        runs/target_matrix/dataset/* runs/target_matrix/batch-corrected/*

Each data set is read in index order, in batches of --batch-size, and each image's sharpness is
compared with the unguided images of its labels (the written labels: the labeller's, as in the
run) by `guard.detail_ratios`, with the sharpness record of the --adp bundle. Prints a markdown
table: the median over the guard's window (the last --min-images images) at each check, its
lowest, and the number of images after which the guard stops the run (-: it does not).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

import jax.numpy as jnp
import numpy as np

from dg_jax import checkpoints
from dg_jax.data.generated import read_generated
from dg_jax.data.images import to_model_range
from dg_jax.generation import unguided_statistics
from dg_jax.guard import GuardConfig, QualityGuard, SharpnessReference, detail_ratios


def window_medians(ratios: np.ndarray, config: GuardConfig, batch_size: int
                   ) -> tuple[list[float], int | None]:
    """ratios [N] in writing order -> (the window's median at each check, the images after
    which the guard stops; None: it does not)."""
    guard = QualityGuard(dataclasses.replace(config, on_degenerate="warn"))
    medians, stop = [], None
    for start in range(0, len(ratios), batch_size):
        end = min(start + batch_size, len(ratios))
        line = guard.check_detail(ratios[start:end], end)
        if end >= config.min_images and guard.detail:
            medians.append(float(np.median(guard.detail)))
        if line and stop is None:
            stop = end
    return medians, stop


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adp", default=str(checkpoints.EMBEDDED_ADP),
                   help="the ADP bundle whose unguided sharpness record is the reference")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-images", type=int, default=0, help="the first N images (0: all)")
    p.add_argument("--min-images", type=int, default=GuardConfig.min_images)
    p.add_argument("--min-detail", type=float, default=GuardConfig.min_detail)
    p.add_argument("data", nargs="+", help="sample.generate output folders")
    a = p.parse_args()
    report = checkpoints.read_bundle_config(a.adp).get("report", {})
    reference = SharpnessReference.of(unguided_statistics(report))
    if reference is None:
        raise SystemExit(f"error: {a.adp} records no unguided sharpness (run "
                         "train.record_unguided on it)")
    config = GuardConfig(min_images=a.min_images, min_detail=a.min_detail)
    print(f"line {a.min_detail}, window {a.min_images} images, batches of {a.batch_size}\n")
    print("| data set | window median at each check | lowest | stops after |")
    print("| --- | --- | --- | --- |")
    for path in map(pathlib.Path, a.data):
        if not (path / "manifest.json").exists():
            print(f"| {path} | (nothing written) | | |")
            continue
        data = read_generated(path)
        n = a.num_images or len(data["index"])
        probs = {k.removeprefix("prob_"): jnp.asarray(v[:n]) for k, v in data.items()
                 if k.startswith("prob_")}
        ratios = np.asarray(detail_ratios(to_model_range(data["image"][:n]), probs, reference))
        medians, stop = window_medians(ratios, config, a.batch_size)
        print(f"| {path} | {' '.join(f'{m:.3f}' for m in medians)} | "
              f"{min(medians, default=float('nan')):.3f} | {stop or '-'} |")


if __name__ == "__main__":
    main()
