"""Command-line flags generated from dataclass configs, parsed and validated once at the edge.

Every field of a config is a flag: `--field-name`, or what its `dg_jax.configs.option` says (its
own name, aliases, a parser, a repeatable value). A Literal annotation gives the choices, a bool
a `--x/--no-x` pair, a tuple a repeatable flag. Nested configs' fields appear under the field's
name (`--adp.hidden`), or as they are where the option says `flatten`. `--config FILE` starts
from a JSON file of the fields (a run's recorded run.json repeats that run); flags given as well
change it. Errors come out as one line that names flags, not fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing

from dg_jax.configs import option
from dg_jax.errors import UserError, nested_at
from dg_jax.run_record import recorded_config

# a field made without `option`: option's own defaults
_DEFAULT_META = dict(option(None).metadata)


def _meta(field: dataclasses.Field) -> dict:
    return {**_DEFAULT_META, **field.metadata}


def _without_none(hint):
    """X for `X | None`, else the hint itself."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return args[0] if union and len(args) == 1 else hint


def _has_flag(hint, field: dataclasses.Field) -> bool:
    """Scalars (and Literal, X | None) have flags; tuples only where an `option` declares them
    (a repeatable value); other kinds (nested tuples, dicts) are set through --config."""
    base = _without_none(hint)
    declared = bool(field.metadata)  # made by `option`
    if typing.get_origin(base) is tuple:
        return declared and typing.get_args(base)[-1] is Ellipsis
    return (base in (bool, int, float, str) or typing.get_origin(base) is typing.Literal
            or _meta(field)["parse"] is not None)


def _value_options(hint, meta: dict) -> dict:
    """argparse keywords for one value of a field annotated `hint`."""
    if meta["parse"] is not None:
        return dict(type=meta["parse"])
    hint = _without_none(hint)
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        return dict(type=type(choices[0]), choices=list(choices))
    return dict(type=hint)


def _argument_options(hint, meta: dict, default) -> dict:
    """argparse keywords for a field: its kind, default and help."""
    base = _without_none(hint)
    help_text = meta["help"].replace("%", "%%")
    if base is bool:
        return dict(action=argparse.BooleanOptionalAction, default=default, help=help_text)
    if typing.get_origin(base) is tuple:  # repeatable; None: not given, the default stays
        item = typing.get_args(base)[0]
        return dict(action="append", default=None, help=help_text,
                    **_value_options(item, meta))
    shown = "" if default in (None, "", ()) else f" (default: {default!r})".replace("%", "%%")
    return dict(default=default, help=help_text + shown, required=meta["required"],
                **_value_options(hint, meta))


def add_config_flags(parser: argparse.ArgumentParser, config_cls, defaults=None,
                     dest_prefix: str = "", flag_prefix: str = "", group=None) -> None:
    """Adds one flag per field of config_cls; the flag's dest is the field's dotted path."""
    defaults = config_cls() if defaults is None else defaults
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        meta, value, dest = _meta(field), getattr(defaults, field.name), dest_prefix + field.name
        target = _group(parser, meta["group"]) if meta["group"] else (group or parser)
        if dataclasses.is_dataclass(value):
            inner = flag_prefix if meta["flatten"] else f"{flag_prefix}{field.name}."
            add_config_flags(parser, type(value), value, f"{dest}.", inner, target)
            continue
        if not _has_flag(hints[field.name], field):
            continue
        if meta["positional"]:
            target.add_argument(dest, help=meta["help"].replace("%", "%%"),
                                metavar=field.name.upper())
            continue
        name = meta["flag"] or field.name.replace("_", "-")
        names = [f"--{flag_prefix}{name}"] + [f"--{flag_prefix}{a}" for a in meta["aliases"]]
        options = _argument_options(hints[field.name], meta, value)
        if "choices" not in options and options.get("action") in (None, "append"):
            options["metavar"] = meta["metavar"] or name.upper().replace("-", "_")
        target.add_argument(*names, dest=dest, **options)


