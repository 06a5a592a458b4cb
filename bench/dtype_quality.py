"""bfloat16 against float32 generation, same seeds, on the embedded model: what bf16 costs in
quality (FD to the target, KID against real SynthFaces of the same attribute mix) and what it
does to speed on this machine.

    python -m bench.dtype_quality [--num-images 512] [--target hair=0.5,0.5] [--out runs/dtype]

Both runs use distribution guidance with the embedded ADP and dataset balance; the UNet computes
in the given dtype, while the ADP, the distribution loss and its gradient stay float32. Runs in
--out are reused when rerun (delete them to time again). On CPU bf16 is emulated and may be
slower; the point here is the quality cost.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from dg_jax.data.generated import read_generated
from dg_jax.evaluation.evaluate import EvaluateConfig, evaluate
from dg_jax.generation import GenerateConfig, run

DTYPES = ("float32", "bfloat16")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--target", default="hair=0.5,0.5")
    p.add_argument("--num-real", type=int, default=2000)
    p.add_argument("--out", default="runs/dtype")
    a = p.parse_args(argv)
    rows, data = {}, {}
    for dtype in DTYPES:
        out = pathlib.Path(a.out) / dtype
        manifest = run(GenerateConfig(out=str(out), num_images=a.num_images, seed=0,
                                      batch_size=a.batch_size, method="distribution",
                                      targets=(a.target,), dtype=dtype))
        report = evaluate(EvaluateConfig(run_dir=str(out), num_real=a.num_real))
        target = next(iter(report["fairness"]))
        speed = manifest["last_run"].get("images_per_second")
        rows[dtype] = (report["fairness"][target]["fd"], report["quality"]["matched"]["kid"],
                       report["quality"]["training"]["kid"], speed)
        data[dtype] = read_generated(out)
    base, low = data["float32"], data["bfloat16"]
    pixels = np.abs(base["image"].astype(int) - low["image"].astype(int))
    labels = [k for k in base if k.startswith("label_")]
    agree = np.mean([np.mean(base[k] == low[k]) for k in labels])
    print(f"embedded model, {a.num_images} images, batch {a.batch_size}, distribution guidance "
          f"to {a.target}, the same seeds")
    print("| UNet dtype | FD to target | KID (matched mix) | KID (training mix) | img/s |")
    print("|---|---|---|---|---|")
    for dtype, (fd, kid_matched, kid_training, speed) in rows.items():
        speed = f"{speed:.2f}" if speed else "(reused run)"
        print(f"| {dtype} | {fd:.4f} | {kid_matched:.4f} | {kid_training:.4f} | {speed} |")
    print(f"bf16 vs float32, image by image: mean |pixel difference| {pixels.mean():.2f} of 255, "
          f"{(pixels.max(axis=(1, 2, 3)) > 32).mean():.1%} of the images differ by more than 32 "
          f"somewhere; labeller labels agree on {agree:.1%}")


if __name__ == "__main__":
    main()
