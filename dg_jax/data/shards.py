"""Resumable, exactly-once output folders of array_record shards (msgpack records).

    OUT/run.json                         the config the run was started with (checked on rerun)
    OUT/shard-00000.array_record, ...    records in index order, `shard_size` per shard

A shard is written under a temporary name and renamed when complete, so a visible shard is always
whole; rerunning the same command skips the shards that already exist, and an OUT made with
another config is refused.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
from collections.abc import Callable

import msgpack
import numpy as np
from array_record.python import array_record_module as ar
from etils import epath

from dg_jax.errors import ConfigMismatchError, UserError

SHARD_PATTERN = "shard-{:05d}.array_record"


def shard_path(out_dir: str | os.PathLike, shard: int) -> pathlib.Path:
    return pathlib.Path(out_dir) / SHARD_PATTERN.format(shard)


def shard_files(path: str | os.PathLike) -> list[str]:
    return sorted(glob.glob(os.path.join(path, "shard-*.array_record")))


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
    """All records of one shard, msgpack-decoded."""
    reader = ar.ArrayRecordReader(str(path))
    try:
        return [msgpack.unpackb(r) for r in reader.read_all()]
    finally:
        reader.close()


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    """Writes `data` so that readers see the old file or the new one, never a part: a temporary
    beside it, then a rename. The same on an object store (gs://...): there the rename is a copy
    that lands whole, and a store or mount that writes in place (etils' fake store does) cannot
    leave a truncated manifest when the process is killed."""
    path = epath.Path(path)
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_json(path: str | os.PathLike) -> dict:
    """An output folder's run.json or manifest.json (local or any etils.epath path); a truncated
    or corrupt one is a UserError naming it, and nothing is written."""
    path = epath.Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is corrupt ({e}); restore it from a copy or choose a new "
                        "{out} (nothing was changed)") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is corrupt (not a JSON object); restore it from a copy or "
                        "choose a new {out} (nothing was changed)")
    return data


LOCATION_FIELDS = ("out",)


def _held(config: dict, ignored: tuple[str, ...] = ()) -> dict:
    """What a run.json says the folder holds: where it lives (and `ignored`) left out, so that a
    moved or copied folder resumes."""
    return {k: v for k, v in config.items() if k not in (*ignored, *LOCATION_FIELDS)}


def check_output_dir(out: str | os.PathLike, config: dict) -> bool:
    """True if OUT holds a run with this config, False if OUT is absent or empty; raises if OUT
    holds another config or other files. Reads only (local or any etils.epath path)."""
    out = epath.Path(out)
    run_file = out / "run.json"
    if run_file.exists():
        saved, config = _held(read_json(run_file)), _held(config)
        if saved != config:
            diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            raise ConfigMismatchError(f"{out} holds data made with another config "
                                      f"(differs in {diff}); choose a new {{out}}")
        return True
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a dg-jax output directory; choose a new "
                        "{out}")
    return False


def grow_output_dir(out: str | os.PathLike, config: dict, count: str, shard_size: int) -> bool:
    """Lets OUT grow to config[count] items when it was made with this config but fewer items
    that fill whole shards: item i depends only on the config and i, so its shards are those the
    larger run writes, and only run.json's count changes (the missing shards are then filled).
    True if OUT was grown. Anything else is left to `check_output_dir`."""
    run_file = epath.Path(out) / "run.json"
    if not run_file.exists():
        return False
    saved = read_json(run_file)
    held, wanted = saved.get(count), config[count]
    same = _held(saved, (count,)) == _held(config, (count,))
    if not (same and isinstance(held, int) and held < wanted and held % shard_size == 0):
        return False
    write_json_atomic(run_file, {**saved, count: wanted})
    return True


def prepare_output_dir(out: str | os.PathLike, config: dict) -> None:
    """Creates OUT with run.json = config, or checks that an existing OUT has this config."""
    if not check_output_dir(out, config):
        out = epath.Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "run.json", config)


def fill_missing_shards(out: str | os.PathLike, num_items: int, shard_size: int, batch_size: int,
                        make_records: Callable[[np.ndarray, int], list[bytes]], bar=None) -> int:
    """Writes every shard of items [0, num_items) that is not on disk yet; returns items made.

    make_records(indices [batch_size], count) returns the records of the first `count` indices;
    the last batch of a shard is padded to batch_size so a jitted producer compiles once.
    """
    made = 0
    for shard in range(-(-num_items // shard_size)):
        lo, hi = shard * shard_size, min((shard + 1) * shard_size, num_items)
        if shard_path(out, shard).exists():
            if bar is not None:
                bar.update(hi - lo)
            continue
        records = []
        for start in range(lo, hi, batch_size):
            count = min(batch_size, hi - start)
            records.extend(make_records(np.arange(start, start + batch_size), count))
            made += count
            if bar is not None:
                bar.update(count)
        write_shard(shard_path(out, shard), records)
    return made
