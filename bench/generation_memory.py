"""Peak memory (RSS) of the main job does not grow with the number of images.

    python -m bench.generation_memory                       # 500 vs 5,000 images
    python -m bench.generation_memory --sizes 500,5000,20000

Each size runs `sample.generate` (embedded model, few steps: memory, not pictures, is measured)
in its own process into a fresh folder; its peak RSS comes from wait4's rusage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """(peak resident set size in MiB, seconds) of running `cmd` to the end."""
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return usage.ru_maxrss / 1024, time.time() - start  # Linux: ru_maxrss in KiB


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="500,5000")
    p.add_argument("--args", default="--batch-size 64 --shard-size 1024 --steps 2 --method "
                   "distribution --target hair=uniform", help="further sample.generate flags")
    a = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="generation_memory_")
    try:
        print("| images | peak RSS (MiB) | seconds |")
        print("|---|---|---|")
        peaks = []
        for n in (int(s) for s in a.sizes.split(",")):
            cmd = [sys.executable, "-m", "sample.generate", "--out", f"{root}/{n}",
                   "--num-images", str(n), *a.args.split()]
            rss, seconds = peak_rss_mib(cmd)
            peaks.append(rss)
            print(f"| {n} | {rss:.0f} | {seconds:.0f} |", flush=True)
        print(f"largest / smallest peak: {max(peaks) / min(peaks):.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
