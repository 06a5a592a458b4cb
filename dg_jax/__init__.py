"""dg-jax: distribution-guided debiasing of diffusion models (Balancing Act, CVPR 2024) in JAX."""

__version__ = "0.2.0.dev0"
