"""Trains the Attribute Distribution Predictor on collected h-space trajectories.

Each update takes `batch_size` samples with h at all S steps (B * S training pairs) and their
pseudo-labels; the loss is cross-entropy per attribute. Not class-balanced by default: guidance
averages the ADP's probabilities into a batch distribution, which is only right if they are
calibrated to the data the sampler sees. A class-balanced ADP over-predicts the minority class
wherever h is ambiguous (the noisy steps), so guidance towards a uniform target believed the batch
already had enough of it and pushed the wrong way (measured: glasses 11 % -> 0 %). Held-out samples
give the accuracy per sampling step and attribute.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dg_jax import checkpoints, configs
from dg_jax.configs import named_value, option
from dg_jax.data.hspace import HSpaceSource, read_labels
from dg_jax.data.shards import read_json
from dg_jax.errors import UserError
from dg_jax.evaluation.fairness import class_shares
from dg_jax.loading import load_adp
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.training import common


@dataclasses.dataclass(frozen=True)
class ADPTrainConfig:
    data: str = option("runs/hspace", "a train.collect_hspace output folder")
    workdir: str = option("runs/adp", "checkpoints and the accuracy plot (rerun to resume)")
    kind: Literal["mlp", "linear_per_step"] = option(
        "mlp", "mlp: one network over all steps, time-embedded (the paper); linear_per_step: a "
               "linear head per step (the original code)")
    features: Literal["pool", "flatten"] = option(
        "pool", "the mlp's input: h pooled over space, or flattened")
    hidden: int = 256
    time_dim: int = 64
    holdout: float = option(0.15, "fraction of samples held out for the accuracy table")
    batch_size: int = option(32, "samples per update, each with all its steps")
    steps: int = 1_500
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    data_seed: int = option(0, "shuffles the training samples (the split is fixed by sample "
                               "index)")
    save_every: int = 500
    log_every: int = 25
    export: str = option("", "write the trained ADP as a bundle here")
    export_dtype: Literal["float16", "bfloat16", "float32"] = option(
        "float16", "the exported bundle's parameters (restored as float32)")
    class_balanced: bool = option(False, "weight classes equally (uncalibrated; see the module "
                                         "doc)")
    init_from: str = option("", "start from this ADP bundle's weights (same architecture and "
                                "attributes) instead of a random initialisation")
    adversarial: tuple[str, ...] = option(
        (), "EPS or ATTR=EPS: also train the attribute on h moved by EPS x ||h|| along the "
            "gradient of the summed loss of the attributes with EPS > 0 (one L2 step per "
            "update), so that a small change of h cannot fool it; EPS alone sets every "
            "attribute, ATTR=EPS one; repeatable (e.g. --adversarial 0.1 --adversarial smile=0)")


def split_indices(n: int, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) record indices: every k-th record is held out, k = round(1 / holdout)."""
    every = max(2, round(1 / holdout))
    held = np.arange(n) % every == every - 1
    return np.flatnonzero(~held), np.flatnonzero(held)


def load_batch(source: HSpaceSource, indices, attributes) -> dict:
    """h float32 [B, S, h, w, c], labels attr -> int32 [B]."""
    records = source.__getitems__(indices)
    return {"h": np.stack([r["h"] for r in records]).astype(np.float32),
            "labels": {a: np.asarray([r["labels"][a] for r in records], np.int32)
                       for a in attributes}}


def per_step_logits(graphdef, params, h: jax.Array, timesteps: jax.Array) -> dict:
    """ADP logits for every (sample, step): h [B, S, ...], timesteps [S] -> attr -> [S, B, K]."""
    steps = jnp.arange(h.shape[1])
    t = jnp.broadcast_to(timesteps[:, None], (h.shape[1], h.shape[0]))
    apply = lambda h_s, t_s, i: nnx.merge(graphdef, params)(h_s, t_s, i)  # noqa: E731
    return jax.vmap(apply)(jnp.swapaxes(h, 0, 1), t, steps)


