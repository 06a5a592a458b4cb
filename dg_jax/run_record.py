"""Configs from a recorded run: OUT/run.json (or any JSON file of a config's fields) as the
command line's starting point, so that a run is repeated or relaunched without retyping it.

    python -m sample.generate --out gs://bucket/faces --resume       # continue, as recorded
    python -m sample.generate --config old/run.json --out new --seed 2  # repeat, changing one

--resume refuses a flag that changes a recorded setting (the run must stay one data set);
--config applies such flags on top of the file. What a record leaves out because it does not
change the result (`keep`: --out, --png, --on-degenerate) always comes from the command line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from etils import epath

from dg_jax import configs
from dg_jax.data.shards import read_json
from dg_jax.errors import ConfigMismatchError, UserError


def changed_settings(given, defaults) -> dict:
    """The settings (dotted names, "sampler.num_steps") where the command line's config `given`
    differs from `defaults`, the config of a command line without flags."""
    ours, default = (configs.flatten(configs.to_dict(c)) for c in (given, defaults))
    return {key: value for key, value in ours.items() if value != default.get(key)}


def recorded_config(path, given, defaults, keep: tuple[str, ...] = (), refuse_changes=False,
                    later_fields: Mapping[str, Any] | None = None):
    """`given`'s config class built from the JSON file at `path` (local or gs://), with the
    command line's changed settings refused (refuse_changes) or applied on top, and the `keep`
    fields taken from `given`. `later_fields` (dotted name -> pinned value) that the file
    leaves out take their pinned value, not today's default: a record left them out because it
    was written before them or with that value."""
    path = epath.Path(path)
    if not path.exists():
        raise UserError(f"no config file {path}")
    cls = type(given)
    record = read_json(path)
    record.pop(configs.WEIGHTS_RECORD, None)
    ours = configs.to_dict(given)
    record.update({name: ours[name] for name in keep})
    record = configs.with_pinned_fields(record, later_fields or {}, cls)
    try:
        base = configs.from_dict(cls, record)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path} is not a {cls.__name__} this version reads ({e})") from None
    theirs = configs.flatten(configs.to_dict(base))
    changes = {k: v for k, v in changed_settings(given, defaults).items()
               if k.split(".")[0] not in keep and v != theirs.get(k)}
    if changes and refuse_changes:
        key, value = next(iter(changes.items()))
        raise ConfigMismatchError(
            f"--resume: {key} is {value!r} on the command line but {theirs.get(key)!r} in "
            f"{path}; leave the flag out, or start a new run in another --out")
    return with_settings(base, changes)


def with_settings(config, settings: dict):
    """`config` with dotted settings ({"sampler.num_steps": 20}) replaced."""
    for key, value in settings.items():
        head, _, rest = key.partition(".")
        inner = getattr(config, head)
        value = with_settings(inner, {rest: value}) if rest else (
            tuple(value) if isinstance(value, list) else value)
        config = dataclasses.replace(config, **{head: value})
    return config


# A generation run's fields that its record does not hold to: where it is written, whether PNGs
# are written beside it, and how broken output is handled. They come from the command line.
COMMAND_LINE_FIELDS = ("out", "png", "guard")


def resumed_config(given, defaults, later_fields: Mapping[str, Any] | None = None):
    """The config OUT/run.json records (OUT = given.out), for --resume."""
    run_file = epath.Path(given.out) / "run.json"
    if not run_file.exists():
        raise UserError(f"--resume: {given.out} has no run.json; start the run without --resume")
    return recorded_config(run_file, given, defaults, keep=COMMAND_LINE_FIELDS,
                           refuse_changes=True, later_fields=later_fields)
