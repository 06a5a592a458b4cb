"""Timing jitted functions side by side: each is compiled first, then they take turns for a
number of rounds, so a busy machine slows them alike."""

import time
from collections.abc import Callable

import jax
import numpy as np


def median_seconds_in_turns(fns: dict, args_for_round: Callable[[int], tuple],
                            rounds: int) -> dict:
    """fns: key -> jitted function; args_for_round(r) -> its arguments in round r (round 0
    compiles, rounds 1..rounds are timed). Returns key -> median seconds per call."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args_for_round(0)))
    times = {key: [] for key in fns}
    for r in range(1, rounds + 1):
        for key, fn in fns.items():
            args = args_for_round(r)
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[key].append(time.perf_counter() - start)
    return {key: float(np.median(ts)) for key, ts in times.items()}
