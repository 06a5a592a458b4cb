"""Trains the SynthFaces attribute classifier on ground-truth labels (balanced classes).

Augmentations (flips, pixel noise, blur) make it robust to what generated images look like, so its
pseudo-labels stay confident on them; held-out accuracy is measured on clean SynthFaces.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dg_jax import checkpoints, configs
from dg_jax.data import synthfaces
from dg_jax.data.images import to_model_range
from dg_jax.models.classifier import AttributeClassifier, ClassifierConfig
from dg_jax.training import common


@dataclasses.dataclass(frozen=True)
class ClassifierTrainConfig:
    workdir: str = "runs/synthfaces_classifier"
    model: ClassifierConfig = ClassifierConfig()
    num_images: int = 40_000
    num_eval: int = 5_000
    data_seed: int = 1  # held-out images use data_seed + 1000
    batch_size: int = 128
    steps: int = 1_500
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    seed: int = 0
    save_every: int = 250
    log_every: int = 25
    export: str = ""


@dataclasses.dataclass(frozen=True)
class EvaluatorTrainConfig(ClassifierTrainConfig):
    """The evaluation network: wider, another seed and other images than the labeller, so that
    guidance which steers with the labeller (directly, or through ADPs trained on its labels) is
    not graded by the same network. Its labels give FD; its pooled features give KID and FID."""

    workdir: str = "runs/synthfaces_evaluator"
    model: ClassifierConfig = ClassifierConfig(channels=(24, 48, 96))
    data_seed: int = 21
    steps: int = 1_000
    seed: int = 1


def classification_loss(model: AttributeClassifier, images: jax.Array, labels: dict) -> jax.Array:
    """Sum over attributes of the mean cross-entropy. images [B, H, W, 3]; labels name -> [B]."""
    logits = model(images)
    return sum(optax.softmax_cross_entropy_with_integer_labels(logits[n], labels[n]).mean()
               for n in labels)


def augment(images: jax.Array, key: jax.Array) -> jax.Array:
    """Random horizontal flip, blur of random strength and Gaussian pixel noise. [B, H, W, 3]."""
    k_flip, k_blur, k_noise, k_std = jax.random.split(key, 4)
    b = images.shape[0]
    flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
    x = jnp.where(flip, images[:, :, ::-1], images)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    box = sum(padded[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(3) for j in range(3)) / 9
    mix = jax.random.uniform(k_blur, (b, 1, 1, 1), maxval=0.7)
    x = (1 - mix) * x + mix * box
    std = jax.random.uniform(k_std, (b, 1, 1, 1), maxval=0.15)
    return x + std * jax.random.normal(k_noise, x.shape)


def predict(model: AttributeClassifier, images: np.ndarray,
            batch_size: int = 500) -> dict[str, np.ndarray]:
    """uint8 images [N, H, W, 3] -> attribute -> predicted class int [N]."""
    argmax = nnx.jit(lambda m, x: {n: jnp.argmax(v, -1) for n, v in m(x).items()})
    parts = [jax.device_get(argmax(model, to_model_range(images[start:start + batch_size])))
             for start in range(0, len(images), batch_size)]
    return {n: np.concatenate([p[n] for p in parts]) for n in model.num_classes}


def accuracy(model: AttributeClassifier, images: np.ndarray, labels: dict,
             batch_size: int = 500) -> dict[str, float]:
    """Per-attribute accuracy on uint8 images [N, H, W, 3]."""
    pred = predict(model, images, batch_size)
    return {n: float(np.mean(pred[n] == labels[n])) for n in labels}


def fit_classifier(config: ClassifierTrainConfig, data: Callable[[], tuple[np.ndarray, dict]],
                   num_images: int, desc: str = "classifier") -> tuple[AttributeClassifier, int]:
    """Trains config.model (or resumes from config.workdir) on `data`.

    data() -> (images uint8 [N, H, W, 3], labels: attribute -> int [N]) for every attribute of
    config.model; called once, when the first batch is needed. Returns the classifier and the
    number of steps it was trained for.
    """
    model = AttributeClassifier(config.model, rngs=nnx.Rngs(config.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup_steps,
                                                  config.steps)
    optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    state = dict(params=params, opt=optimizer.init(params), step=jnp.zeros((), jnp.int32))
    data = functools.cache(data)
    key = jax.random.key(config.seed)

    @jax.jit
    def train_step(state, batch):
        x = augment(batch["image"], jax.random.fold_in(key, state["step"]))
        loss_fn = lambda p: classification_loss(nnx.merge(graphdef, p), x, batch["labels"])  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        return dict(params=optax.apply_updates(state["params"], updates), opt=opt,
                    step=state["step"] + 1), loss

    def get_batch(idx):
        images, labels = data()
        return {"image": to_model_range(images[idx]),
                "labels": {n: labels[n][idx] for n in config.model.num_classes}}

    state = common.fit(config, state, train_step, get_batch, num_images, desc)
    return nnx.merge(graphdef, jax.device_get(state["params"])), int(state["step"])


def train(config: ClassifierTrainConfig) -> tuple[AttributeClassifier, dict[str, float]]:
    """Trains (or resumes) on SynthFaces; returns the classifier and its held-out accuracy per
    attribute."""
    model, steps = fit_classifier(
        config, lambda: synthfaces.generate(config.num_images, config.data_seed), config.num_images)
    eval_images, eval_labels = synthfaces.generate(config.num_eval, config.data_seed + 1000)
    acc = accuracy(model, eval_images, eval_labels)
    print("held-out accuracy: " + ", ".join(f"{n} {a:.4f}" for n, a in acc.items()), flush=True)
    if config.export:
        export(config.export, model, {"heldout_accuracy": acc, "trained_steps": steps})
    return model, acc


def export(path: str, model: AttributeClassifier, extra: dict) -> None:
    """Saves a classifier bundle (float16) that `models.loading` reads."""
    checkpoints.save_bundle(path, "classifier", configs.to_dict(model.config), model,
                            dtype="float16", extra=extra)
