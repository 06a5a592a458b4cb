"""guided-diffusion's timestep respacing strings, as a sampler's timestep spacing.

    "ddim50"      the DDIM paper's stride: range(0, T, k) for the integer k that gives 50 steps
    "250"         250 steps evenly spread over [0, T - 1], rounded
    "10,20,30"    T cut into 3 equal sections (the first T % 3 one step longer), with 10, 20 and
                  30 evenly spread steps in them, from the noiseless end

A respaced sampler visits exactly these training timesteps, as guided-diffusion's
`SpacedDiffusion` does (its alpha_bar at each kept step is the training schedule's).
"""

from __future__ import annotations

import re

import numpy as np

_PATTERN = re.compile(r"ddim\d+|\d+(,\d+)*")


def is_respacing(spacing: str | None) -> bool:
    """Whether `spacing` is a guided-diffusion respacing string (not a diffusers spacing name)."""
    return spacing is not None and _PATTERN.fullmatch(spacing) is not None


def respaced_timesteps(num_train_timesteps: int, spacing: str) -> np.ndarray:
    """The kept training timesteps of a respacing string, ascending int32 [S]."""
    total = num_train_timesteps
    if spacing.startswith("ddim"):
        count = int(spacing[4:])
        strides = [k for k in range(1, total) if len(range(0, total, k)) == count]
        if not strides:
            raise ValueError(f"spacing {spacing!r}: no integer stride gives exactly {count} of "
                             f"{total} timesteps")
        return np.arange(0, total, strides[0], dtype=np.int32)
    counts = [int(c) for c in spacing.split(",")]
    steps, start = set(), 0
    for i, count in enumerate(counts):
        size = total // len(counts) + (i < total % len(counts))
        if not 1 <= count <= size:
            raise ValueError(f"spacing {spacing!r}: a section of {size} timesteps cannot hold "
                             f"{count} steps")
        stride = (size - 1) / (count - 1) if count > 1 else 1
        position = 0.0
        for _ in range(count):
            # round half to even, and the stride accumulated by addition, as guided-diffusion
            # does (multiplying instead moves a few .5 cases)
            steps.add(start + round(position))
            position += stride
        start += size
    return np.array(sorted(steps), dtype=np.int32)


def respaced_steps(spacing: str) -> int:
    """How many steps a respacing string gives (sections never share a timestep)."""
    if spacing.startswith("ddim"):
        return int(spacing[4:])
    return sum(int(c) for c in spacing.split(","))
