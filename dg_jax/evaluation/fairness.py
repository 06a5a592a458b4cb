"""How far generated class shares are from a reference distribution (pure numpy functions).

Shares come from argmax labels of an evaluation classifier (Choi et al. 2020), over single
attributes or over cells of attribute combinations (row-major, as guidance targets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# KL divides by the reference: a class it forbids (p_ref 0) that still appears counts as if its
# reference share were this, so the value stays finite (and large).
KL_FLOOR = 1e-6


def cell_labels(labels: Mapping[str, np.ndarray], attributes: Sequence[str],
                num_classes: Sequence[int]) -> np.ndarray:
    """Row-major cell index of each sample over `attributes`: int [N]."""
    return np.ravel_multi_index(tuple(np.asarray(labels[a]) for a in attributes),
                                tuple(num_classes))


def class_shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of samples per class: int [N] -> float [K]."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("no labels to count")
    return np.bincount(labels, minlength=num_classes)[:num_classes] / labels.size


def fairness_discrepancy(p_gen: np.ndarray, p_ref: np.ndarray) -> float:
    """FD = ||p_gen - p_ref||_2."""
    return float(np.linalg.norm(np.asarray(p_gen) - np.asarray(p_ref)))


def kl_divergence(p_gen: np.ndarray, p_ref: np.ndarray) -> float:
    """KL(p_gen || p_ref) in nats; 0 log 0 = 0, p_ref floored at KL_FLOOR."""
    p, q = np.asarray(p_gen, np.float64), np.maximum(np.asarray(p_ref, np.float64), KL_FLOOR)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def deviation_ratio(p_gen: np.ndarray, p_ref: np.ndarray) -> float:
    """max_k |p_gen,k - p_ref,k| / (1 - 1/K): 0 = on target; 1 = as far as a one-class set is
    from uniform."""
    k = len(p_ref)
    return float(np.max(np.abs(np.asarray(p_gen) - np.asarray(p_ref))) / (1 - 1 / k))


def fairness_metrics(p_gen: np.ndarray, p_ref: np.ndarray) -> dict:
    return {"shares": [round(float(v), 6) for v in p_gen],
            "reference": [round(float(v), 6) for v in p_ref],
            "fd": fairness_discrepancy(p_gen, p_ref), "kl": kl_divergence(p_gen, p_ref),
            "deviation_ratio": deviation_ratio(p_gen, p_ref)}
