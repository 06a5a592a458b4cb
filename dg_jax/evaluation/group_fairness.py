"""Group fairness of a classifier's predictions: accuracy per sensitive group and per
(group, class) cell, the worst group, and the equalized-odds and demographic-parity gaps.

Groups follow the group-robustness convention (Sagawa et al., Group DRO): a "cell" is a pair
(sensitive class g, true class y); the worst-group accuracy is the lowest cell accuracy and the
worst-group gap is the highest cell accuracy minus the lowest. A shortcut through the sensitive
attribute shows there: it helps the cells that agree with the training set's confound and hurts
the others.

    m = group_metrics(pred, target, sensitive, num_classes=2, num_groups=3)
"""

from __future__ import annotations

import numpy as np


def rate_range(rates: np.ndarray) -> float:
    """Largest minus smallest of the finite entries (0 where fewer than two)."""
    finite = rates[np.isfinite(rates)]
    return float(finite.max() - finite.min()) if finite.size > 1 else 0.0


def group_metrics(pred: np.ndarray, target: np.ndarray, sensitive: np.ndarray,
                  num_classes: int, num_groups: int) -> dict:
    """pred, target: int [N] classes of the target attribute; sensitive: int [N] groups.

    Returns accuracy (overall), group_accuracy [G], cell_accuracy [G][K] (NaN for an empty
    cell), worst_group_accuracy and worst_group_gap over cells, and
      demographic_parity_gap = max_c range_g P(pred = c | g)
      equalized_odds_gap     = max_{y, c} range_g P(pred = c | y, g)
    (for two classes: the larger of the true- and false-positive-rate gaps).
    """
    pred, target, sensitive = (np.asarray(a).astype(np.int64) for a in (pred, target, sensitive))
    if not (pred.shape == target.shape == sensitive.shape and pred.ndim == 1):
        raise ValueError(f"pred, target and sensitive must be [N] arrays of one length, got "
                         f"{pred.shape}, {target.shape}, {sensitive.shape}")
    correct = pred == target
    # counts[g, y, c]: examples of group g and true class y predicted as c
    counts = np.zeros((num_groups, num_classes, num_classes))
    np.add.at(counts, (sensitive, target, pred), 1)
    per_cell = counts.sum(-1)  # [G, K]
    with np.errstate(invalid="ignore", divide="ignore"):
        cell_accuracy = np.einsum("gyy->gy", counts) / per_cell
        group_accuracy = np.einsum("gyy->g", counts) / per_cell.sum(-1)
        predicted_given_group = counts.sum(1) / per_cell.sum(-1, keepdims=True)  # [G, C]
        predicted_given_cell = counts / per_cell[..., None]  # [G, K, C]
    filled = np.isfinite(cell_accuracy)
    return {
        "accuracy": float(correct.mean()),
        "group_accuracy": group_accuracy.tolist(),
        "cell_accuracy": cell_accuracy.tolist(),
        "worst_group_accuracy": float(cell_accuracy[filled].min()),
        "worst_group_gap": rate_range(cell_accuracy),
        "demographic_parity_gap": max(rate_range(predicted_given_group[:, c])
                                      for c in range(num_classes)),
        "equalized_odds_gap": max(rate_range(predicted_given_cell[:, y, c])
                                  for y in range(num_classes) for c in range(num_classes)),
    }
