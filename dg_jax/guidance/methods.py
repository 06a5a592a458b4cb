"""What a guided sampler steers with, as values a caller builds and passes to `make_sampler`.

    DistributionGuidance(adp, targets)   the paper's method: the batch distribution of the ADP's
                                         predictions on h is pushed towards the targets
    SampleLevelGuidance(adp, targets)    baseline: each sample towards its own cell drawn from
                                         the targets, -log p(cell) through the ADP on h

Each builds, inside the traced sampler, an *h edit* for one sampling step:
edit(h [B, ...], t [B], i) -> (h', trace). `dg_jax.wrappers` puts an edit between a UNet's
`encode` and `decode`. Image-space guidance (the classifier on x0_hat) is not an h edit; it is
`dg_jax.wrappers.ImageGuidance`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dg_jax.guidance.distribution import GuidanceConfig, References, guide_h, powered_targets, step_power
from dg_jax.guidance.posterior import commit_draws
from dg_jax.guidance.sample_level import draw_cells, guide_h_per_sample
from dg_jax.guidance.targets import Target
from dg_jax.models.adp import ADP

# edit(h [B, ...], t [B] int32, step index) -> (h' [B, ...], trace)
Edit = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, dict]]
# scale_at(t [B], step index) -> the step's guidance strength s_t
ScaleAt = Callable[[jax.Array, jax.Array], jax.Array]


def check_adp_fits(adp: ADP, h_shape: Sequence[int], timesteps: np.ndarray) -> None:
    """An ADP must read this UNet's h (and, per-step heads, these exact timesteps)."""
    if tuple(adp.config.h_shape) != tuple(h_shape):
        raise ValueError(f"ADP expects h of shape {tuple(adp.config.h_shape)} but the UNet's h is "
                         f"{tuple(h_shape)}: ADP and UNet do not match")
    if adp.config.timesteps is not None and tuple(adp.config.timesteps) != tuple(
            int(t) for t in timesteps):
        raise ValueError(f"this per-step ADP was trained for {len(adp.config.timesteps)} "
                         f"sampling steps {list(adp.config.timesteps)[:3]}..., the sampler uses "
                         f"{len(timesteps)} steps {list(timesteps)[:3]}...")


def checked_targets(targets: Sequence[Target]) -> tuple[Target, ...]:
    """Guidance values keep their targets as a tuple, and need at least one."""
    targets = tuple(targets)
    if not targets:
        raise ValueError("guidance needs at least one target")
    return targets


def _predictor(adp: ADP, t: jax.Array, i: jax.Array):
    """h -> logits at the step's timestep t[0], sized to h (a prompt group's rows, too)."""
    return lambda h: adp(h, jnp.full(h.shape[0], t[0]), i)


@dataclasses.dataclass(frozen=True, eq=False)
class DistributionGuidance:
    """The paper's method. scope (under a device mesh): "global" pushes the global batch's p_hat
    (one all-reduce of K floats per step), "local" each device's own.

    trace: "p_hat" (target name -> p_hat before the update, [K], or [G, K] per prompt group) and
    "h_change" (each sample's ||h' - h|| / ||h||, [B])."""

    adp: ADP
    targets: tuple[Target, ...]
    config: GuidanceConfig = GuidanceConfig()
    scope: str = "global"
    # attribute -> the ADP's held-out accuracy at its best step (`adp_accuracy` of its bundle's
    # report): which targets config.power_min_accuracy lets the posterior power act on
    accuracy: Mapping[str, float] | None = None

    def __post_init__(self):
        object.__setattr__(self, "targets", checked_targets(self.targets))
        if self.scope not in ("global", "local"):
            raise ValueError(f"unknown distribution scope {self.scope!r}; use global or local")

    @property
    def module(self) -> ADP:
        return self.adp

    def h_edit(self, adp: ADP, keys: jax.Array, refs: References, scale_at: ScaleAt,
               axis: str | None, group: int | None, num_steps: int) -> Edit:
        """adp: the sampler's (merged) ADP; axis: the mesh's batch axis, if any; group: push
        each run of `group` consecutive samples on its own (prompt groups); num_steps: the
        sampling loop's length (the posterior power's schedule, `step_power`)."""
        axis = axis if self.scope == "global" else None
        draws = commit_draws(keys, self.targets) if self.config.push == "commit" else None
        powered = powered_targets(self.config, self.targets, self.accuracy)

        def guide(h, predict, scale, axis, draws, power):
            return guide_h(h, predict, self.targets, self.config, scale, axis, refs, draws, power,
                           powered)

        def edit(h, t, i):
            predict, scale = _predictor(adp, t, i), scale_at(t, i)
            power = step_power(self.config, i, num_steps)
            if group is None:
                h, p_hat, change = guide(h, predict, scale, axis, draws, power)
            else:  # a group lies on one device: its distribution is its own
                if h.shape[0] % group:
                    raise ValueError(f"batch {h.shape[0]} is not a whole number of groups of "
                                     f"{group}")

                def by_group(x):
                    return x.reshape(x.shape[0] // group, group, *x.shape[1:])

                h, p_hat, change = jax.vmap(
                    lambda hg, dg: guide(hg, predict, scale, None, dg, power))(
                    by_group(h), jax.tree.map(by_group, draws))
                h, change = h.reshape(-1, *h.shape[2:]), change.reshape(-1)
            return h, {"p_hat": p_hat, "h_change": change}

        return edit


@dataclasses.dataclass(frozen=True, eq=False)
class SampleLevelGuidance:
    """Baseline: sample b is pushed towards its own cell, drawn from the targets (or refs) with
    its key. trace: "p_hat" (target name -> batch distribution before the update)."""

    adp: ADP
    targets: tuple[Target, ...]
    config: GuidanceConfig = GuidanceConfig()

    def __post_init__(self):
        object.__setattr__(self, "targets", checked_targets(self.targets))

    @property
    def module(self) -> ADP:
        return self.adp

    def h_edit(self, adp: ADP, keys: jax.Array, refs: References, scale_at: ScaleAt,
               axis: str | None, group: int | None, num_steps: int) -> Edit:
        cells = draw_cells(keys, self.targets, refs)

        def edit(h, t, i):
            h, p_hat = guide_h_per_sample(h, _predictor(adp, t, i), self.targets, cells,
                                          self.config, scale_at(t, i))
            return h, {"p_hat": p_hat}

        return edit
