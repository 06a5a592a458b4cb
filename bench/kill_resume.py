"""kill -9 at a random moment, then the same command again: the same data set as without the kill.

    python -m bench.kill_resume                  # 10 kills, embedded model, 5 steps, 160 images
    python -m bench.kill_resume --repeats 3 --num-images 48

One uninterrupted reference run, then for each repeat a fresh output folder: the generation
command is started, SIGKILLed after a uniformly random time while the reference made its shards
(from a second before its first shard was recorded to its end), and run again to the end. Each
result must hold the reference's shard files byte for byte, and every index exactly once.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dg_jax.data.generated import read_generated
from dg_jax.data.writer import dataset_files, stray_parts


def digest(out: str | os.PathLike) -> dict[str, str]:
    """sha256 of every shard file the manifest lists."""
    return {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest()
            for f in dataset_files(out)}


def index_check(out: str | os.PathLike, num_images: int) -> tuple[int, int]:
    """(lost, duplicated) indices of the data set in `out`."""
    index = read_generated(out)["index"]
    seen = set(index.tolist())
    return num_images - len(seen & set(range(num_images))), len(index) - len(seen)


def run(cmd: list[str], kill_after: float | None = None,
        watch: Path | None = None) -> tuple[bool, float, float | None]:
    """Runs `cmd`; with kill_after, SIGKILLs it then if still running. Returns (killed, seconds,
    seconds until the file `watch` appeared or None)."""
    start, appeared = time.time(), None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if appeared is None and watch is not None and watch.exists():
            appeared = time.time() - start
        if kill_after is not None and time.time() - start >= kill_after:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True, time.time() - start, appeared
        time.sleep(0.02)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return False, time.time() - start, appeared


def command(out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "sample.generate", "--out", str(out), *extra]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--num-images", type=int, default=160)
    p.add_argument("--seed", type=int, default=0, help="of the kill times")
    p.add_argument("--args", default="--batch-size 8 --shard-size 16 --steps 5 --method "
                   "distribution --target hair=uniform",
                   help="further sample.generate flags")
    a = p.parse_args(argv)
    extra = ["--num-images", str(a.num_images), *a.args.split()]
    rng = random.Random(a.seed)
    root = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    try:
        _, seconds, first = run(command(root / "reference", extra),
                                watch=root / "reference" / "manifest.json")
        reference = digest(root / "reference")
        print(f"reference: {len(reference)} shard files, {seconds:.1f} s, the first recorded "
              f"after {first:.1f} s (start-up and compilation)")
        print("| repeat | killed after (s) | killed | shard files done at the kill | stray parts "
              "left | identical after the rerun | lost | duplicated |")
        print("|---|---|---|---|---|---|---|---|")
        failures = 0
        for r in range(a.repeats):
            out = root / f"run{r}"
            # while shards are being made: from just before the first one is recorded to the end
            kill_after = rng.uniform(first - 1.0, seconds)
            killed, _, _ = run(command(out, extra), kill_after)
            done_at_kill = len(dataset_files(out))
            strays = len(stray_parts(out)) if out.exists() else 0
            run(command(out, extra))
            same = digest(out) == reference
            lost, duplicated = index_check(out, a.num_images)
            failures += (not same) or lost > 0 or duplicated > 0
            print(f"| {r} | {kill_after:.1f} | {killed} | {done_at_kill} | {strays} | {same} | "
                  f"{lost} | {duplicated} |", flush=True)
        print(f"{a.repeats - failures} of {a.repeats} repeats identical to the reference")
        return 1 if failures else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
