"""On-disk format of a generated data set, its atomic shard writer and its reader.

    OUT/run.json                         the config the run was started with (checked on rerun)
    OUT/shard-00000.array_record, ...    one record per image, in index order (see `encode_record`)
    OUT/manifest.json                    written last: config, counts, achieved class shares

A shard is written under a temporary name and renamed when complete, so a visible shard is always
whole; rerunning a command skips the shards that already exist.
Each record is msgpack: {"image_png": bytes, "index": int, "seed": int,
                         "labels": {attr: int}, "probs": {attr: [float, ...]}}.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib

import msgpack
import numpy as np
from array_record.python import array_record_module as ar

from dg_jax.data.images import decode_png, encode_png

SHARD_PATTERN = "shard-{:05d}.array_record"


def shard_path(out_dir: str | os.PathLike, shard: int) -> pathlib.Path:
    return pathlib.Path(out_dir) / SHARD_PATTERN.format(shard)


def encode_record(image: np.ndarray, index: int, seed: int, labels: dict[str, int],
                  probs: dict[str, np.ndarray]) -> bytes:
    return msgpack.packb({
        "image_png": encode_png(image), "index": int(index), "seed": int(seed),
        "labels": {k: int(v) for k, v in labels.items()},
        "probs": {k: [float(p) for p in v] for k, v in probs.items()},
    })


def decode_record(data: bytes) -> dict:
    return msgpack.unpackb(data)


def write_shard(path: str | os.PathLike, records: list[bytes]) -> None:
    """Writes all records, then renames into place: readers never see a partial shard."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    writer = ar.ArrayRecordWriter(str(tmp), "group_size:1")
    for record in records:
        writer.write(record)
    writer.close()
    os.replace(tmp, path)


def read_shard(path: str | os.PathLike) -> list[dict]:
    reader = ar.ArrayRecordReader(str(path))
    try:
        return [decode_record(r) for r in reader.read_all()]
    finally:
        reader.close()


def shard_files(path: str | os.PathLike) -> list[str]:
    return sorted(glob.glob(os.path.join(path, "shard-*.array_record")))


def read_generated(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a whole generated data set into numpy arrays, sorted by index.

    Returns image uint8 [N, H, W, 3], index int64 [N], seed int64 [N], and for every labelled
    attribute label_<attr> int32 [N] and prob_<attr> float32 [N, K].
    """
    files = shard_files(path)
    if not files:
        raise FileNotFoundError(f"no generated shards (shard-*.array_record) in {path}")
    records = [r for f in files for r in read_shard(f)]
    records.sort(key=lambda r: r["index"])
    out = {
        "image": np.stack([decode_png(r["image_png"]) for r in records]),
        "index": np.array([r["index"] for r in records], np.int64),
        "seed": np.array([r["seed"] for r in records], np.int64),
    }
    for attr in records[0]["labels"]:
        out[f"label_{attr}"] = np.array([r["labels"][attr] for r in records], np.int32)
        out[f"prob_{attr}"] = np.array([r["probs"][attr] for r in records], np.float32)
    return out


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
