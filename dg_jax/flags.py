"""Command-line flags from a dataclass config: one `--field-name` per scalar top-level field."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from dg_jax.errors import UserError


def add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    defaults = config_cls()
    for field in dataclasses.fields(config_cls):
        value = getattr(defaults, field.name)
        if isinstance(value, bool):
            parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name,
                                action=argparse.BooleanOptionalAction, default=value)
        elif isinstance(value, (int, float, str)):
            parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name,
                                type=type(value), default=value, help=f"default: {value!r}")


def config_from_flags(args: argparse.Namespace, config_cls):
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in vars(args).items() if k in names})


def main_for(config_cls, run, doc: str, argv=None):
    """Parses `--field` flags for config_cls and calls run(config)."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, config_cls)
    try:
        return run(config_from_flags(parser.parse_args(argv), config_cls))
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
