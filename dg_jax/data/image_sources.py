"""Real images to invert into h, by sample index: a folder of image files, or a TFDS data set
prepared locally, and the labels a TFDS set carries.

    images = open_images("celebahq_images/", 256)          # sample i: the i-th file by name
    images = open_images("tfds:celeb_a:train", 256)        # sample i: example i of the split
    label = tfds_labeller("tfds:celeb_a:train", "gender=Male,Young")   # its own attributes

Images are centre-cropped and resized to the model's size as they are read.
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from dg_jax.data.images import square_resize
from dg_jax.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageFolder:
    """`folder`'s images (not its subfolders) in file-name order."""

    def __init__(self, folder, size: int):
        folder = pathlib.Path(folder)
        if not folder.is_dir():
            raise UserError(f"image folder {folder} does not exist")
        self.files = sorted(f for f in folder.iterdir() if f.suffix.lower() in SUFFIXES)
        if not self.files:
            raise UserError(f"image folder {folder} holds no {'/'.join(SUFFIXES)} images")
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def load(self, indices) -> np.ndarray:
        """indices [B] -> uint8 [B, size, size, 3]."""
        out = []
        for i in indices:
            try:
                with Image.open(self.files[i]) as image:
                    out.append(square_resize(np.asarray(image.convert("RGB")), self.size))
            except OSError as e:
                raise UserError(f"cannot read image {self.files[i]}: {e}") from None
        return np.stack(out)


def tfds_source(spec: str, data_dir: str | None = None):
    """"tfds:NAME[:SPLIT]" (split default train) -> a random-access TFDS data source (no
    TensorFlow needed), for a data set prepared locally."""
    parts = spec.split(":")
    if parts[0] != "tfds" or len(parts) not in (2, 3) or not parts[1]:
        raise UserError(f"{spec!r} is not tfds:NAME or tfds:NAME:SPLIT")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise UserError("reading TFDS data needs tensorflow-datasets: pip install "
                        "'dg-jax[tfds]'") from e
    split = parts[2] if len(parts) == 3 else "train"
    try:
        return tfds.data_source(parts[1], split=split, data_dir=data_dir)
    except Exception as e:  # tfds raises several types for a missing or unprepared data set
        raise FileNotFoundError(f"TFDS data set {parts[1]}:{split} is not prepared in "
                                f"{data_dir or 'the default TFDS data dir'}: {e}") from e


class TfdsImages:
    """The "image" of each example of a TFDS split, by index."""

    def __init__(self, spec: str, size: int):
        self.source, self.size = tfds_source(spec), size

    def __len__(self) -> int:
        return len(self.source)

    def load(self, indices) -> np.ndarray:
        return np.stack([square_resize(self.source[int(i)]["image"], self.size)
                         for i in indices])


def open_images(spec: str, size: int) -> ImageFolder | TfdsImages:
    return TfdsImages(spec, size) if spec.startswith("tfds:") else ImageFolder(spec, size)


def example_attribute(example: dict, name: str) -> int:
    """A class label of a TFDS example: CelebA-style sets keep binary attributes under
    "attributes", others at the top level."""
    source = example.get("attributes", {})
    value = source[name] if name in source else example.get(name)
    if value is None:
        known = sorted(source) or sorted(k for k in example if k != "image")
        raise UserError(f"the data set has no attribute {name!r}; known: {known}")
    return int(value)


def tfds_labeller(spec: str, attributes: str):
    """indices [B] -> attribute -> one-hot [B, 2], from a TFDS set's own binary attributes.
    attributes: "Male,Young", or "gender=Male,young=Young" to name them for the ADP."""
    source = tfds_source(spec)
    names = {}
    for item in attributes.split(","):
        ours, _, theirs = item.strip().partition("=")
        names[ours] = theirs or ours

    def label(indices) -> dict[str, np.ndarray]:
        examples = [source[int(i)] for i in indices]
        return {ours: np.eye(2, dtype=np.float32)[[
            example_attribute(e, theirs) for e in examples]] for ours, theirs in names.items()}

    return label
