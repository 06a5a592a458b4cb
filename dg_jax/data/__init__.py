"""Data sets: SynthFaces, generated-data shards and their reader."""

from dg_jax.data.generated import read_generated

__all__ = ["read_generated"]
