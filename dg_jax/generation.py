"""The main job: sample images, label them with the attribute classifier, write shards + manifest.

    run(GenerateConfig(out="out/faces", num_images=1024, seed=0))

Sample i's noise comes from fold_in(key(seed), i) only, so the same config gives the same images,
and any shard can be regenerated alone.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image
from tqdm import tqdm

from dg_jax import checkpoints, configs
from dg_jax.data import generated, shards
from dg_jax.data.images import to_model_range, to_uint8
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.errors import UserError
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.guidance.targets import Target, check_disjoint, parse_target
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.loading import load_adp, load_classifier, load_unet
from dg_jax.sampling import GUIDANCE_METHODS as SAMPLER_GUIDANCE_METHODS
from dg_jax.sampling import make_sampler


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    out: str = "out/synthfaces"
    num_images: int = 1024
    seed: int = 0
    batch_size: int = 64
    shard_size: int = 1024  # images per array_record shard
    model: str = ""  # UNet bundle or diffusers folder; empty: the embedded default
    classifier: str = ""  # labeller bundle; empty: the embedded SynthFaces classifier; "none"
    sampler: SamplerConfig = SamplerConfig()  # None fields: the model's sampling defaults
    method: str = "none"  # guidance: none | distribution | sample | image (see sampling.py)
    targets: tuple[str, ...] = ()  # "attr=p0,p1,..." or joint "a,b=..." (see guidance.targets)
    adp: str = ""  # ADP bundle for the model (distribution, sample); empty: the embedded model's
    guidance: GuidanceConfig = GuidanceConfig()
    png: bool = False  # also write OUT/png/<index>.png

    def validate(self) -> None:
        for name in ("num_images", "batch_size", "shard_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        if self.method not in GUIDANCE_METHODS:
            raise UserError(f"unknown --method {self.method!r}; use {' or '.join(GUIDANCE_METHODS)}")
        if self.method == "none" and self.targets:
            raise UserError("--target needs a guidance --method (e.g. distribution)")
        if self.method != "none" and not self.targets:
            raise UserError(f"--method {self.method} needs at least one --target")
        if self.method in ("distribution", "sample") and not self.adp and self.model:
            raise UserError(f"--method {self.method} needs --adp (an ADP bundle trained for the "
                            "model)")
        if self.method == "image" and self.classifier == "none":
            raise UserError("--method image guides with the classifier; --classifier none "
                            "leaves it without one")


GUIDANCE_METHODS = ("none", *SAMPLER_GUIDANCE_METHODS)


def load_guidance(config: GenerateConfig, classifier: AttributeClassifier | None
                  ) -> tuple[object, list[Target]]:
    """(ADP, validated targets) for a guided run, or (None, []) for an unguided one; image
    guidance needs no ADP (its targets are checked against the classifier's attributes). Whether
    the ADP fits the UNet is checked by `make_sampler`."""
    if config.method == "none":
        return None, []
    adp = None
    if config.method == "image":
        num_classes = classifier.config.num_classes
    else:
        path = config.adp or checkpoints.EMBEDDED_ADP  # validate(): empty only for the embedded UNet
        try:
            adp = load_adp(path)
        except (ValueError, ImportError) as e:
            raise UserError(f"cannot load ADP {path}: {e}") from None
        num_classes = adp.config.num_classes
    targets = [parse_target(spec, num_classes) for spec in config.targets]
    check_disjoint(targets)
    return adp, targets


def sample_keys(seed: int, indices: np.ndarray) -> jax.Array:
    """One key per sample from (seed, global index): [B] typed keys."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))


def make_labeller(classifier: AttributeClassifier):
    """Returns a jitted uint8 images [B, H, W, 3] -> attribute -> probabilities [B, K]."""
    graphdef, state = nnx.split(classifier)

    @jax.jit
    def label(state, images):
        logits = nnx.merge(graphdef, state)(to_model_range(images))
        return {n: jax.nn.softmax(v, axis=-1) for n, v in logits.items()}

    return lambda images: label(state, images)


def load_model(config):
    """(UNet, ModelConfig, config with its sampler resolved) for a config with `model` and
    `sampler` fields; the resolved sampler (model defaults filled in) is what run.json records."""
    try:
        unet, model_config = load_unet(config.model or None)
    except (ValueError, ImportError) as e:
        raise UserError(f"cannot load model {config.model or 'embedded'}: {e}") from None
    config = dataclasses.replace(config, sampler=config.sampler.resolve(model_config.sampling))
    return unet, model_config, config


def run(config: GenerateConfig) -> dict:
    """Generates the data set (skipping shards already on disk) and returns the manifest."""
    config.validate()
    # Models first: a missing checkpoint must not leave an output directory behind.
    unet, model_config, config = load_model(config)
    # The labeller; image guidance steers with it too. None for a real model without one.
    classifier = None if config.classifier == "none" else load_classifier(config.classifier or None)
    adp, targets = load_guidance(config, classifier)
    try:
        sample = make_sampler(unet, model_config, config.sampler, adp, targets, config.guidance,
                              method=config.method if config.method != "none" else "distribution",
                              classifier=classifier)
    except ValueError as e:  # an ADP for another UNet or for other timesteps
        raise UserError(str(e)) from None
    label = make_labeller(classifier) if classifier is not None else (lambda images: {})
    wanted = configs.to_dict(config)
    wanted.pop("png")  # writing PNGs as well does not change the data set
    shards.prepare_output_dir(config.out, wanted)
    out = pathlib.Path(config.out)
    if config.png:
        (out / "png").mkdir(exist_ok=True)

    def make_records(idx: np.ndarray, count: int) -> list[bytes]:
        images = to_uint8(sample(sample_keys(config.seed, idx))[0])
        probs = jax.device_get(label(images))
        records = []
        for j in range(count):
            p = {n: v[j] for n, v in probs.items()}
            records.append(generated.encode_record(
                images[j], idx[j], config.seed, {n: int(np.argmax(v)) for n, v in p.items()}, p))
            if config.png:
                Image.fromarray(images[j]).save(out / "png" / f"{idx[j]:08d}.png")
        return records

    bar = tqdm(total=config.num_images, desc="generate", unit="img", dynamic_ncols=True)
    start_time = time.time()
    made = shards.fill_missing_shards(out, config.num_images, config.shard_size,
                                      config.batch_size, make_records, bar)
    bar.close()
    elapsed = time.time() - start_time
    manifest = build_manifest(out, wanted)
    manifest["last_run"] = {"generated": made, "seconds": round(elapsed, 2),
                            "images_per_second": round(made / elapsed, 3) if made else None}
    shards.write_json_atomic(out / "manifest.json", manifest)
    return manifest


def build_manifest(out: pathlib.Path, config: dict) -> dict:
    """Counts and class shares of the labels in every shard under `out`."""
    counts: dict[str, list[int]] = {}
    total = 0
    for f in shards.shard_files(out):
        for r in shards.read_shard(f):
            total += 1
            for attr, probs in r["probs"].items():
                c = counts.setdefault(attr, [0] * len(probs))
                c[r["labels"][attr]] += 1
    return {
        "config": config,
        "num_images": total,
        "num_shards": len(shards.shard_files(out)),
        "counts": counts,
        "shares": {a: [round(v / total, 6) for v in c] for a, c in counts.items()},
    }
