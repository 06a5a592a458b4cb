"""CLIP as a zero-shot attribute labeller: one prompt per class, per attribute.

    clip = load_clip("clip-vit-large-patch14")
    labeller = ZeroShotLabeller(clip, tokenizer, {"gender": ["a photo of a man",
                                                              "a photo of a woman"]})
    logits = labeller(images)   # images [B, H, W, 3] in [-1, 1] -> {"gender": [B, 2]}

A labeller is any module mapping images in [-1, 1] to attribute -> logits [B, K] with a
`num_classes` dict, as our trained `AttributeClassifier` does: generation, h-space collection and
evaluation take either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dg_jax.models.clip import CLIPModel

# CLIP's image normalisation (its processor's mean and std, RGB)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(images: jax.Array, size: int) -> jax.Array:
    """images [B, H, W, 3] in [-1, 1] -> CLIP's input [B, size, size, 3]: resized (bicubic, the
    whole square image; CLIP's processor resizes the short side then centre-crops, the same for
    square images up to its PIL resampling), normalised with CLIP's mean and std."""
    x = (images.astype(jnp.float32) + 1) / 2
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "bicubic")
    return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


class ZeroShotLabeller(nnx.Module):
    """images [B, H, W, 3] in [-1, 1] -> attribute -> logits [B, K]: CLIP's scaled cosine
    similarity of each image to each class prompt (softmax over an attribute's prompts is CLIP's
    zero-shot probability)."""

    def __init__(self, clip: CLIPModel, tokenizer: Callable[[Sequence[str]], np.ndarray],
                 prompts: Mapping[str, Sequence[str]]):
        for name, classes in prompts.items():
            if len(classes) < 2:
                raise ValueError(f"attribute {name!r} needs a prompt per class, at least 2, got "
                                 f"{list(classes)}")
        self.clip = clip
        self.prompts = {name: tuple(classes) for name, classes in prompts.items()}
        # class text embeddings are fixed: computed once, kept as (non-trainable) variables
        self.class_embeds = nnx.Dict({
            name: nnx.Variable(clip.text_embeds(jnp.asarray(tokenizer(list(classes)))))
            for name, classes in self.prompts.items()})

    @property
    def num_classes(self) -> dict[str, int]:
        return {name: len(classes) for name, classes in self.prompts.items()}

    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        pixels = clip_pixels(images, self.clip.vision_model.config.image_size)
        image = self.clip.image_embeds(pixels)
        scale = jnp.exp(self.clip.logit_scale[...])
        return {name: scale * image @ self.class_embeds[name][...].T for name in self.prompts}
