"""The downstream experiment: a classifier for one target attribute, trained on a real set where
that attribute is confounded with a sensitive one, optionally with generated images added, and
graded on a test set with every (target, sensitive) cell equally common.

Real data is SynthFaces drawn with a confound (`data.downstream.confounded_probs`) or a TFDS
data set prepared locally (e.g. CelebA, attributes named by flags). Generated images come from
a `sample.generate` folder with the labeller's pseudo-labels of the target. Every image is
brought to `image_size` (centre crop, resize). The training schedule (steps, batch size) does
not depend on how many images there are, so runs with and without generated images have the
same budget.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from dg_jax.data import downstream
from dg_jax.errors import UserError
from dg_jax.evaluation.group_fairness import group_metrics
from dg_jax.models.classifier import ClassifierConfig
from dg_jax.training.classifier import ClassifierTrainConfig, export, fit_classifier, predict

METRICS = ("accuracy", "worst_group_accuracy", "worst_group_gap", "equalized_odds_gap",
           "demographic_parity_gap")


@dataclasses.dataclass(frozen=True)
class FairClassifierConfig(ClassifierTrainConfig):
    workdir: str = "runs/fair_classifier"
    model: ClassifierConfig = ClassifierConfig(attributes=(), channels=(16, 32, 64))  # head: target
    target: str = "smile"  # attribute the classifier predicts (name in the generated labels)
    sensitive: str = "skin"  # attribute the groups are made of
    real: str = "synthfaces"  # synthfaces | tfds:NAME (e.g. tfds:celeb_a)
    num_images: int = 2000  # real training images (tfds: a random subset; 0: all)
    bias: float = 0.9  # SynthFaces: strength of the confound, see data.downstream.confounded_probs
    num_eval: int = 3000  # test images before balancing the cells (tfds: a subset; 0: all)
    eval_seed: int = 999  # SynthFaces test set (the same for every run)
    image_size: int = 32
    tfds_data_dir: str = ""
    tfds_target: str = ""  # the target's name in the TFDS set (default: --target)
    tfds_sensitive: str = ""  # the sensitive attribute's name there (default: --sensitive)
    tfds_train_split: str = "train"
    tfds_test_split: str = "test"
    generated: str = ""  # a sample.generate folder whose images are added to the real ones
    num_generated: int = 0  # 0: all of them
    steps: int = 800
    batch_size: int = 64
    warmup_steps: int = 50
    save_every: int = 400
    log_every: int = 50
    data_seed: int = 0  # draws the real set (SynthFaces) or its subset (tfds) and the batches


def real_sets(config: FairClassifierConfig) -> tuple[downstream.AttributeSet,
                                                     downstream.AttributeSet]:
    """(training set, balanced test set) of real images."""
    if config.real == "synthfaces":
        if config.image_size != 32:
            raise UserError("SynthFaces images are 32x32; use {image_size} 32")
        if config.num_images <= 0 or config.num_eval <= 0:
            raise UserError("SynthFaces needs {num_images} and {num_eval} above 0")
        train = downstream.synthfaces_set(config.num_images, config.data_seed, config.target,
                                          config.sensitive, config.bias)
        test = downstream.synthfaces_set(config.num_eval, config.eval_seed, config.target,
                                         config.sensitive)
        return train, test
    if not config.real.startswith("tfds:"):
        raise UserError(f"unknown real data {config.real!r}; use synthfaces or tfds:NAME")
    name = config.real.removeprefix("tfds:")
    read = lambda split, num, balanced: downstream.tfds_set(  # noqa: E731
        name, split, config.tfds_target or config.target,
        config.tfds_sensitive or config.sensitive, config.image_size, num or None,
        config.data_seed if not balanced else config.eval_seed,
        config.tfds_data_dir or None, balanced)
    return (read(config.tfds_train_split, config.num_images, False),
            read(config.tfds_test_split, config.num_eval, True))


def composition(data: downstream.AttributeSet, num_classes: int, num_groups: int) -> dict:
    """Counts of a set's images per (sensitive, target) cell [G][K] (pseudo-labels for
    generated images), or per target class alone where the sensitive labels are unknown."""
    if data.sensitive is None:
        return {"images": len(data), "target": np.bincount(data.target, minlength=num_classes)
                .tolist()}
    cells = np.zeros((num_groups, num_classes), np.int64)
    np.add.at(cells, (data.sensitive, data.target), 1)
    return {"images": len(data), "cells": cells.tolist()}


def train_fair_classifier(config: FairClassifierConfig) -> dict:
    """Trains (or resumes) and grades the classifier; writes WORKDIR/report.json and returns it."""
    real, test = real_sets(config)
    num_classes = int(max(real.target.max(), test.target.max())) + 1
    num_groups = int(max(real.sensitive.max(), test.sensitive.max())) + 1
    sets = [real]
    if config.generated:
        sets.append(downstream.generated_set(config.generated, config.target, config.sensitive,
                                             config.num_generated or None, config.image_size))
        if int(sets[-1].target.max()) >= num_classes:
            raise UserError(f"the generated labels of {config.target!r} have more classes than "
                            f"the real ones ({num_classes})")
    train = downstream.concatenate([dataclasses.replace(s, sensitive=None) for s in sets])
    model_config = dataclasses.replace(config.model, attributes=((config.target, num_classes),))
    run = dataclasses.replace(config, model=model_config)
    model, steps = fit_classifier(run, lambda: (train.images, {config.target: train.target}),
                                  len(train), desc="fair classifier")
    pred = predict(model, test.images)[config.target]
    report = {
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "model"},
        "trained_steps": steps,
        "training_set": {"real": composition(real, num_classes, num_groups),
                         "generated": composition(sets[1], num_classes, num_groups)
                         if len(sets) > 1 else None},
        "test_set": composition(test, num_classes, num_groups),
        **group_metrics(pred, test.target, test.sensitive, num_classes, num_groups),
    }
    if config.export:
        export(config.export, model, {"fairness": {k: report[k] for k in METRICS},
                                      "trained_steps": steps})
    os.makedirs(config.workdir, exist_ok=True)
    with open(os.path.join(config.workdir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"accuracy {report['accuracy']:.4f}, worst group {report['worst_group_accuracy']:.4f}, "
          f"worst-group gap {report['worst_group_gap']:.4f}, equalized odds gap "
          f"{report['equalized_odds_gap']:.4f}, demographic parity gap "
          f"{report['demographic_parity_gap']:.4f}", flush=True)
    return report
