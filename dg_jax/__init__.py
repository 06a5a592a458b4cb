"""dg-jax: distribution-guided debiasing of diffusion models (Balancing Act, CVPR 2024) in JAX.

The public API (docs/API.md): loading models, targets, guidance and the sampler.
"""

__version__ = "0.2.0.dev0"

from dg_jax.balanced import BalancedSet, generate_balanced
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.samplers import sample_keys
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.guidance.methods import DistributionGuidance, SampleLevelGuidance
from dg_jax.guidance.targets import Target, parse_target
from dg_jax.loading import from_diffusers, load_adp, load_classifier, load_unet, save_unet
from dg_jax.sampling import Sampler, TextConditioning, make_sampler
from dg_jax.wrappers import ImageGuidance, classifier_free, h_edit_model

__all__ = [
    "BalancedSet", "DistributionGuidance", "GuidanceConfig", "ImageGuidance",
    "SampleLevelGuidance", "Sampler", "SamplerConfig", "Target", "TextConditioning",
    "classifier_free", "from_diffusers", "generate_balanced", "h_edit_model", "load_adp",
    "load_classifier", "load_unet", "make_sampler", "parse_target", "sample_keys", "save_unet",
]
