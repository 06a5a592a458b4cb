"""Figures of an evaluation (class shares against the target) and of ADP training (held-out
accuracy per step). They need matplotlib, the `plots` extra."""

from __future__ import annotations

import numpy as np

from dg_jax.errors import UserError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'dg-jax[plots]'") from None
    matplotlib.use("Agg")  # files only; no display on TPU hosts or CI
    import matplotlib.pyplot as plt

    return plt


def share_chart(path, panels: list[dict]) -> None:
    """One bar panel per target: panels[i] = {"title", "cells" (names), "bars": {label: shares}}.
    Bars of one cell stand side by side (e.g. before, after, target)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 + 1.6 * max(
        len(p["cells"]) for p in panels) * len(panels) / 2, 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        x = np.arange(len(panel["cells"]))
        width = 0.8 / len(panel["bars"])
        for j, (label, shares) in enumerate(panel["bars"].items()):
            ax.bar(x + (j - (len(panel["bars"]) - 1) / 2) * width, shares, width, label=label)
        ax.set_xticks(x, panel["cells"], rotation=30 if len(x) > 3 else 0, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel("share")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_plot(path, timesteps: list[int], accuracy: dict[str, list[float]], title: str) -> None:
    """Held-out accuracy per sampling step, one line per attribute (x: timestep, noisiest left)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, acc in accuracy.items():
        ax.plot(timesteps, acc, label=name)
    ax.invert_xaxis()
    ax.set_xlabel("timestep t")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(top=1.0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
