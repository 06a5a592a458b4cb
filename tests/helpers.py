"""Tiny configs shared by the tests."""

from dg_jax.models.classifier import ClassifierConfig
from dg_jax.models.unet import UNetConfig

TINY_UNET = UNetConfig(sample_size=8, block_out_channels=(8, 16), layers_per_block=1,
                       down_attention=(False, True), attention_head_dim=8, norm_num_groups=4)
TINY_CLASSIFIER = ClassifierConfig(channels=(4, 8), groups=2)
