"""A small CNN attribute classifier with one softmax head per attribute.

It is the "existing attribute classifier" of the method: it labels generated images (pseudo-labels
for ADP training, and the labels written next to every generated image).

    clf = AttributeClassifier(ClassifierConfig(), rngs=nnx.Rngs(0))
    logits = clf(images)          # images: [B, H, W, 3] in [-1, 1] -> {"hair": [B, 2], ...}
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from dg_jax.models.layers import Conv


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    attributes: tuple[tuple[str, int], ...] = (("hair", 2), ("glasses", 2), ("skin", 3),
                                               ("smile", 2))
    channels: tuple[int, ...] = (16, 32, 64)  # one stage per entry; each after the first halves H, W
    groups: int = 8

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        return cls(attributes=tuple((str(n), int(k)) for n, k in d["attributes"]),
                   channels=tuple(d["channels"]), groups=d["groups"])

    @property
    def num_classes(self) -> dict[str, int]:
        return dict(self.attributes)


class Stage(nnx.Module):
    """Conv (stride s) -> GroupNorm -> SiLU -> Conv -> GroupNorm -> SiLU."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, rngs: nnx.Rngs):
        self.conv_a = Conv(cin, cout, stride=stride, dtype=None, rngs=rngs)
        self.norm_a = nnx.GroupNorm(cout, num_groups=groups, rngs=rngs)
        self.conv_b = Conv(cout, cout, dtype=None, rngs=rngs)
        self.norm_b = nnx.GroupNorm(cout, num_groups=groups, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.silu(self.norm_a(self.conv_a(x)))
        return nnx.silu(self.norm_b(self.conv_b(x)))


class AttributeClassifier(nnx.Module):
    def __init__(self, config: ClassifierConfig, *, rngs: nnx.Rngs):
        self.config = config
        stages, cin = [], 3
        for i, cout in enumerate(config.channels):
            stages.append(Stage(cin, cout, 1 if i == 0 else 2, config.groups, rngs))
            cin = cout
        self.stages = nnx.List(stages)
        self.heads = nnx.Dict({name: nnx.Linear(cin, k, rngs=rngs) for name, k in config.attributes})

    @property
    def num_classes(self) -> dict[str, int]:
        """attribute -> K: the labeller interface (`models.zero_shot`)."""
        return self.config.num_classes

    def features(self, images: jax.Array) -> jax.Array:
        """images [B, H, W, 3] in [-1, 1] -> pooled features [B, C]."""
        x = images
        for stage in self.stages:
            x = stage(x)
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        """images [B, H, W, 3] in [-1, 1] -> attribute -> logits [B, K]."""
        f = self.features(images)
        return {name: self.heads[name](f) for name, _ in self.config.attributes}

