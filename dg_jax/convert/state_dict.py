"""Reading other frameworks' weights and copying them into dg-jax modules by name: config.json,
state dicts (safetensors without torch; PyTorch .bin with torch), and the exact-match copy into a
module's parameters."""

from __future__ import annotations

import json
import pathlib

import jax.numpy as jnp
import numpy as np
from flax import nnx

from dg_jax.configs import flatten

# diffusers' weight files are called diffusion_pytorch_model, transformers' (CLIP) model
WEIGHT_NAME = "diffusion_pytorch_model"


def read_config(folder, class_name: str | None = None, what: str | None = None) -> dict:
    """folder/config.json; with `class_name`, it must describe that diffusers class
    (`_class_name`). `what` names the model in the error when config.json is missing."""
    file = pathlib.Path(folder) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"no {what or class_name or 'model'} at {folder} (no config.json)")
    raw = json.loads(file.read_text())
    if class_name is not None and raw.get("_class_name") != class_name:
        raise ValueError(f"{folder}: model class {raw.get('_class_name')!r}, expected {class_name}")
    return raw


def read_state_dict(folder, weight_name: str = WEIGHT_NAME) -> dict[str, np.ndarray]:
    """All tensors of `folder`'s weights as float32 numpy arrays: diffusers' files are called
    diffusion_pytorch_model, transformers' (CLIP) model.

    Reads .safetensors (also sharded, with its .index.json) without torch; .bin needs torch.
    """
    folder = pathlib.Path(folder)
    single = folder / f"{weight_name}.safetensors"
    index = folder / f"{weight_name}.safetensors.index.json"
    if single.is_file():
        return read_safetensors([single])
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return read_safetensors([folder / f for f in files])
    binary = folder / f"{weight_name}.bin"
    if binary.is_file():
        try:
            import torch
        except ImportError:
            raise ImportError(f"{binary} is a PyTorch pickle and needs torch to read; install "
                              "torch or save the model as safetensors") from None
        state = torch.load(binary, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise FileNotFoundError(f"no {weight_name}.safetensors or .bin in {folder}")


def read_safetensors(files) -> dict[str, np.ndarray]:
    """Every tensor of these .safetensors files as float32 numpy (bf16 and fp16 included)."""
    from safetensors import safe_open

    out = {}
    for f in files:
        # framework="flax" because numpy has no bfloat16; converted to float32 numpy below.
        with safe_open(str(f), framework="flax") as reader:
            for key in reader.keys():
                out[key] = np.asarray(reader.get_tensor(key), np.float32)
    return out


def load_converted(model: nnx.Module, converted: dict[str, np.ndarray]) -> nnx.Module:
    """Copies arrays named by their dotted path in `model` ("down_blocks.0.conv1.kernel") into its
    parameters; every parameter must be matched exactly once, with its shape.

    `model` may be abstract (`models.abstract.abstract_model`), as the loaders build it."""
    state = nnx.state(model, nnx.Param)
    ours = flatten(nnx.to_pure_dict(state))
    missing, unexpected = sorted(set(ours) - set(converted)), sorted(set(converted) - set(ours))
    if missing or unexpected:
        raise ValueError(f"weights do not fit the config: {len(missing)} missing "
                         f"{missing[:4]}, {len(unexpected)} unexpected {unexpected[:4]}")
    for name, value in converted.items():
        if name.endswith(".kernel") and value.ndim == 4 and ours[name].ndim == 2:
            value = value[0, 0]  # 1x1 conv weights of old attention blocks, as a linear kernel
        if value.shape != ours[name].shape:
            raise ValueError(f"weight {name}: shape {value.shape}, the config needs "
                             f"{ours[name].shape}")
        converted[name] = jnp.asarray(value)
    nnx.replace_by_pure_dict(state, _unflatten(converted))
    nnx.update(model, state)
    return model


def parameter_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """The shape of each of `model`'s parameters by dotted name ("conv_in.kernel")."""
    return {name: tuple(value.shape)
            for name, value in flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param))).items()}


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(int(p) if p.isdigit() else p, {})
        node[leaf] = value
    return tree
