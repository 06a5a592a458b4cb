"""Labelled batches, one after another, each steered to what the images before it lack: the step
the CLI's writer (`generation.run`) repeats, and `generate_balanced`, which returns a balanced
set in memory.

    sampler = make_sampler(unet, model_config, SamplerConfig(), DistributionGuidance(adp, targets))
    result = generate_balanced(sampler, load_classifier(), targets, num_images=256)
    result.images, result.labels["hair"], result.shares["hair"]
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dg_jax.balance import BALANCES, LABELLED_BALANCES, corrected_distribution, deficit_distribution
from dg_jax.data.images import to_model_range, to_uint8
from dg_jax.diffusion.samplers import sample_keys
from dg_jax.guard import (
    GuardConfig,
    QualityGuard,
    SharpnessReference,
    broken_counts,
    detail_ratios,
    h_change_summary,
)
from dg_jax.guidance.targets import Target
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.parallel import (
    DATA_AXIS,
    batch_sharding,
    data_mesh,
    global_batch,
    local_row_range,
    local_rows,
    replicate,
)
from dg_jax.sampling import Sampler


def label_probabilities(classifier: AttributeClassifier, images: jax.Array
                        ) -> dict[str, jax.Array]:
    """uint8 images [B, H, W, 3] -> attribute -> the classifier's probabilities [B, K] (float32)."""
    logits = classifier(to_model_range(images))
    return {n: jax.nn.softmax(v.astype(jnp.float32), axis=-1) for n, v in logits.items()}


def make_labeller(classifier: AttributeClassifier):
    """Returns a jitted uint8 images [B, H, W, 3] -> attribute -> probabilities [B, K]."""
    graphdef, state = nnx.split(classifier)
    label = jax.jit(lambda state, images: label_probabilities(nnx.merge(graphdef, state), images))
    return lambda images: label(state, images)


def make_batch_labeller(classifier: AttributeClassifier | None, targets: Sequence[Target],
                        mesh: Mesh, guard: GuardConfig,
                        reference: SharpnessReference | None = None):
    """Returns a jitted (images [G, H, W, 3] in [-1, 1], valid bool [G]) -> (uint8 images [G],
    attribute -> probabilities [G, K], counts, broken, detail) for a batch split over `mesh`.
    counts (the same on every host; padding rows left out): attribute -> [K] and target name ->
    [prod K] cell counts of the argmax labels; broken: the guard's counts of broken images by
    cause; detail: `guard.detail_ratios` [G] (on every host; empty without a reference or a
    classifier). Without a classifier probs and counts are empty and only the images' own
    statistics are checked."""
    graphdef, state = nnx.split(classifier) if classifier is not None else (None, None)
    state = replicate(state, mesh) if state is not None else None
    rows, everywhere = NamedSharding(mesh, P(DATA_AXIS)), NamedSharding(mesh, P())
    median = reference.median if reference is not None else None

    @functools.partial(jax.jit, out_shardings=(rows, rows, everywhere, everywhere, everywhere))
    def label(state, images, valid):
        broken_images = functools.partial(broken_counts, images, valid=valid, config=guard,
                                          reference_sharpness=median)
        no_detail = jnp.zeros((0,), jnp.float32)
        images = to_uint8(images)
        if classifier is None:
            return images, {}, {}, broken_images(None), no_detail
        probs = label_probabilities(nnx.merge(graphdef, state), images)
        labels = {n: jnp.argmax(v, axis=-1) for n, v in probs.items()}
        weight = valid.astype(jnp.int32)[:, None]

        def count(index, size):
            return jnp.sum(jax.nn.one_hot(index, size, dtype=jnp.int32) * weight, axis=0)

        counts = {n: count(v, probs[n].shape[-1]) for n, v in labels.items()}
        for t in targets:
            cells = jnp.ravel_multi_index(tuple(labels[a] for a in t.attributes),
                                          t.num_classes, mode="clip")
            counts[t.name] = count(cells, len(t.probs))
        detail = (no_detail if reference is None
                  # as the reference was measured: on the images as written
                  else detail_ratios(to_model_range(images), probs, reference))
        return images, probs, counts, broken_images(probs), detail

    return lambda images, valid: label(state, images, valid)


