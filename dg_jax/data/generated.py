"""On-disk format of a generated data set and its reader.

    OUT/run.json                         the config the run was started with (checked on rerun)
    OUT/shard-00000-part-000-of-001.array_record, ...   one record per image (see `encode_record`)
    OUT/manifest.json                    written last: complete shards, counts, achieved shares

Shards are written atomically, resumably and by every host at once by `dg_jax.data.writer`.
Each record is msgpack:
{"image_png": bytes, "index": int, "seed": int, "labels": {attr: int}, "probs": {attr: [float]}}.
"""

from __future__ import annotations

import os

import msgpack
import numpy as np

from dg_jax.data.images import decode_png, encode_png
from dg_jax.data.shards import read_shard, shard_files
from dg_jax.data.writer import dataset_files


def encode_record(image: np.ndarray, index: int, seed: int, labels: dict[str, int],
                  probs: dict[str, np.ndarray], prompt: str | None = None) -> bytes:
    """prompt: the text a text-to-image model was given for this image (None: no prompt)."""
    record = {
        "image_png": encode_png(image), "index": int(index), "seed": int(seed),
        "labels": {k: int(v) for k, v in labels.items()},
        "probs": {k: [float(p) for p in v] for k, v in probs.items()},
    }
    if prompt is not None:
        record["prompt"] = prompt
    return msgpack.packb(record)


def decode_record(record: bytes) -> dict:
    """One record (e.g. from grain's ArrayRecordDataSource over `dataset_files(OUT)`) ->
    {"image": uint8 [H, W, 3], "index", "seed", "labels", "probs"} (and "prompt" for
    text-to-image data)."""
    r = msgpack.unpackb(record)
    return {"image": decode_png(r.pop("image_png")), **r}


def read_generated(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a whole generated data set into numpy arrays, sorted by index.

    Returns image uint8 [N, H, W, 3], index int64 [N], seed int64 [N], for every labelled
    attribute label_<attr> int32 [N] and prob_<attr> float32 [N, K], and for text-to-image data
    prompt str [N].
    """
    # The manifest's complete shards; parts an interrupted run left behind are not data.
    files = dataset_files(path) or shard_files(path)
    if not files:
        raise FileNotFoundError(f"no generated shards (shard-*.array_record) in {path}")
    records = [r for f in files for r in read_shard(f)]
    records.sort(key=lambda r: r["index"])
    out = {
        "image": np.stack([decode_png(r["image_png"]) for r in records]),
        "index": np.array([r["index"] for r in records], np.int64),
        "seed": np.array([r["seed"] for r in records], np.int64),
    }
    if "prompt" in records[0]:
        out["prompt"] = np.array([r["prompt"] for r in records])
    for attr in records[0]["labels"]:
        out[f"label_{attr}"] = np.array([r["labels"][attr] for r in records], np.int32)
        out[f"prob_{attr}"] = np.array([r["probs"][attr] for r in records], np.float32)
    return out
