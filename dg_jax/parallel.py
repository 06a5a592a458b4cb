"""Devices and hosts: the ("data",) mesh every sampler and generator splits its batch over.

One process per host (`jax.distributed.initialize()` joins them); each sees all devices of all
hosts in `jax.devices()` and owns the rows of a global batch that sit on its local devices.
"""

from __future__ import annotations

import math
import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def host_ordered_devices() -> list:
    """Every device of every host, each host's devices together (sorted by process index, then
    device id): jax.devices() does not promise that order on a pod, and a host's rows of the
    batch must be one contiguous block (`local_row_range`)."""
    return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every host, host by host), axis
    DATA_AXIS."""
    devices = host_ordered_devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's devices."""
    return NamedSharding(mesh, P(DATA_AXIS))


def batch_mesh(global_batch: int, unit: int = 1) -> Mesh:
    """The data mesh for a global batch: every device, or in a single process, when the batch
    does not split evenly over all of them, the most devices it does split over (with a note
    on stderr). Several processes need a multiple of the device count. `unit`: consecutive rows
    that must stay on one device (a prompt group, whose batch distribution is its own)."""
    devices = host_ordered_devices()
    units = global_batch // unit
    if units % len(devices) == 0:
        return data_mesh(devices)
    whole = f"{global_batch} rows in groups of {unit}" if unit > 1 else f"size {global_batch}"
    if jax.process_count() > 1:
        raise ValueError(f"the global batch ({whole}) must split into whole groups over the "
                         f"{len(devices)} devices of all hosts")
    used = math.gcd(units, len(devices))
    print(f"note: the batch ({whole}) does not split over {len(devices)} devices; using "
          f"{used} (choose a multiple of {len(devices) * unit} to use them all)", file=sys.stderr)
    return data_mesh(devices[:used])


def replicate(tree, mesh: Mesh):
    """A copy of `tree` (e.g. model state; the same values in every process) on every device of
    the mesh. Built from each process's own copy: no transfers between hosts."""
    sharding = NamedSharding(mesh, P())

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.device_put(x, sharding)  # RNG keys (training state): one process only
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def global_batch(mesh: Mesh, values: np.ndarray) -> jax.Array:
    """A [G, ...] array every process knows whole (indices, masks), split over the mesh."""
    values = np.asarray(values)
    return jax.make_array_from_callback(values.shape, batch_sharding(mesh),
                                        lambda index: values[index])


def local_row_range(mesh: Mesh, global_batch: int) -> tuple[int, int]:
    """[lo, hi): the rows of a global batch this process holds (contiguous: the mesh lists each
    process's devices together)."""
    sharding = batch_sharding(mesh)
    rows = sorted({idx[0].indices(global_batch)[:2]
                   for idx in sharding.addressable_devices_indices_map((global_batch,)).values()})
    lo, hi = rows[0][0], rows[-1][1]
    if hi - lo != sum(b - a for a, b in rows):
        raise ValueError("this process's devices do not hold one contiguous block of the batch")
    return lo, hi


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded array, in order, as numpy."""
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    shards = {s.index[0].start or 0: s.data for s in x.addressable_shards}
    return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])
