"""The model's unguided output, measured once and recorded in its ADP bundle.

    record_unguided(RecordUnguidedConfig(adp="runs/adp/bundle", out="runs/unguided"))

Two things a guided run compares itself with: the unguided label shares (`--preserve` holds
untargeted attributes there) and the unguided images' sharpness: its median (the quality guard's
washed-out check, `dg_jax.guard`) and how it differs by class (the guard's loss-of-detail check:
faces with glasses or long hair have more edges, so a guided run's sharpness is compared with
the unguided faces that carry the same labels). They go into the bundle's config.json as
report["unguided"].
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np

from dg_jax import checkpoints
from dg_jax.configs import option
from dg_jax.data.generated import read_generated
from dg_jax.data.images import to_model_range
from dg_jax.errors import UserError
from dg_jax.evaluation.fairness import class_shares
from dg_jax.generation import GenerateConfig, run
from dg_jax.guard import image_health
from dg_jax.loading import model_config_option

# Fewer images than this say too little of a class's sharpness: its factor stays 1.
MIN_CLASS_IMAGES = 20


@dataclasses.dataclass(frozen=True)
class RecordUnguidedConfig:
    adp: str = option("", "the ADP bundle to record into (its report's unguided entry is "
                          "replaced)")
    out: str = option("runs/unguided", "where the unguided images are generated (reused when "
                                       "rerun)")
    model: str = option("", "UNet bundle, diffusers folder or guided-diffusion checkpoint "
                            "(default: the embedded model)")
    model_config: str = model_config_option()
    classifier: str = option("", "the labeller (default: the embedded SynthFaces classifier)")
    num_images: int = 1024
    seed: int = 0
    batch_size: int = 64


def unguided_statistics_of(images: np.ndarray, labels: dict[str, np.ndarray],
                           num_classes: dict[str, int]) -> dict:
    """images uint8 [N, H, W, 3], labels attribute -> [N] -> {"num_images", "label_shares",
    "sharpness", "sharpness_by_class"}: the median sharpness, and per attribute each class's
    median over it ([K]; 1 for a class with fewer than MIN_CLASS_IMAGES images)."""
    sharpness = np.asarray(jax.device_get(image_health(to_model_range(images))["sharpness"]))
    median = float(np.median(sharpness))

    def factor(picked):
        return round(float(np.median(picked)) / median, 4) if len(picked) >= MIN_CLASS_IMAGES \
            else 1.0

    return {"num_images": len(images),
            "label_shares": {a: class_shares(labels[a], k).round(6).tolist()
                             for a, k in num_classes.items()},
            "sharpness": round(median, 6),
            "sharpness_by_class": {a: [factor(sharpness[labels[a] == c]) for c in range(k)]
                                   for a, k in num_classes.items()}}


def record_unguided(config: RecordUnguidedConfig) -> dict:
    """Generates (or reuses) the unguided images, measures them and writes report["unguided"]
    into the ADP bundle; returns what was written."""
    if not config.adp:
        raise UserError("{adp}: give the ADP bundle to record the unguided statistics into")
    meta = checkpoints.read_bundle_config(config.adp)
    num_classes = dict((n, k) for n, k in meta["config"]["attributes"])
    run(GenerateConfig(out=config.out, num_images=config.num_images, seed=config.seed,
                       batch_size=config.batch_size, model=config.model,
                       model_config=config.model_config, classifier=config.classifier))
    data = read_generated(config.out)
    labels = {a: data[f"label_{a}"] for a in num_classes if f"label_{a}" in data}
    if len(labels) != len(num_classes):
        raise UserError(f"the labeller does not label every ADP attribute "
                        f"({sorted(num_classes)}); it labels {sorted(labels)}")
    stats = unguided_statistics_of(data["image"], labels, num_classes)
    meta.setdefault("report", {})["unguided"] = {**stats, "seed": config.seed,
                                                 "model": config.model or "embedded"}
    path = pathlib.Path(config.adp) / "config.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return stats