def _group(parser: argparse.ArgumentParser, title: str):
    """The parser's argument group with this title (made on first use)."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def config_from_flags(args: argparse.Namespace, config_cls, defaults=None,
                      dest_prefix: str = ""):
    """The config that parsed flags `args` describe (fields without a flag keep `defaults`)."""
    defaults = config_cls() if defaults is None else defaults
    values = vars(args)
    changes = {}
    for field in dataclasses.fields(config_cls):
        value, dest, sep = getattr(defaults, field.name), dest_prefix + field.name, \
            _meta(field)["sep"]
        if dataclasses.is_dataclass(value):
            changes[field.name] = config_from_flags(args, type(value), value, f"{dest}.")
        elif dest in values and isinstance(values[dest], list):
            given = values[dest]
            changes[field.name] = tuple(
                part.strip() for v in given for part in v.split(sep) if part.strip()
            ) if sep else tuple(given)
        elif dest in values and not isinstance(value, tuple):
            changes[field.name] = values[dest]
    with nested_at(dest_prefix):  # a nested config's own check: its fields by their full path
        return dataclasses.replace(defaults, **changes)


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """field path ("guidance.scale") -> its flag ("--push-scale")."""
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}


def user_message(error: Exception, parser: argparse.ArgumentParser) -> str:
    """An error's message with a UserError's config fields named by their flags."""
    if not isinstance(error, UserError):
        return str(error)
    flags = flag_names(parser)

    def flag(field: str) -> str:
        if field in flags:
            return flags[field]
        ends = [f for dest, f in flags.items() if dest.endswith("." + field)]
        return ends[0] if len(ends) == 1 else field

    return error.render(flag)


def error_line(error: Exception, parser: argparse.ArgumentParser) -> str:
    """One line for a bad-input error; config fields named by their flags."""
    return f"error: {user_message(error, parser)}"


def config_parser(config_cls, doc: str) -> argparse.ArgumentParser:
    """A parser with config_cls's flags and --config."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, config_cls)
    parser.add_argument("--config", default="",
                        help="start from this JSON file of the config's fields (a recorded "
                             "run.json repeats that run); flags given as well change it")
    return parser


def parse_config(parser: argparse.ArgumentParser, config_cls, argv=None, keep=(),
                 later_fields=None):
    """(config, parsed args): the flags (and --prompts-file's prompts, where the parser has
    it), on top of --config's file where one is given; the `keep` fields and those the command
    line must give always come from the command line, and the `later_fields` the file leaves
    out take their pinned values (`run_record.recorded_config`)."""
    args = parser.parse_args(argv)
    config = with_prompts_file(config_from_flags(args, config_cls),
                               getattr(args, "prompts_file", ""))
    if args.config:
        keep = (*keep, *_required_fields(config_cls))
        config = recorded_config(args.config, config, command_line_defaults(config), keep=keep,
                                 later_fields=later_fields)
    return config, args


def _required_fields(config_cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(config_cls)
                 if _meta(f)["required"] or _meta(f)["positional"]
                 or f.default is dataclasses.MISSING)


def command_line_defaults(config):
    """What a command line without optional flags gives: the defaults, with the required
    fields as `config` has them."""
    return type(config)(**{name: getattr(config, name) for name in _required_fields(type(config))})


def run_cli(parser: argparse.ArgumentParser, body) -> int:
    """Runs body(); returns 0, or 2 after one line on stderr for bad input."""
    try:
        body()
    except (UserError, OSError) as e:  # OSError: missing files, no access to a bucket
        print(error_line(e, parser), file=sys.stderr)
        return 2
    return 0


def main_for(config_cls, run, doc: str, argv=None) -> int:
    """An entry point's main: parses config_cls's flags (and --config) and calls run(config).
    Returns the exit status: 0, or 2 after one line on stderr for bad input."""
    parser = config_parser(config_cls, doc)
    return run_cli(parser, lambda: run(parse_config(parser, config_cls, argv)[0]))


def add_prompts_file_flag(parser: argparse.ArgumentParser) -> None:
    """--prompts-file, for configs with a `text` field (see `with_prompts_file`)."""
    parser.add_argument("--prompts-file", default="",
                        help="more prompts, one per line, after those of --prompt")


def with_prompts_file(config, path: str):
    """`config` with the prompts of the file at `path` (one per line) after its own."""
    if not path:
        return config
    try:
        with open(path) as f:
            prompts = tuple(line.strip() for line in f if line.strip())
    except OSError as e:
        raise UserError(f"cannot read --prompts-file: {e}") from None
    text = dataclasses.replace(config.text, prompts=config.text.prompts + prompts)
    return dataclasses.replace(config, text=text)