@dataclasses.dataclass(frozen=True)
class Batch:
    """This host's valid rows of one global batch: index int [n] (global sample indices),
    rows [n] (their rows in the global batch), images uint8 [n, H, W, 3], probs attribute ->
    [n, K] (empty without a classifier)."""

    index: np.ndarray
    rows: np.ndarray
    images: np.ndarray
    probs: dict[str, np.ndarray]


class BatchGenerator:
    """Generates, labels and checks global batches over a device mesh, keeping the label counts
    of everything generated so far. balance "dataset" steers each batch to what those counts
    lack (`deficit_distribution`), "batch-corrected" to the targets moved by the bias the counts
    show (`corrected_distribution`), "batch" to the targets as they are (the paper).

    counts: attribute / target name -> cell counts so far (a resumed run's); asked: target name
    -> the references steered to so far, each times its batch's image count, summed (a resumed
    run's; balance "batch-corrected" needs them); guard: the quality guard, which raises
    DegenerateOutputError on broken images (on_degenerate "stop") before a batch is kept or
    counted; reference: the model's unguided sharpness the guard compares with (None: those
    checks are skipped); warn: where the guard's warnings go.
    """

    def __init__(self, sampler: Sampler, classifier: AttributeClassifier | None,
                 targets: Sequence[Target], mesh: Mesh, *, seed: int, batch_size: int,
                 balance: str = "dataset", guard: QualityGuard | None = None,
                 reference: SharpnessReference | None = None, counts: dict | None = None,
                 asked: dict | None = None, context: jax.Array | None = None,
                 uncond_context: jax.Array | None = None,
                 warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)):
        if balance not in BALANCES:
            raise ValueError(f"unknown balance {balance!r}; use one of {', '.join(BALANCES)}")
        if balance in LABELLED_BALANCES and targets and classifier is None:
            raise ValueError(f"balance {balance} steers by the labels of the images so far: it "
                             "needs a classifier (or balance by batch)")
        self.sampler, self.sample = sampler, jax.jit(sampler)
        self.targets, self.mesh, self.batch_size = list(targets), mesh, batch_size
        self.balance, self.context, self.uncond_context = balance, context, uncond_context
        self.guard = guard or QualityGuard(GuardConfig(), guided=bool(targets))
        self.counts = {k: np.asarray(v, np.int64) for k, v in (counts or {}).items()}
        self.asked = {k: np.asarray(v, np.float64) for k, v in (asked or {}).items()}
        self.warn = warn
        self.label = make_batch_labeller(classifier, self.targets, mesh, self.guard.config,
                                         reference)
        self.summarise_h = jax.jit(h_change_summary, out_shardings=NamedSharding(mesh, P()))
        self.keys_of = jax.jit(functools.partial(sample_keys, seed),
                               out_shardings=batch_sharding(mesh))
        self.local_rows = local_row_range(mesh, batch_size)

    def refs(self, num_valid: int) -> dict[str, np.ndarray]:
        """target name -> the distribution [prod K] this batch is steered to."""
        def counts(t):
            return self.counts.get(t.name, np.zeros(len(t.probs)))

        if self.balance == "dataset":
            return {t.name: deficit_distribution(counts(t), t.array, num_valid)
                    for t in self.targets}
        if self.balance == "batch-corrected":
            return {t.name: corrected_distribution(
                self.asked.get(t.name, np.zeros(len(t.probs))), counts(t), t.array)
                for t in self.targets}
        return {t.name: np.asarray(t.array, np.float32) for t in self.targets}

    def __call__(self, start: int, stop: int) -> Batch:
        """Global batch [start, start + batch_size); rows >= stop are padding, generated but
        neither counted nor returned."""
        index = np.arange(start, start + self.batch_size)
        valid = index < stop
        n = int(valid.sum())
        refs = self.refs(n)
        images, trace = self.sample(self.sampler.params, self.keys_of(global_batch(self.mesh, index)),
                                    replicate(refs, self.mesh) if refs else None, self.context,
                                    self.uncond_context)
        valid_rows = global_batch(self.mesh, valid)
        if "h_change" in trace:
            self.guard.add_h_change(
                jax.device_get(self.summarise_h(trace["h_change"], valid_rows)), n)
        images, probs, batch_counts, broken, detail = self.label(images, valid_rows)
        problem = self.guard.check_batch(jax.device_get(broken), n, start)
        if problem:
            self.warn(f"warning: {problem}")
        for k, v in jax.device_get(batch_counts).items():
            self.counts[k] = self.counts.get(k, 0) + np.asarray(v, np.int64)
        for k, v in refs.items():
            self.asked[k] = self.asked.get(k, 0.0) + n * np.asarray(v, np.float64)
        # a target out of reach first: its line says more than the images' decline
        problem = self.guard.check_shares(self.counts, self.targets, start + n, self.balance)
        if problem:
            self.warn(f"warning: {problem}")
        if detail.size:
            problem = self.guard.check_detail(np.asarray(jax.device_get(detail))[valid],
                                              start + n)
            if problem:
                self.warn(f"warning: {problem}")
        lo, hi = self.local_rows
        keep = valid[lo:hi]
        return Batch(index[lo:hi][keep], np.arange(lo, hi)[keep], local_rows(images)[keep],
                     {a: local_rows(v)[keep] for a, v in probs.items()})


