"""Flax NNX models: the UNet with h-space access, the ADP, the attribute classifier, the Stable
Diffusion components. Loading them from checkpoints: `dg_jax.loading`."""

from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.classifier import AttributeClassifier, ClassifierConfig
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet, UNetConfig

__all__ = ["ADP", "ADPConfig", "AttributeClassifier", "ClassifierConfig", "ModelConfig", "UNet",
           "UNetConfig"]
