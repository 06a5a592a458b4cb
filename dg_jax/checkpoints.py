"""Bundles of (config, params) on disk, and where the embedded default model lives.

A bundle is a folder with `config.json` (which module and its config) and an orbax checkpoint
`params/` of the module's parameters, local or on an object store (gs://, through etils.epath:
there the parameters travel through a local temporary folder, so any epath store works, the fake
one of the tests included).
Shipped bundles store float16 parameters (half the size; restored as float32) where that is
accurate enough for inference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

EMBEDDED_DIR = pathlib.Path(__file__).parent / "assets"
EMBEDDED_UNET = EMBEDDED_DIR / "synthfaces_unet"
EMBEDDED_CLASSIFIER = EMBEDDED_DIR / "synthfaces_classifier"
EMBEDDED_EVALUATOR = EMBEDDED_DIR / "synthfaces_evaluator"  # FD labels and KID/FID features
EMBEDDED_ADP = EMBEDDED_DIR / "synthfaces_adp"  # the embedded UNet's ADP, every attribute


def location(path: str | os.PathLike) -> epath.Path:
    """A local path made absolute (orbax needs that), or an object-store path (gs://...)."""
    path = os.fspath(path)
    return epath.Path(path if "://" in path else os.path.abspath(path))


def copy_tree(source: epath.Path, dest: epath.Path) -> None:
    """Copies folder `source` into `dest` file by file, between any two epath stores."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_dir():
            copy_tree(item, dest / item.name)
        else:
            (dest / item.name).write_bytes(item.read_bytes())


@contextlib.contextmanager
def staged(folder: epath.Path, upload: bool):
    """A local folder for orbax: `folder` itself when it is local; on an object store a
    temporary copy (downloaded first, or uploaded afterwards with upload=True)."""
    if "://" not in str(folder):
        yield folder
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = epath.Path(tmp) / folder.name
        if not upload:
            copy_tree(folder, local)
        yield local
        if upload:
            copy_tree(local, folder)


def save_bundle(path: str | os.PathLike, kind: str, config: dict, model: nnx.Module,
                dtype: str = "float32", extra: dict | None = None) -> None:
    """Writes config.json and params/ under `path` (which must not exist yet)."""
    path = location(path)
    if path.exists():
        raise FileExistsError(f"refusing to overwrite existing bundle {path}")
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
    path.mkdir(parents=True)
    with staged(path / "params", upload=True) as local, ocp.StandardCheckpointer() as ckpt:
        ckpt.save(local, params)
    meta = {"kind": kind, "config": config, "param_dtype": dtype, **(extra or {})}
    (path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")


def read_bundle_config(path: str | os.PathLike) -> dict:
    path = location(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint bundle at {path} (config.json missing)")
    return json.loads((path / "config.json").read_text())


def load_params_into(path: str | os.PathLike, model: nnx.Module) -> nnx.Module:
    """Restores params/ of a bundle into `model` (shapes must match exactly), as float32."""
    path = location(path)
    state = nnx.state(model, nnx.Param)
    target = nnx.to_pure_dict(state)
    meta = read_bundle_config(path)
    # On this process's first device: with several processes (multi-host generation) every
    # process restores its own copy, whatever topology the checkpoint was written on.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    stored = jax.tree.map(lambda p: jax.ShapeDtypeStruct(
        p.shape, jnp.dtype(meta["param_dtype"]), sharding=device), target)
    with staged(path / "params", upload=False) as local, ocp.StandardCheckpointer() as ckpt:
        loaded = ckpt.restore(local, stored)
    loaded = jax.tree.map(lambda p, t: jnp.asarray(p, t.dtype), loaded, target)
    nnx.replace_by_pure_dict(state, loaded)
    nnx.update(model, state)
    return model


def params_sha256(model: nnx.Module, extra: dict | None = None) -> str:
    """A fingerprint of a module's parameter values (and of `extra`, a JSON-ready dict): the same
    weights give the same hex digest however they were stored, so a run folder can record which
    weights made it rather than only where they were loaded from."""
    digest = hashlib.sha256()
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for path, value in sorted(jax.tree_util.tree_flatten_with_path(params)[0],
                              key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.asarray(value, np.float32)
        digest.update(f"{jax.tree_util.keystr(path)}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps(extra or {}, sort_keys=True).encode())
    return digest.hexdigest()
