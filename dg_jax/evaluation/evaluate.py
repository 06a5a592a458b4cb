"""Evaluates a generated data set: fairness per target and image quality against real SynthFaces.

    report = evaluate(EvaluateConfig(run_dir="out/faces"))   # writes out/faces/evaluation/

The evaluation network (`train/train_evaluator.py`) is not the labeller that guided the run:
its argmax labels give the class shares (FD, KL, deviation ratio) and its pooled features KID and
FID. Real images are fresh SynthFaces, once as the model's training distribution (BIASED_PROBS;
the paper's protocol) and once with the targets' distribution (quality without the shift in
attributes that debiasing is meant to make).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from dg_jax import checkpoints
from dg_jax.configs import option
from dg_jax.data import synthfaces
from dg_jax.data.generated import read_generated
from dg_jax.data.images import image_grid, to_model_range
from dg_jax.data.shards import read_json
from dg_jax.errors import UserError
from dg_jax.evaluation.fairness import cell_labels, class_shares, fairness_metrics
from dg_jax.evaluation.plots import share_chart
from dg_jax.evaluation.quality import frechet_distance, kernel_inception_distance
from dg_jax.guidance.targets import Target, check_disjoint, parse_target
from dg_jax.loading import load_classifier
from dg_jax.models.classifier import AttributeClassifier


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    run_dir: str = option("", "the generated data set (an OUT of sample.generate)",
                          positional=True)
    out: str = option("", "where the report goes (default: RUN_DIR/evaluation)")
    targets: tuple[str, ...] = option(
        (), "grade against this target instead of the run's own, e.g. hair=uniform, or a joint "
            "one, hair,skin=uniform; repeatable", flag="target", aliases=("joint",))
    evaluator: str = option("", "evaluation network bundle (default: the embedded SynthFaces "
                                "evaluator)")
    num_real: int = option(5000, "real SynthFaces per reference set for KID/FID (0: skip)")
    real_seed: int = option(12345, "seed of the real SynthFaces (not one any shipped network "
                                   "was trained on)")
    before: str = option("", "another run (e.g. unguided) shown as 'before' in shares.png")
    grid_size: int = option(64, "images in grid.png")


def make_featurizer(evaluator: AttributeClassifier, batch_size: int = 256):
    """uint8 images [N, H, W, 3] -> (pooled features [N, D] float32, attribute -> argmax [N])."""
    graphdef, state = nnx.split(evaluator)

    @jax.jit
    def run(state, images):
        model = nnx.merge(graphdef, state)
        features = model.features(to_model_range(images))
        logits = {n: model.heads[n](features) for n, _ in model.config.attributes}
        return features, {n: jnp.argmax(v, -1).astype(jnp.int32) for n, v in logits.items()}

    def featurize(images: np.ndarray):
        parts = [jax.device_get(run(state, images[i:i + batch_size]))
                 for i in range(0, len(images), batch_size)]
        features = np.concatenate([f for f, _ in parts])
        labels = {n: np.concatenate([lab[n] for _, lab in parts]) for n in parts[0][1]}
        return features, labels

    return featurize


def run_targets(run_dir: pathlib.Path, specs, num_classes: dict[str, int]) -> list[Target]:
    """The targets to grade against: `specs`, else those the run was generated with."""
    if not specs:
        manifest = read_json(run_dir / "manifest.json")
        specs = manifest["config"].get("targets", [])
    targets = [parse_target(s, num_classes) for s in specs]
    check_disjoint(targets)
    return targets


def target_probs(targets: list[Target]) -> dict:
    """SynthFaces probabilities with the targets' distribution, BIASED_PROBS elsewhere."""
    probs = {a: p for a, p in synthfaces.BIASED_PROBS.items()
             if not any(a in t.attributes for t in targets)}
    for t in targets:
        key = t.attributes[0] if len(t.attributes) == 1 else t.attributes
        probs[key] = t.array.reshape(t.num_classes)
    return probs


def cell_names(target: Target) -> list[str]:
    names = [[f"{a}:{c}" for c in synthfaces.ATTRIBUTES.get(a, range(k))]
             for a, k in zip(target.attributes, target.num_classes)]
    cells = [""]
    for level in names:
        cells = [f"{p} {n}".strip() for p in cells for n in level]
    return cells