@dataclasses.dataclass(frozen=True)
class BalancedSet:
    """images uint8 [N, H, W, 3]; index [N]; labels / probs: attribute -> [N] / [N, K];
    counts / shares: attribute and target name -> per class (cell) over the whole set (all
    hosts); quality: the guard's summary."""

    images: np.ndarray
    index: np.ndarray
    labels: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    shares: dict[str, np.ndarray]
    quality: dict


def generate_balanced(sampler: Sampler, classifier: AttributeClassifier | None,
                      targets: Sequence[Target], num_images: int, *, seed: int = 0,
                      batch_size: int = 64, balance: str = "dataset",
                      guard: GuardConfig | None = None,
                      reference: SharpnessReference | None = None) -> BalancedSet:
    """num_images labelled images whose labels meet the targets as a set (balance "dataset")
    or batch by batch ("batch-corrected"; "batch": as the ADP reads them), by the steps the
    CLI's writer takes, on the sampler's devices (`make_sampler(..., mesh=...)`; batch_size a
    multiple of their count). With several hosts each returns its own rows; counts and shares
    are global. reference: the model's unguided sharpness (`SharpnessReference.of(the ADP
    bundle's unguided record)`), for the guard's washed-out and loss-of-detail checks (None:
    not checked)."""
    if num_images <= 0 or batch_size <= 0:
        raise ValueError("num_images and batch_size must be positive")
    mesh = sampler.mesh or data_mesh(jax.devices()[:1])
    generate = BatchGenerator(sampler, classifier, targets, mesh, seed=seed,
                              batch_size=batch_size, balance=balance,
                              guard=QualityGuard(guard or GuardConfig(), guided=bool(targets)),
                              reference=reference)
    batches = [generate(start, num_images) for start in range(0, num_images, batch_size)]
    probs = {a: np.concatenate([b.probs[a] for b in batches]) for a in batches[0].probs}
    return BalancedSet(
        images=np.concatenate([b.images for b in batches]),
        index=np.concatenate([b.index for b in batches]),
        labels={a: np.argmax(p, axis=-1) for a, p in probs.items()}, probs=probs,
        counts=dict(generate.counts),
        shares={k: v / num_images for k, v in generate.counts.items()},
        quality=generate.guard.summary())
