"""What each batch is steered to, from the labels of the batches before it.

The paper balances every batch on its own, through the ADP's eyes: a batch's error stays in the
data set for good, and where the ADP misreads guided h, every batch misses the same way.

Dataset-level balance (`deficit_distribution`) steers each batch to the remaining deficit: with
counts c [K] of the labels already written (n images) and a batch of b, the batch should supply
p_ref * (n + b) - c, clipped at 0 and normalised. Errors of earlier batches are paid back by
later ones, and the data set's shares converge to p_ref at any batch size.

Corrected per-batch balance (`corrected_distribution`) aims each batch at p_ref itself, moved by
the bias the labels show: the mean gap between what the batches so far were steered to and what
they came out as. A steady misreading of the ADP is taken out after a few batches, while one
unlucky batch moves the next one's aim by a 1/k share only (k batches so far), so every batch
stays near p_ref.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

# How each batch's reference is chosen: the deficit (dataset), p_ref corrected by the labels'
# bias (batch-corrected), or p_ref itself (batch, the paper).
Balance = Literal["dataset", "batch-corrected", "batch"]
BALANCES: tuple[str, ...] = get_args(Balance)
# The modes that steer by the labels of earlier batches, and so need a labeller.
LABELLED_BALANCES = ("dataset", "batch-corrected")

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
    return floored(p_ref * (counts.sum() + batch) - counts, p_ref, min_share)


def corrected_distribution(asked: np.ndarray, counts: np.ndarray, p_ref: np.ndarray,
                           min_share: float = MIN_SHARE) -> np.ndarray:
    """asked [K]: the distributions the batches so far were steered to, each times its number of
    images, summed; counts [K]: their labels -> distribution [K] for the next batch: p_ref plus
    the mean bias (asked - counts) / n, floored as `deficit_distribution` is. p_ref itself before
    the first batch, or when the batches came out as they were steered."""
    counts = np.asarray(counts, np.float64)
    p_ref = np.asarray(p_ref, np.float64)
    n = counts.sum()
    if n == 0:
        return p_ref.astype(np.float32)
    return floored(p_ref + (np.asarray(asked, np.float64) - counts) / n, p_ref, min_share)


def floored(want: np.ndarray, p_ref: np.ndarray, min_share: float) -> np.ndarray:
    """want [K] (unnormalised; negative cells count as 0) -> the distribution [K] it asks for,
    with forbidden cells (p_ref 0) at 0 and its departure from p_ref scaled down just enough
    to keep every allowed cell at min_share * p_ref or above."""
    want = np.clip(want, 0.0, None)
    # Forbidden cells stay forbidden; all-zero happens only if p_ref itself is.
    want = np.where(p_ref > 0, want, 0.0)
    total = want.sum()
    if total == 0:
        return p_ref.astype(np.float32)
    aim = want / total
    low = aim < min_share * p_ref  # only cells with p_ref > 0 can be below
    step = 1.0
    if low.any():
        step = np.min((1 - min_share) * p_ref[low] / (p_ref[low] - aim[low]))
    return (p_ref + step * (aim - p_ref)).astype(np.float32)


def max_deviation(counts: np.ndarray, p_ref: np.ndarray) -> float:
    """Largest |share - p_ref| over the cells, in [0, 1] (0 for no images)."""
    counts = np.asarray(counts, np.float64)
    n = counts.sum()
    return float(np.abs(counts / n - p_ref).max()) if n else 0.0
