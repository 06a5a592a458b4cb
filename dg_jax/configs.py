"""Dataclass configs to and from JSON-ready dicts.

`from_dict` fills fields a dict lacks with their defaults, so configs saved by an older version
(before a field existed) still load and compare equal when the new field keeps its default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from dg_jax.errors import UserError


def option(default, help: str = "", *, flag: str | None = None, aliases: tuple[str, ...] = (),
           parse=None, sep: str | None = None, group: str | None = None, required: bool = False,
           flatten: bool = False, metavar: str | None = None, positional: bool = False):
    """A config field and how the command line sets it (dg_jax.flags builds the flags).

    flag: the flag's name without dashes (default: the field's name, "_" as "-"); aliases: more
    names. parse: str -> value, instead of the annotated type. sep: a repeatable field also
    splits each value at it. group: the flags' heading in --help. required: the command line
    must give it; positional: as an argument without a flag name. flatten: a nested config's
    own flags appear as they are (`--push-scale`), not under the field's name
    (`--guidance.scale`). Literal annotations become the flag's choices."""
    metadata = dict(help=help, flag=flag, aliases=aliases, parse=parse, sep=sep, group=group,
                    required=required, flatten=flatten, metavar=metavar, positional=positional)
    return dataclasses.field(default=default, metadata=metadata)


def check_choices(config) -> None:
    """Raises a UserError naming the first field annotated `Literal[...]` whose value is not one
    of its choices."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        allowed = typing.get_args(hints[field.name])
        value = getattr(config, field.name)
        if typing.get_origin(hints[field.name]) is typing.Literal and value not in allowed:
            raise UserError(f"{{{field.name}}} {value!r} is unknown; use "
                            f"{' or '.join(map(str, allowed))}")


def named_value(spec: str) -> tuple[str, float] | None:
    """A repeatable NAME=VALUE option's spec ("VALUE" alone: name "") -> (name, value), or None
    when the value is not a finite number >= 0."""
    name, _, text = spec.rpartition("=")
    try:
        value = float(text)
    except ValueError:
        return None
    return (name, value) if math.isfinite(value) and value >= 0 else None


# The key under which a run record (run.json) holds which weights made the run, beside the
# config's fields: a fact about the run, not a setting, so a config read from a record skips it.
WEIGHTS_RECORD = "weights"


def to_dict(config) -> dict:
    """A dataclass config as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def to_recorded_dict(config, later_fields: Iterable[str] | Mapping[str, Any]) -> dict:
    """`to_dict`, leaving out the `later_fields` (added after outputs were first written with
    this config class; "guidance.posterior_power" names a field of a nested config) while they
    hold the value that does what was done before they existed, so that an output folder
    recorded before them still matches its rerun. That value is the field's default, or, with
    a mapping, the value it maps to: pinned, so that a later change of the default does not
    make another config look like the recorded one."""
    d = to_dict(config)
    for name in later_fields:
        *parents, leaf = name.split(".")
        owner, record = config, d
        for parent in parents:
            owner, record = getattr(owner, parent), record[parent]
        if isinstance(later_fields, Mapping):
            before = later_fields[name]
        else:
            field = next(f for f in dataclasses.fields(owner) if f.name == leaf)
            before = field.default_factory() if callable(field.default_factory) else field.default
        if getattr(owner, leaf) == before:
            record.pop(leaf)
    return d


def with_pinned_fields(record: dict, later_fields: Mapping[str, Any], cls) -> dict:
    """A recorded `cls` config dict with the `later_fields` it leaves out (`to_recorded_dict`)
    put back at their pinned values, so that `from_dict` rebuilds what was recorded rather than
    the current defaults of those fields. Only where the dict holding such a field is a whole
    record (every other field of its config is there): a hand-written partial config leaves
    fields out to mean their defaults."""
    record = json.loads(json.dumps(record))
    pinned_by_owner = {}  # the parents' names of later fields -> {field: its pinned value}
    for name, before in later_fields.items():
        *parents, leaf = name.split(".")
        pinned_by_owner.setdefault(tuple(parents), {})[leaf] = before
    for parents, pinned in pinned_by_owner.items():
        owner, kind = record, cls
        for parent in parents:
            owner = owner.get(parent)
            kind = _dataclass_in(typing.get_type_hints(kind)[parent])
            if not isinstance(owner, dict) or kind is None:
                break
        else:
            if {f.name for f in dataclasses.fields(kind)} - pinned.keys() <= owner.keys():
                for leaf, before in pinned.items():
                    owner.setdefault(leaf, to_dict(before) if dataclasses.is_dataclass(before)
                                     else before)
    return record


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested dict as one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def from_dict(cls, d: dict):
    """Builds dataclass `cls` from `d`: nested dataclass fields recursively (through their own
    `from_dict` where they define one), lists as tuples. Unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    kwargs = {}
    for name, value in d.items():
        kind = _dataclass_in(hints[name])
        if kind is not None and isinstance(value, dict):
            value = kind.from_dict(value) if hasattr(kind, "from_dict") else from_dict(kind, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _dataclass_in(hint):
    """The dataclass type of a field annotated `X` or `X | None`, else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None
