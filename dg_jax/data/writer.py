"""Exactly-once, resumable output of a generated data set, written by every host at once.

    OUT/run.json                                      the config (a rerun with another is refused)
    OUT/shard-00003-part-001-of-004.array_record      host 1's rows of shard 3 (of 4 hosts)
    OUT/manifest.json                                 complete shards, files, label counts

Shard s holds the indices [s * shard_size, (s + 1) * shard_size); each global batch is split
over the hosts, and host h writes its rows of the shard to its own part. A part is written under
a temporary name and renamed when whole; after all hosts have written their parts (a barrier),
host 0 records the shard in the manifest, last. The manifest is the truth: a rerun continues
after its last complete shard (with its label counts, from which dataset-level balance goes on)
and removes parts of later shards, which an interrupted run may have left. Shards are made in
order and depend only on the config, so the final data set is the same however often the run
was stopped.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import jax
from etils import epath

from dg_jax.data.shards import (
    check_output_dir,
    prepare_output_dir,
    read_json,
    write_json_atomic,
    write_shard,
)

PART_PATTERN = "shard-{:05d}-part-{:03d}-of-{:03d}.array_record"


def barrier(name: str) -> None:
    """Waits for every process (a no-op in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def is_local(path: str) -> bool:
    return "://" not in str(path)


class DatasetWriter:
    """Writes the parts of one host; host 0 also keeps the manifest.

    `progress` is the manifest so far (None for a fresh run): `progress["complete_shards"]` and
    the running `progress["counts"]` the generator resumes from.
    """

    def __init__(self, out: str, config: dict, num_items: int, shard_size: int):
        self.out = str(out)
        self.config = config
        self.num_items, self.shard_size = num_items, shard_size
        self.num_shards = -(-num_items // shard_size)
        self.host, self.hosts = jax.process_index(), jax.process_count()
        self._prepare()
        self.progress = self._read_manifest()
        self._remove_unrecorded_parts()
        barrier("dg_jax.writer.ready")

    # -- setup -----------------------------------------------------------------------------
    def _prepare(self) -> None:
        # Every host checks OUT before host 0 creates it, so a refusal happens everywhere (no
        # host waits at a barrier for one that has stopped).
        check_output_dir(self.out, self.config)
        barrier("dg_jax.writer.checked")
        if self.host == 0:
            prepare_output_dir(self.out, self.config)
        barrier("dg_jax.writer.prepared")

    def _read_manifest(self) -> dict | None:
        path = epath.Path(self.out) / "manifest.json"
        if not path.exists():
            return None
        return read_json(path)  # run.json has already vouched for its config

    @property
    def next_shard(self) -> int:
        return self.progress["complete_shards"] if self.progress else 0

    def _remove_unrecorded_parts(self) -> None:
        """Host 0 deletes parts (and temporaries) of shards the manifest does not list: an
        interrupted run's, possibly made by another number of hosts; they are remade."""
        if self.host != 0:
            return
        for path in stray_parts(self.out):
            epath.Path(path).unlink()

    # -- writing ---------------------------------------------------------------------------
    def shard_range(self, shard: int) -> tuple[int, int]:
        return shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_items)

    def part_name(self, shard: int, host: int | None = None) -> str:
        return PART_PATTERN.format(shard, self.host if host is None else host, self.hosts)

    def write_part(self, shard: int, records: list[bytes]) -> None:
        """This host's records of `shard`, visible only when whole."""
        target = epath.Path(self.out) / self.part_name(shard)
        if is_local(self.out):
            write_shard(target, records)
            return
        with tempfile.TemporaryDirectory() as tmp:  # array_record writes local files
            local = pathlib.Path(tmp) / target.name
            write_shard(local, records)
            epath.Path(local).copy(target, overwrite=True)

    def commit(self, shard: int, manifest: dict) -> None:
        """After every host wrote its part of `shard`: host 0 records it (the manifest, last)."""
        barrier(f"dg_jax.writer.shard{shard}")
        files = (self.progress or {}).get("files", []) + [
            self.part_name(shard, h) for h in range(self.hosts)]
        self.progress = {**manifest, "config": self.config, "num_items": self.num_items,
                         "shard_size": self.shard_size, "complete_shards": shard + 1,
                         "num_shards": self.num_shards, "files": files}
        self._write_manifest(self.progress)

    def record_run(self, last_run: dict) -> dict:
        """Adds this invocation's figures (images made, seconds, images/s) to the manifest and
        returns it."""
        if not self.progress:
            return {"num_images": 0, "last_run": last_run}
        self.progress = {**self.progress, "last_run": last_run}
        self._write_manifest(self.progress)
        return self.progress

    def _write_manifest(self, manifest: dict) -> None:
        if self.host != 0:
            return
        write_json_atomic(epath.Path(self.out) / "manifest.json", manifest)


def dataset_files(out: str | os.PathLike) -> list[str]:
    """The complete part files of a generated data set, in shard order (the manifest's list; for
    grain's ArrayRecordDataSource). A folder without a manifest has none."""
    manifest = epath.Path(out) / "manifest.json"
    if not manifest.exists():
        return []
    return [str(epath.Path(out) / f) for f in read_json(manifest).get("files", [])]


def stray_parts(out: str | os.PathLike) -> list[str]:
    """Part files (and temporaries) on disk that the manifest does not list: an interrupted
    run's, possibly made by another number of hosts."""
    listed = set(dataset_files(out))
    return sorted(str(f) for f in epath.Path(out).glob("shard-*-part-*") if str(f) not in listed)
