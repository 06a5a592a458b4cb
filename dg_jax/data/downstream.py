"""Data for the downstream fairness experiment: a classifier for a target attribute, trained on
a real set where it is confounded with a sensitive attribute, with or without generated images.

Every loader returns an `AttributeSet`: uint8 images [N, H, W, 3], target classes [N] and, where
known, sensitive classes [N] (generated images carry only the labeller's pseudo-labels; their
sensitive labels are the labeller's too and serve only to describe the set).

    real = synthfaces_set(2000, seed=0, target="smile", sensitive="skin", bias=0.9)
    test = synthfaces_set(3000, seed=999, target="smile", sensitive="skin")   # balanced cells
    extra = generated_set("runs/fair/distribution", "smile", "skin")
    celeba = tfds_set("celeb_a", "train", "Smiling", "Male", size=64, num=20000, seed=0)
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from dg_jax.data import synthfaces
from dg_jax.data.generated import read_generated
from dg_jax.data.image_sources import example_attribute, tfds_source
from dg_jax.data.images import square_resize
from dg_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class AttributeSet:
    images: np.ndarray  # uint8 [N, H, W, 3]
    target: np.ndarray  # int32 [N]
    sensitive: np.ndarray | None  # int32 [N]

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: np.ndarray) -> AttributeSet:
        return AttributeSet(self.images[index], self.target[index],
                            None if self.sensitive is None else self.sensitive[index])


def concatenate(sets: list[AttributeSet]) -> AttributeSet:
    """One set from several of one image size; sensitive labels only if every set has them."""
    sizes = {s.images.shape[1:] for s in sets}
    if len(sizes) > 1:
        raise UserError(f"image sizes differ between the sets: {sorted(sizes)}; resize one "
                        "({image_size})")
    sensitive = None if any(s.sensitive is None for s in sets) else np.concatenate(
        [s.sensitive for s in sets])
    return AttributeSet(np.concatenate([s.images for s in sets]),
                        np.concatenate([s.target for s in sets]), sensitive)


def confounded_probs(target: str, sensitive: str, bias: float | None) -> dict:
    """A SynthFaces joint table over (target, sensitive) with a confound: target classes equally
    likely; the last target class (smiling, say) comes with the minority sensitive classes
    (medium and dark skin, say: every class but 0) with probability `bias`, the other target
    classes with the majority class 0 with probability `bias`; the rest is spread evenly. So a
    classifier can learn "darker skin -> smiling" and then fails on the rare non-smiling faces
    of the minority groups. bias None: every (target, sensitive) cell equally likely. Other
    attributes keep the embedded model's training distribution."""
    for name in (target, sensitive):
        if name not in synthfaces.ATTRIBUTES:
            raise UserError(f"unknown SynthFaces attribute {name!r}; known: "
                            f"{list(synthfaces.ATTRIBUTES)}")
    if target == sensitive:
        raise UserError("the target and the sensitive attribute must differ")
    k_target, k_sensitive = synthfaces.NUM_CLASSES[target], synthfaces.NUM_CLASSES[sensitive]
    if bias is None:
        table = np.ones((k_target, k_sensitive))
    elif 0.0 <= bias <= 1.0:
        minority = bias / (k_sensitive - 1)  # P(one minority class | last target class)
        majority_row = [bias] + [(1.0 - bias) / (k_sensitive - 1)] * (k_sensitive - 1)
        table = np.array([majority_row] * (k_target - 1) + [[1.0 - bias] + [minority] *
                                                            (k_sensitive - 1)])
    else:
        raise UserError(f"bias must lie in [0, 1], got {bias}")
    probs = {n: p for n, p in synthfaces.BIASED_PROBS.items() if n not in (target, sensitive)}
    probs[(target, sensitive)] = table / table.sum()
    return probs


def synthfaces_set(num: int, seed: int, target: str, sensitive: str,
                   bias: float | None = None) -> AttributeSet:
    """Real SynthFaces: confounded by `bias` (confounded_probs), or with every (target,
    sensitive) cell equally likely when bias is None (a balanced test set)."""
    images, labels = synthfaces.generate(num, seed, confounded_probs(target, sensitive, bias))
    return AttributeSet(images, labels[target], labels[sensitive])


def generated_set(run_dir: str | os.PathLike, target: str, sensitive: str | None = None,
                  num: int | None = None, size: int | None = None) -> AttributeSet:
    """The first `num` images (all if None) of a sample.generate output folder, resized to
    `size` if given, with the labeller's pseudo-labels of `target` (and of `sensitive`, if it
    labelled that too)."""
    data = read_generated(run_dir)
    labelled = sorted(k.removeprefix("label_") for k in data if k.startswith("label_"))
    if f"label_{target}" not in data:
        raise UserError(f"{run_dir} has no labels for {target!r} (labelled: {labelled}); "
                        "generate it with a labeller that knows that attribute")
    if num is not None and num > len(data["image"]):
        raise UserError(f"{run_dir} has {len(data['image'])} images, {num} were asked for")
    part = slice(None, num)
    images = data["image"][part]
    if size is not None and images.shape[1:3] != (size, size):
        images = np.stack([square_resize(image, size) for image in images])
    has_sensitive = sensitive is not None and f"label_{sensitive}" in data
    return AttributeSet(images, data[f"label_{target}"][part],
                        data[f"label_{sensitive}"][part] if has_sensitive else None)


def tfds_set(name: str, split: str, target: str, sensitive: str, size: int, num: int | None,
             seed: int, data_dir: str | None = None, balanced: bool = False) -> AttributeSet:
    """Examples of a TFDS data set prepared locally (read with tfds.data_source, no TensorFlow),
    images centre-cropped and resized to `size`. num: a random subset of that many (None: all);
    balanced: as many examples of every (target, sensitive) cell as the rarest cell has (within
    the subset), for a balanced test set."""
    source = tfds_source(f"tfds:{name}:{split}", data_dir)
    rng = np.random.default_rng(seed)
    index = np.arange(len(source)) if num is None or num >= len(source) else np.sort(
        rng.choice(len(source), num, replace=False))
    # Resized as read: only small images are held (CelebA's full train split decoded would not fit)
    images = np.empty((len(index), size, size, 3), np.uint8)
    target_labels = np.empty(len(index), np.int32)
    sensitive_labels = np.empty(len(index), np.int32)
    for row, i in enumerate(index):
        example = source[int(i)]
        images[row] = square_resize(example["image"], size)
        target_labels[row] = example_attribute(example, target)
        sensitive_labels[row] = example_attribute(example, sensitive)
    keep = np.arange(len(index))
    if balanced:
        cells = target_labels * (sensitive_labels.max() + 1) + sensitive_labels
        per_cell = np.bincount(cells)[np.unique(cells)].min()
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(cells == c))[:per_cell]
                                       for c in np.unique(cells)]))
    return AttributeSet(images[keep], target_labels[keep], sensitive_labels[keep])