def evaluate(config: EvaluateConfig) -> dict:
    run_dir = pathlib.Path(config.run_dir)
    if not config.run_dir or not (run_dir / "manifest.json").is_file():
        raise UserError(f"{run_dir} is not a generated data set (manifest.json missing)")
    evaluator = load_classifier(config.evaluator or checkpoints.EMBEDDED_EVALUATOR)
    num_classes = evaluator.config.num_classes
    targets = run_targets(run_dir, config.targets, num_classes)
    data = read_generated(run_dir)
    featurize = make_featurizer(evaluator)
    features, labels = featurize(data["image"])

    def fairness(labels: dict[str, np.ndarray]) -> dict:
        return {t.name: fairness_metrics(
            class_shares(cell_labels(labels, t.attributes, t.num_classes), len(t.probs)),
            t.array) for t in targets}

    report = {
        "run_dir": str(run_dir), "num_images": len(data["image"]),
        "evaluator": str(config.evaluator or checkpoints.EMBEDDED_EVALUATOR),
        "targets": [t.to_spec() for t in targets],
        "shares": {a: class_shares(v, num_classes[a]).round(6).tolist()
                   for a, v in labels.items()},
        "fairness": fairness(labels),
        # the same with the labels written by the run (its labeller): the guide's own view
        "fairness_by_labeller": fairness({k[len("label_"):]: v for k, v in data.items()
                                          if k.startswith("label_")})
        if all(f"label_{a}" in data for t in targets for a in t.attributes) else {},
    }
    if config.num_real > 0:
        report["quality"] = quality(features, featurize, targets, config,
                                    size=data["image"].shape[1], evaluator_id=report["evaluator"],
                                    labels=labels)

    out = pathlib.Path(config.out or run_dir / "evaluation")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    Image.fromarray(image_grid(data["image"][:config.grid_size], 8, scale=2)).save(out / "grid.png")
    if targets:
        before = {}
        if config.before:
            _, before_labels = featurize(read_generated(config.before)["image"])
            before = {t.name: class_shares(cell_labels(before_labels, t.attributes,
                                                       t.num_classes), len(t.probs))
                      for t in targets}
        panels = [{"title": t.name, "cells": cell_names(t),
                   "bars": {**({"before": before[t.name]} if before else {}),
                            "generated": report["fairness"][t.name]["shares"],
                            "target": t.array}} for t in targets]
        share_chart(out / "shares.png", panels)
    return report


# (evaluator, num_real, seed, size, what was drawn) -> features: a process that evaluates many runs
# (bench/results.py) renders and featurizes each real reference set once.
_REAL_FEATURES: dict[tuple, np.ndarray] = {}


def real_features(featurize, evaluator_id: str, probs: dict, config: EvaluateConfig,
                  size: int) -> np.ndarray:
    """Evaluator features [num_real, D] of fresh real SynthFaces drawn with `probs`."""
    drawn = repr(sorted((str(k), np.asarray(v).round(9).tolist()) for k, v in probs.items()))
    return _cached_features(featurize, (evaluator_id, config.num_real, config.real_seed, size,
                                        drawn),
                            lambda: synthfaces.generate(config.num_real, config.real_seed, probs,
                                                        size=size)[0])


def matched_features(featurize, evaluator_id: str, labels: dict[str, np.ndarray],
                     config: EvaluateConfig, size: int) -> np.ndarray:
    """Evaluator features [num_real, D] of real SynthFaces with the generated images' own
    attribute combinations: num_real label vectors drawn (with replacement) from `labels`
    (attribute -> [N], as the evaluator read them), each rendered with fresh nuisance factors."""
    labels = {a: np.asarray(labels[a], np.int32) for a in synthfaces.ATTRIBUTES}

    def render():
        rng = np.random.default_rng(config.real_seed)
        rows = rng.choice(len(next(iter(labels.values()))), config.num_real, replace=True)
        return synthfaces.render_faces({a: v[rows] for a, v in labels.items()}, rng, size)

    return _cached_features(featurize, (evaluator_id, config.num_real, config.real_seed, size,
                                        np.stack(list(labels.values())).tobytes()), render)


def _cached_features(featurize, key: tuple, make_images) -> np.ndarray:
    """featurize(make_images()) features, computed once per key in this process."""
    if key not in _REAL_FEATURES:
        _REAL_FEATURES[key] = featurize(make_images())[0]
    return _REAL_FEATURES[key]


def quality(features: np.ndarray, featurize, targets: list[Target], config: EvaluateConfig,
            size: int, evaluator_id: str, labels: dict[str, np.ndarray] | None = None) -> dict:
    """KID and FID against real SynthFaces of the training distribution, of the targets' and
    ("matched") of the attribute combinations the evaluator reads on the generated images
    (`labels`). The evaluation network's features see attributes, so the first two also charge a
    set for its attribute mix; the matched one isolates image quality: a guided set whose
    off-target attributes drifted (glasses guidance moving smile, say), or whose attributes now
    go together differently (who wears glasses), is compared with real faces of that same mix,
    while broken images stay far from any real ones."""
    references = {"training": real_features(featurize, evaluator_id, synthfaces.BIASED_PROBS,
                                            config, size)}
    if targets:
        references["target"] = real_features(featurize, evaluator_id, target_probs(targets),
                                             config, size)
    if labels:
        references["matched"] = matched_features(featurize, evaluator_id, labels, config, size)
    return {name: {"kid": kernel_inception_distance(features, real),
                   "fid": frechet_distance(features, real), "num_real": config.num_real}
            for name, real in references.items()}
