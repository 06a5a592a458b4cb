"""On-disk h-space trajectories: the ADP's training data.

One record per sample (msgpack, in array_record shards written by `dg_jax.data.shards`):
    {"h": float16 bytes of [S, H, W, C] (h at every sampling step, in sampling order: step 0 is
     the noisiest), "h_shape": [S, H, W, C], "timesteps": [S], "index": int, "seed": int,
     "labels": {attr: int}, "probs": {attr: [float, ...]}}
`HSpaceSource` gives random access over all shards (an array_record data source, so it also
plugs into grain as a MapDataset source); memory stays flat however many samples there are.
"""

from __future__ import annotations

import os

import msgpack
import numpy as np
from array_record.python.array_record_data_source import ArrayRecordDataSource

from dg_jax.data.shards import shard_files


def encode_h_record(h: np.ndarray, timesteps: np.ndarray, index: int, seed: int,
                    labels: dict[str, int], probs: dict[str, np.ndarray]) -> bytes:
    """h: [S, H, W, C] (stored as float16), timesteps: [S] descending."""
    h = np.asarray(h, np.float16)
    return msgpack.packb({
        "h": h.tobytes(), "h_shape": list(h.shape), "timesteps": [int(t) for t in timesteps],
        "index": int(index), "seed": int(seed),
        "labels": {k: int(v) for k, v in labels.items()},
        "probs": {k: [float(p) for p in v] for k, v in probs.items()},
    })


def decode_h_record(data: bytes) -> dict:
    """-> record with "h" as float16 [S, H, W, C]."""
    r = msgpack.unpackb(data)
    r["h"] = np.frombuffer(r["h"], np.float16).reshape(r["h_shape"])
    return r


class HSpaceSource:
    """Random access to the records of a collected h-space folder: len() and [i] -> dict."""

    def __init__(self, path: str | os.PathLike):
        files = shard_files(path)
        if not files:
            raise FileNotFoundError(f"no h-space shards (shard-*.array_record) in {path}")
        self._source = ArrayRecordDataSource(files)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> dict:
        return decode_h_record(self._source[i])

    def __getitems__(self, indices) -> list[dict]:
        return [decode_h_record(r) for r in self._source.__getitems__(list(indices))]


def read_labels(source: HSpaceSource, indices=None) -> dict[str, np.ndarray]:
    """attribute -> int32 labels of the records at `indices` (default: all), one record in
    memory at a time."""
    labels: dict[str, list[int]] = {}
    for i in range(len(source)) if indices is None else indices:
        for a, v in msgpack.unpackb(source._source[int(i)])["labels"].items():
            labels.setdefault(a, []).append(v)
    return {a: np.asarray(v, np.int32) for a, v in labels.items()}
