"""Target distributions: per attribute, or joint over a combination of attributes.

    parse_target("hair=0.5,0.5", {"hair": 2, "skin": 3})
    parse_target("skin=uniform", ...)
    parse_target("hair,skin=uniform", ...)                 # joint: 6 cells, row-major
    parse_target("hair,skin=0.25,0.15,0.1,0.25,0.15,0.1", ...)

A joint target over attributes (a, b) lists p(a=i, b=j) with j varying fastest. The batch
distribution of a joint target is the mean over samples of the outer product of the per-attribute
class probabilities (the predictor gives marginals per sample).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from dg_jax.errors import UserError

SUM_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class Target:
    """attributes: one name, or several for a joint target; probs: [prod(num_classes)] summing to 1."""

    attributes: tuple[str, ...]
    num_classes: tuple[int, ...]
    probs: tuple[float, ...]

    @property
    def name(self) -> str:
        return ",".join(self.attributes)

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.probs, np.float32)

    def to_spec(self) -> str:
        return f"{self.name}=" + ",".join(f"{p:g}" for p in self.probs)


def per_target_keys(keys: jax.Array, targets, salt: int) -> list[jax.Array]:
    """keys [B] -> per target, keys [B]: target j's are fold_in(key, salt + j), so what a sample
    draws for a target depends only on the sample's key (and not on the batch it is in)."""
    return [jax.vmap(lambda k, j=j: jax.random.fold_in(k, salt + j))(keys)
            for j in range(len(targets))]


def make_target(attributes, probs, num_classes: dict[str, int]) -> Target:
    """Validates and builds a Target; bad input raises UserError naming the problem."""
    attributes = tuple(attributes)
    if not attributes or len(set(attributes)) != len(attributes):
        raise UserError(f"target attributes {list(attributes)} must be distinct and non-empty")
    unknown = [a for a in attributes if a not in num_classes]
    if unknown:
        raise UserError(f"unknown attribute {unknown[0]!r} in target; known: {sorted(num_classes)}")
    ks = tuple(num_classes[a] for a in attributes)
    cells = math.prod(ks)
    if isinstance(probs, str) and probs == "uniform":
        probs = [1.0 / cells] * cells
    probs = np.asarray(probs, np.float64)
    name = ",".join(attributes)
    if probs.ndim != 1 or probs.size != cells:
        raise UserError(f"target {name} needs {cells} probabilities "
                        f"({' x '.join(map(str, ks))} classes), got {probs.size}")
    check_probabilities(name, probs)
    probs = probs / probs.sum()
    return Target(attributes, ks, tuple(float(p) for p in probs))


def check_probabilities(name: str, probs: np.ndarray) -> None:
    """A distribution: finite, non-negative, summing to 1 (within SUM_TOLERANCE)."""
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise UserError(f"target {name} has negative or non-finite probabilities")
    if abs(probs.sum() - 1.0) > SUM_TOLERANCE:
        raise UserError(f"target {name} sums to {probs.sum():.4f}, not 1")


def split_spec(spec: str) -> tuple[list[str], str | np.ndarray]:
    """'attr=p0,p1,...' or 'a,b=...' or '...=uniform' -> (attributes, probabilities or
    "uniform"). Checks what needs no model: the form, and that the numbers are a distribution."""
    if "=" not in spec:
        raise UserError(f"target {spec!r} must look like attr=p0,p1,... or attr=uniform")
    names, values = spec.split("=", 1)
    attributes = [n.strip() for n in names.split(",")]
    if values.strip() == "uniform":
        return attributes, "uniform"
    try:
        probs = np.asarray([float(v) for v in values.split(",")], np.float64)
    except ValueError:
        raise UserError(f"target {spec!r}: probabilities must be numbers") from None
    check_probabilities(",".join(attributes), probs)
    return attributes, probs


def parse_target(spec: str, num_classes: dict[str, int]) -> Target:
    """'attr=p0,p1,...' or 'a,b=...' (joint) or '...=uniform' -> Target."""
    return make_target(*split_spec(spec), num_classes)


def check_disjoint(targets: list[Target]) -> None:
    """The same attribute may not be steered by two targets (their gradients would fight)."""
    seen: dict[str, str] = {}
    for t in targets:
        for a in t.attributes:
            if a in seen:
                raise UserError(f"attribute {a!r} appears in targets {seen[a]} and {t.name}")
            seen[a] = t.name


def preserved_targets(attributes, shares: dict[str, list[float]], num_classes: dict[str, int],
                      targets: list[Target]) -> list[Target]:
    """Targets that hold `attributes` at `shares` (the unguided model's own, as an ADP bundle
    records them): guiding one attribute otherwise drags the others along."""
    taken = {a for t in targets for a in t.attributes}
    out = []
    for a in attributes:
        if a in taken:
            raise UserError(f"attribute {a!r} is both a target and preserved; preserve only "
                            "attributes that are not targets")
        if a not in shares:
            raise UserError(f"cannot preserve {a!r}: the ADP bundle records no unguided shares "
                            f"for it (recorded: {sorted(shares) or 'none'}); give it as a "
                            f"target instead ({{targets}} {a}=...)")
        out.append(make_target([a], shares[a], num_classes))
    return out
