"""Tiny configs and a crash shared by the tests."""

import contextlib
from unittest import mock

import pytest

from dg_jax.data.writer import DatasetWriter
from dg_jax.models.classifier import ClassifierConfig
from dg_jax.models.unet import UNetConfig

TINY_UNET = UNetConfig(sample_size=8, block_out_channels=(8, 16), layers_per_block=1,
                       down_attention=(False, True), attention_head_dim=8, norm_num_groups=4)
TINY_CLASSIFIER = ClassifierConfig(channels=(4, 8), groups=2)


@contextlib.contextmanager
def crash_at_shard(crashed: int):
    """A generation run inside stops with KeyboardInterrupt when shard `crashed`'s part is on
    disk but the manifest does not list it yet (expected: the block must raise it)."""
    commit = DatasetWriter.commit

    def crash(self, shard, manifest):
        if shard == crashed:
            raise KeyboardInterrupt
        commit(self, shard, manifest)

    with mock.patch.object(DatasetWriter, "commit", crash), pytest.raises(KeyboardInterrupt):
        yield
