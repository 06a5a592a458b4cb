"""Dataset-level balance: steer each batch towards what the data set written so far still lacks.

The paper balances every batch on its own, so a batch's error stays in the data set for good.
Here each batch's reference is the remaining deficit: with counts c [K] of the labels already
written (n images) and a batch of b, the batch should supply p_ref * (n + b) - c, clipped at 0
and normalised. Errors of earlier batches are paid back by later ones, and the data set's shares
converge to p_ref at any batch size.
"""

from __future__ import annotations

import numpy as np

# No allowed cell's reference falls below this fraction of its p_ref. An unbounded deficit
# swings to near-0 cells after a few unlucky batches; chi-square weighs a cell by 1 / p_ref, so
# the push then grows many-fold, overshoots, and the next deficit swings further (a 6-cell joint
# target at batch 64 ended in a few cells, its images broken). Mild deficits are left as they are.
MIN_SHARE = 0.5


def deficit_distribution(counts: np.ndarray, p_ref: np.ndarray, batch: int,
                         min_share: float = MIN_SHARE) -> np.ndarray:
    """counts [K] (labels written so far), p_ref [K], batch > 0 images -> distribution [K] for
    the next batch. Equal to p_ref when the counts are exactly on target; where the deficit
    would take a cell below min_share * p_ref, the deficit's departure from p_ref is scaled down
    (towards p_ref) just enough to keep every cell at that floor."""
    counts = np.asarray(counts, np.float64)
    p_ref = np.asarray(p_ref, np.float64)
    want = np.clip(p_ref * (counts.sum() + batch) - counts, 0.0, None)
    # Forbidden cells (p_ref 0) stay forbidden; all-zero happens only if p_ref itself is.
    want = np.where(p_ref > 0, want, 0.0)
    total = want.sum()
    if total == 0:
        return p_ref.astype(np.float32)
    deficit = want / total
    low = deficit < min_share * p_ref  # only cells with p_ref > 0 can be below
    step = 1.0
    if low.any():
        step = np.min((1 - min_share) * p_ref[low] / (p_ref[low] - deficit[low]))
    return (p_ref + step * (deficit - p_ref)).astype(np.float32)


def max_deviation(counts: np.ndarray, p_ref: np.ndarray) -> float:
    """Largest |share - p_ref| over the cells, in [0, 1] (0 for no images)."""
    counts = np.asarray(counts, np.float64)
    n = counts.sum()
    return float(np.abs(counts / n - p_ref).max()) if n else 0.0
