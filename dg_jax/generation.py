"""The main job: sample images, label them with the attribute classifier, write shards + manifest.

    run(GenerateConfig(out="out/faces", num_images=1024, seed=0))

Sample i's noise comes from fold_in(key(seed), i) only, so the same config gives the same images,
and any shard can be regenerated alone.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image
from tqdm import tqdm

from dg_jax.data import generated
from dg_jax.data.images import to_model_range, to_uint8
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.errors import ConfigMismatchError, UserError
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.loading import load_classifier, load_unet
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
    png: bool = False  # also write OUT/png/<index>.png

    def validate(self) -> None:
        for name in ("num_images", "batch_size", "shard_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive")


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


def _check_output_dir(config: GenerateConfig) -> dict:
    """Creates OUT with run.json, or checks that an existing OUT was made with this config."""
    out = pathlib.Path(config.out)
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))
    wanted.pop("png")  # writing PNGs as well does not change the data set
    run_file = out / "run.json"
    if run_file.exists():
        saved = json.loads(run_file.read_text())
        if saved != wanted:
            diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            raise ConfigMismatchError(f"{out} holds a data set made with another config "
                                      f"(differs in {diff}); choose a new --out")
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a dg-jax output directory; choose a new --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        generated.write_json_atomic(run_file, wanted)
    return wanted


def run(config: GenerateConfig) -> dict:
    """Generates the data set (skipping shards already on disk) and returns the manifest."""
    config.validate()
    # Models first: a missing checkpoint must not leave an output directory behind.
    try:
        unet, model_config = load_unet(config.model or None)
    except (ValueError, ImportError) as e:
        raise UserError(f"cannot load model {config.model or 'embedded'}: {e}") from None
    # The resolved sampler (model defaults filled in) is what run.json records and checks.
    config = dataclasses.replace(config, sampler=config.sampler.resolve(model_config.sampling))
    sample = make_sampler(unet, model_config, config.sampler)
    if config.classifier == "none":  # e.g. a real model before a labeller for it exists
        label = lambda images: {}
    else:
        label = make_labeller(load_classifier(config.classifier or None))
    wanted = _check_output_dir(config)
    out = pathlib.Path(config.out)
    num_shards = -(-config.num_images // config.shard_size)
    bar = tqdm(total=config.num_images, desc="generate", unit="img", dynamic_ncols=True)
    if config.png:
        (out / "png").mkdir(exist_ok=True)
    start_time, made = time.time(), 0
    for shard in range(num_shards):
        lo = shard * config.shard_size
        hi = min(lo + config.shard_size, config.num_images)
        if generated.shard_path(out, shard).exists():
            bar.update(hi - lo)
            continue
        records = []
        for b in range(lo, hi, config.batch_size):
            # Pad the last batch to the full size so the sampler compiles once.
            idx = np.arange(b, b + config.batch_size)
            images = to_uint8(sample(sample_keys(config.seed, idx))[0])
            probs = jax.device_get(label(images))
            for j in range(min(config.batch_size, hi - b)):
                p = {n: v[j] for n, v in probs.items()}
                records.append(generated.encode_record(
                    images[j], idx[j], config.seed, {n: int(np.argmax(v)) for n, v in p.items()}, p))
                if config.png:
                    Image.fromarray(images[j]).save(out / "png" / f"{idx[j]:08d}.png")
            bar.update(min(config.batch_size, hi - b))
            made += min(config.batch_size, hi - b)
        generated.write_shard(generated.shard_path(out, shard), records)
    bar.close()
    elapsed = time.time() - start_time
    manifest = build_manifest(out, wanted)
    manifest["last_run"] = {"generated": made, "seconds": round(elapsed, 2),
                            "images_per_second": round(made / elapsed, 3) if made else None}
    generated.write_json_atomic(out / "manifest.json", manifest)
    return manifest


def build_manifest(out: pathlib.Path, config: dict) -> dict:
    """Counts and class shares of the labels in every shard under `out`."""
    counts: dict[str, list[int]] = {}
    total = 0
    for f in generated.shard_files(out):
        for r in generated.read_shard(f):
            total += 1
            for attr, probs in r["probs"].items():
                c = counts.setdefault(attr, [0] * len(probs))
                c[r["labels"][attr]] += 1
    return {
        "config": config,
        "num_images": total,
        "num_shards": len(generated.shard_files(out)),
        "counts": counts,
        "shares": {a: [round(v / total, 6) for v in c] for a, c in counts.items()},
    }
