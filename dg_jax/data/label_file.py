"""External labels for samples by index: the labeller for data whose labels come from elsewhere
(human annotation, another model run offline).

A CSV with a header `index,<attr>,<attr>,...` and one row per sample, or an .npz with an `index`
array and one integer array per attribute. Classes are 0..K-1; K per attribute is its largest
label + 1 (at least 2) unless `num_classes` says more.
"""

from __future__ import annotations

import csv
import io

import numpy as np
from etils import epath

from dg_jax.errors import UserError


class LabelFile:
    """indices [B] -> attribute -> one-hot probabilities [B, K] (what a labeller's softmax gives)."""

    def __init__(self, path, num_classes: dict[str, int] | None = None):
        path = epath.Path(path)  # local or gs://
        if not path.is_file():
            raise UserError(f"label file {path} does not exist")
        columns = _read_npz(path) if path.suffix == ".npz" else _read_csv(path)
        if "index" not in columns or len(columns) < 2:
            raise UserError(f"label file {path} needs an 'index' column and at least one "
                            "attribute column")
        index = columns.pop("index")
        if len(np.unique(index)) != len(index):
            raise UserError(f"label file {path} lists a sample index twice")
        self._row = {int(i): r for r, i in enumerate(index)}
        self.labels = columns
        self.num_classes = {}
        for name, values in columns.items():
            if values.min() < 0:
                raise UserError(f"label file {path}: negative class in {name!r}")
            k = max(int(values.max()) + 1, 2, (num_classes or {}).get(name, 0))
            self.num_classes[name] = k
        self.path = path

    def __call__(self, indices) -> dict[str, np.ndarray]:
        try:
            rows = np.array([self._row[int(i)] for i in indices], dtype=np.int64)
        except KeyError as e:
            raise UserError(f"label file {self.path} has no sample {e.args[0]}") from None
        return {name: np.eye(k, dtype=np.float32)[self.labels[name][rows]]
                for name, k in self.num_classes.items()}


def _read_npz(path: epath.Path) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(path.read_bytes())) as data:
        return {k: np.asarray(data[k], np.int64) for k in data.files}


def _read_csv(path: epath.Path) -> dict[str, np.ndarray]:
    rows = list(csv.DictReader(io.StringIO(path.read_text(), newline="")))
    if not rows:
        raise UserError(f"label file {path} has no rows")
    try:
        return {k.strip(): np.array([int(r[k]) for r in rows], np.int64) for k in rows[0]}
    except (TypeError, ValueError):
        raise UserError(f"label file {path}: every value must be an integer") from None
