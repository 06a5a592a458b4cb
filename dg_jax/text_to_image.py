"""What the generation and h-space jobs share for text-to-image (Stable Diffusion) models:
their options, the labeller choice (CLIP zero-shot or a classifier), and the model split."""

from __future__ import annotations

import dataclasses

from dg_jax.configs import option
from dg_jax.errors import UserError
from dg_jax.loading import load_classifier
from dg_jax.models.stable_diffusion import StableDiffusion
from dg_jax.models.unet import UNet


@dataclasses.dataclass(frozen=True)
class TextToImageConfig:
    """prompts: the generation job fills every batch with them in equal groups of consecutive
    rows (one prompt per group, each group balanced on its own); h-space collection gives sample
    i prompt i mod len(prompts). clip + class_prompts: label by CLIP zero-shot."""

    prompts: tuple[str, ...] = option(
        (), "repeatable: generation puts each prompt in an equal group of rows of every batch, "
            "and balances each group on its own", flag="prompt")
    negative_prompt: str = option(
        "", "the unconditional branch of classifier-free guidance (default: empty)")
    cfg_scale: float = option(
        7.5, "classifier-free guidance weight w, u + w (c - u), as diffusers' guidance_scale (1: "
             "the conditional branch only); the strength of distribution guidance is "
             "--push-scale", flag="guidance-scale", aliases=("cfg-scale",))
    clip: str = option("", "CLIPModel folder: zero-shot labels")
    class_prompts: tuple[str, ...] = option(
        (), "with --clip, per attribute: ATTR=prompt for class 0|prompt for class 1|...; "
            "repeatable", flag="class-prompt")

    def validate(self, classifier: str) -> None:
        """Field names relative to this config; the job's config puts them under `text.`."""
        if self.cfg_scale < 1:
            raise UserError(f"{{cfg_scale}} must be >= 1, got {self.cfg_scale}")
        if self.cfg_scale != TextToImageConfig.cfg_scale and not self.prompts:
            raise UserError("{cfg_scale} is classifier-free guidance, for text models with "
                            "{prompts}; the strength of distribution guidance is "
                            "{/guidance.scale}")
        if bool(self.clip) != bool(self.class_prompts):
            raise UserError("{clip} and {class_prompts} go together: CLIP labels each attribute "
                            "by its class prompts")
        class_prompts(self.class_prompts)  # checks their form
        if self.clip and classifier:
            raise UserError("give either {clip} (zero-shot labels) or a classifier, not both")


def class_prompts(specs: tuple[str, ...]) -> dict[str, list[str]]:
    """"attr=prompt|prompt|..." specs -> attribute -> its class prompts."""
    out = {}
    for spec in specs:
        name, _, prompts = spec.partition("=")
        classes = [c.strip() for c in prompts.split("|")]
        if not name.strip() or len(classes) < 2 or not all(classes):
            raise UserError(f"bad {{class_prompts}} {spec!r}; use ATTR=prompt for class "
                            "0|prompt for class 1|...")
        out[name.strip()] = classes
    return out


def split_model(model, text: TextToImageConfig) -> tuple[StableDiffusion | None, UNet]:
    """(the text-to-image model or None, its UNet) for a loaded model; prompts must come with a
    text-to-image model and only with one."""
    if isinstance(model, StableDiffusion):
        if not text.prompts:
            raise UserError("the model is a text-to-image model: give {text.prompts}")
        return model, model.unet
    if text.prompts:
        raise UserError("{text.prompts} needs a text-to-image (Stable Diffusion) {model}")
    return None, model


def load_labeller(text: TextToImageConfig, classifier: str, text_to_image: bool):
    """The labeller (images in [-1, 1] -> attribute -> logits, with `num_classes`): CLIP
    zero-shot with --clip, a classifier bundle, the embedded SynthFaces classifier for the
    embedded model, or None (--classifier none; a text-to-image model without --clip or
    --classifier, for which the SynthFaces classifier means nothing)."""
    if text.clip:
        from dg_jax.convert.clip import load_clip
        from dg_jax.models.tokenizer import PromptTokenizer
        from dg_jax.models.zero_shot import ZeroShotLabeller

        try:
            clip = load_clip(text.clip)
            tokenizer = PromptTokenizer(text.clip, clip.text_model.config.max_position_embeddings)
        except (ValueError, ImportError) as e:
            raise UserError(f"cannot load CLIP {text.clip}: {e}") from None
        return ZeroShotLabeller(clip, tokenizer, class_prompts(text.class_prompts))
    if classifier == "none" or (text_to_image and not classifier):
        return None
    return load_classifier(classifier or None)