def class_weights(labels: np.ndarray, k: int) -> np.ndarray:
    """[K] weights that make every class count equally (0 for absent classes)."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    present = counts > 0
    w = np.zeros(k)
    w[present] = len(labels) / (present.sum() * counts[present])
    return w.astype(np.float32)


def train(config: ADPTrainConfig) -> tuple[ADP, dict]:
    """Trains (or resumes); returns (ADP, report with held-out accuracy per step)."""
    run = read_json(pathlib.Path(config.data) / "run.json")
    source = HSpaceSource(config.data)
    first = source[0]
    timesteps = tuple(first["timesteps"])
    attributes = tuple((a, len(p)) for a, p in first["probs"].items())
    if not attributes:
        raise UserError(f"{config.data} has no labels; collect it with a classifier")
    adp_config = ADPConfig(attributes=attributes, h_shape=tuple(first["h_shape"][1:]),
                           kind=config.kind, features=config.features, hidden=config.hidden,
                           time_dim=config.time_dim,
                           timesteps=timesteps if config.kind == "linear_per_step" else None)
    train_idx, held_idx = split_indices(len(source), config.holdout)
    all_labels = read_labels(source, train_idx)  # labels only: memory stays flat
    weights = {a: jnp.asarray(class_weights(all_labels[a], k) if config.class_balanced
                              else np.ones(k, np.float32)) for a, k in attributes}
    ts = jnp.asarray(timesteps, jnp.float32)

    model = ADP(adp_config, rngs=nnx.Rngs(config.seed))
    if config.init_from:
        model = load_adp(config.init_from)
        if model.config != adp_config:
            raise UserError(f"{{init_from}} {config.init_from} is an ADP for {model.config}, not "
                            f"for this run's {adp_config}")
    graphdef, params = nnx.split(model, nnx.Param)
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate,
                                                  min(100, config.steps // 10), config.steps)
    optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    state = dict(params=params, opt=optimizer.init(params), step=jnp.zeros((), jnp.int32))

    strengths = adversarial_strengths(config.adversarial, [a for a, _ in attributes])

    def cross_entropy(params, h, labels, names):
        logits = per_step_logits(graphdef, params, h, ts)
        total = 0.0
        for a in names:
            y = jnp.broadcast_to(labels[a], logits[a].shape[:2])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits[a], y)
            w = weights[a][y]
            total = total + jnp.sum(w * ce) / jnp.sum(w)
        return total

    def loss_fn(params, batch):
        h, labels = batch["h"], batch["labels"]
        attacked = [a for a, eps in strengths.items() if eps]
        plain = [a for a, eps in strengths.items() if not eps]
        total = cross_entropy(params, h, labels, plain) if plain else 0.0
        if attacked:
            # One direction for all of them, the one that raises their summed loss most: each
            # attribute's own steepest direction, at the same size, gave up glasses and skin.
            clean, grad = jax.value_and_grad(cross_entropy, argnums=1)(params, h, labels, attacked)
            direction = worst_direction(grad, h)
            total = total + 0.5 * clean  # half on h, half on h moved against the readings
            for eps in sorted({strengths[a] for a in attacked}):
                moved = jax.lax.stop_gradient(h + eps * direction)
                total = total + 0.5 * cross_entropy(
                    params, moved, labels, [a for a in attacked if strengths[a] == eps])
        return total

    @jax.jit
    def train_step(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        return dict(params=optax.apply_updates(state["params"], updates), opt=opt,
                    step=state["step"] + 1), loss

    names = [a for a, _ in attributes]
    state = common.fit(config, state, train_step,
                       lambda idx: load_batch(source, train_idx[idx], names), len(train_idx),
                       "adp")
    params = jax.device_get(state["params"])
    model = nnx.merge(graphdef, params)
    report = {"attributes": dict(attributes), "timesteps": list(timesteps),
              "train_samples": len(train_idx), "heldout_samples": len(held_idx),
              "source": run.get("source"),
              # the labels' shares: with h from the model's own samples ("generate"), the
              # unguided model's shares, which `--preserve` holds attributes at
              "label_shares": {a: class_shares(all_labels[a], k).round(6).tolist()
                               for a, k in attributes},
              "heldout_accuracy": heldout_accuracy(graphdef, params, source, held_idx, names,
                                                   ts)}
    if config.export:
        checkpoints.save_bundle(config.export, "adp", configs.to_dict(adp_config), model,
                                dtype=config.export_dtype,
                                extra={"report": report, "hspace_run": run})
    return model, report


def adversarial_strengths(specs, names) -> dict[str, float]:
    """--adversarial specs ("EPS" for every attribute, "ATTR=EPS" for one; later ones win) ->
    attribute -> EPS (0: trained on h as it is)."""
    strengths = dict.fromkeys(names, 0.0)
    for spec in specs:
        parsed = named_value(spec)
        if parsed is None or (parsed[0] and parsed[0] not in strengths):
            raise UserError(f"{{adversarial}}: bad {spec!r}; use EPS or ATTR=EPS with EPS >= 0 "
                            f"and ATTR one of {', '.join(names)}")
        name, eps = parsed
        strengths.update({name: eps} if name else dict.fromkeys(names, eps))
    return strengths


def worst_direction(grad: jax.Array, h: jax.Array) -> jax.Array:
    """grad rescaled, per sample and step, to the length of h: the step that raises the loss
    most at a size relative to h. grad, h: [B, S, ...]."""
    axes = tuple(range(2, h.ndim))
    ratio = jnp.sqrt(jnp.sum(h * h, axes, keepdims=True) /
                     jnp.maximum(jnp.sum(grad * grad, axes, keepdims=True), 1e-30))
    return grad * ratio


def heldout_accuracy(graphdef, params, source, indices, names, ts, batch: int = 64) -> dict:
    """attr -> per-step accuracy [S] (list) over the held-out records."""
    predict = jax.jit(lambda p, h: {a: jnp.argmax(v, -1)
                                    for a, v in per_step_logits(graphdef, p, h, ts).items()})
    correct, total = {a: 0 for a in names}, 0
    for start in range(0, len(indices), batch):
        b = load_batch(source, indices[start:start + batch], names)
        pred = jax.device_get(predict(params, b["h"]))
        for a in names:
            correct[a] = correct[a] + np.sum(pred[a] == b["labels"][a][None, :], axis=1)
        total += len(b["h"])
    return {a: [round(float(c) / total, 4) for c in correct[a]] for a in names}
