"""Collect h-space trajectories with pseudo-labels: the ADP's training data.

Two sources of labelled h (METHOD.md section 3):
  generate  sample from the model, record h at every step, label the final image with the
            attribute classifier (the h the guided sampler will actually see);
  invert    DDIM-invert images (the original code's path) and record h at every inversion
            step: SynthFaces draws, or real images (--images: a folder, sample i the i-th file
            by name, or tfds:NAME[:SPLIT], sample i example i), labelled by the classifier, a
            label file by index, or a TFDS set's own attributes (--labels tfds:ATTR,...).
Shards are written resumably (rerun = continue) and memory does not grow with num_samples.
For a text-to-image model (generate only), sample i has prompt i mod len(prompts), h is the
conditional branch's (what the guided sampler's ADP reads) and the labeller is CLIP zero-shot
(--clip) or a classifier.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from typing import Literal

import jax
import numpy as np
from tqdm import tqdm

from dg_jax import configs
from dg_jax.balanced import make_labeller
from dg_jax.configs import option
from dg_jax.data import shards, synthfaces
from dg_jax.data.hspace import encode_h_record
from dg_jax.data.image_sources import open_images, tfds_labeller
from dg_jax.data.images import to_model_range, to_uint8
from dg_jax.data.label_file import LabelFile
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.samplers import sample_keys
from dg_jax.errors import UserError, nested_at
from dg_jax.generation import load_model
from dg_jax.loading import model_config_option
from dg_jax.sampling import TextConditioning, make_h_inverter, make_sampler, sampling_plan
from dg_jax.text_to_image import TextToImageConfig, load_labeller, split_model


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    out: str = option("runs/hspace", "output directory", required=True)
    num_samples: int = 2048
    source: Literal["generate", "invert"] = option(
        "generate", "generate: h along the generation path, the final images labelled; invert: "
                    "h of DDIM-inverted images (SynthFaces, or --images)")
    seed: int = 0
    batch_size: int = 64
    shard_size: int = option(256, "samples per shard (~0.8 MB each for the embedded model's h)")
    model: str = option("", "UNet bundle, diffusers folder or guided-diffusion checkpoint (with "
                            "--model-config); default: the embedded model")
    model_config: str = model_config_option()
    classifier: str = option("", "labeller bundle (default: the embedded SynthFaces "
                                 "classifier)")
    sampler: SamplerConfig = option(SamplerConfig(), flatten=True, group="sampling")
    invert_probs: Literal["uniform", "biased"] = option(
        "uniform", "class probabilities of the SynthFaces images to invert")
    images: str = option("", "--source invert: real images to invert instead of SynthFaces: a "
                             "folder (sample i = the i-th file by name) or tfds:NAME[:SPLIT] (a "
                             "locally prepared TFDS set); label them with --labels or "
                             "--classifier")
    text: TextToImageConfig = option(TextToImageConfig(), flatten=True,
                                     group="text-to-image (a Stable Diffusion --model)")
    labels: str = option("", "label file by sample index (CSV index,<attr>,... or .npz) instead "
                             "of a labeller; or tfds:ATTR,NAME=ATTR,... for the binary "
                             "attributes of a TFDS --images set (data/label_file.py)")

    def validate(self) -> None:
        configs.check_choices(self)
        for name in ("num_samples", "batch_size", "shard_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"{{{name}}} must be positive")
        with nested_at("text."):
            self.text.validate(self.classifier)
        if self.labels and (self.classifier or self.text.clip):
            raise UserError("{labels} replaces the labeller: give it without {classifier} or "
                            "{text.clip}")
        if self.images and self.source != "invert":
            raise UserError("{images} are inverted: give them with {source} invert")
        if self.labels.startswith("tfds:") and not self.images.startswith("tfds:"):
            raise UserError("{labels} tfds:ATTR,... reads the attributes of a TFDS {images} "
                            "set; give {images} tfds:NAME[:SPLIT]")
        if self.text.prompts and self.source == "invert":
            raise UserError("{source} invert is for unconditional models; use {source} "
                            "generate with {text.prompts}")


def collect(config: CollectConfig) -> dict:
    """Writes the h-space shards (skipping finished ones); returns a summary."""
    config.validate()
    model, model_config, config = load_model(config)
    sd, unet = split_model(model, config.text)
    _, timesteps, _, _ = sampling_plan(model_config, config.sampler)
    if config.labels.startswith("tfds:"):
        label_file = tfds_labeller(config.images, config.labels[len("tfds:"):])
    elif config.labels:
        label_file = LabelFile(config.labels)
    else:
        labeller = load_labeller(config.text, config.classifier, sd is not None)
        if labeller is None:
            raise UserError("h-space samples need labels: give {text.clip} with "
                            "{text.class_prompts}, {classifier} or {labels}")
        label = make_labeller(labeller)
    later = ("text", "labels", "model_config", "images")
    wanted = {**configs.to_recorded_dict(config, later_fields=later),
              "timesteps": [int(t) for t in timesteps]}
    # bad --images fail before anything is written
    load_images = images_to_invert(config, unet.config.sample_size) if (
        config.source == "invert") else None
    # More samples for a collection that holds whole shards: the same samples, and more
    if shards.grow_output_dir(config.out, wanted, "num_samples", config.shard_size):
        print(f"{config.out}: growing the collection to {config.num_samples} samples",
              file=sys.stderr)
    shards.prepare_output_dir(config.out, wanted)

    if config.source == "generate":
        text = TextConditioning(config.text.cfg_scale) if sd is not None else None
        sample = make_sampler(unet, model_config, config.sampler, record_h=True, text=text,
                              vae=sd.vae if sd is not None else None).jitted()
        prompts = config.text.prompts
        uncond = sd.encode_prompts([config.text.negative_prompt])[0] if sd is not None else None

        def images_and_h(idx):
            context = None if sd is None else sd.encode_prompts(
                [prompts[i % len(prompts)] for i in idx])
            images, trace = sample(sample_keys(config.seed, idx), context=context,
                                   uncond_context=uncond)
            return np.asarray(to_uint8(images)), trace["h"]
    else:
        invert = make_h_inverter(unet, model_config, config.sampler)

        def images_and_h(idx):
            images = load_images(idx)
            return images, invert(to_model_range(images))

    def make_records(idx: np.ndarray, count: int) -> list[bytes]:
        images, hs = images_and_h(idx)
        hs = np.asarray(jax.device_get(hs))  # [S, B, h, w, c]
        if config.labels:  # by sample index; the padding rows of a last batch have none
            probs = {n: np.resize(v, (len(idx), v.shape[1]))
                     for n, v in label_file(idx[:count]).items()}
        else:
            probs = jax.device_get(label(images))
        records = []
        for j in range(count):
            p = {n: v[j] for n, v in probs.items()}
            records.append(encode_h_record(hs[:, j], timesteps, idx[j], config.seed,
                                           {n: int(np.argmax(v)) for n, v in p.items()}, p))
        return records

    bar = tqdm(total=config.num_samples, desc=f"h-space ({config.source})", unit="sample",
               dynamic_ncols=True)
    made = shards.fill_missing_shards(config.out, config.num_samples, config.shard_size,
                                      config.batch_size, make_records, bar)
    bar.close()
    summary = {"num_samples": config.num_samples, "made_now": made,
               "num_shards": len(shards.shard_files(config.out)),
               "h_shape": list(unet.config.h_shape), "steps": len(timesteps)}
    shards.write_json_atomic(pathlib.Path(config.out) / "summary.json", summary)
    return summary


def images_to_invert(config: CollectConfig, size: int):
    """indices [B] -> uint8 images [B, size, size, 3]: the --images (the padding rows of a last
    batch repeat its last image), or SynthFaces draws, one per batch seeded by (seed, first
    index) so that any shard can be rebuilt alone."""
    if config.images:
        images = open_images(config.images, size)
        if len(images) < config.num_samples:
            raise UserError(f"{{images}} {config.images} holds {len(images)} images, fewer "
                            f"than {{num_samples}} {config.num_samples}")
        return lambda idx: images.load(np.minimum(idx, config.num_samples - 1))
    probs = None if config.invert_probs == "uniform" else synthfaces.BIASED_PROBS
    return lambda idx: synthfaces.generate(len(idx), int(config.seed * 1_000_003 + idx[0]),
                                           probs, size)[0]
