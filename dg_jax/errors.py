"""Errors that command-line entry points report as one line with exit code 2."""

from __future__ import annotations

import contextlib
import re

_FIELD = re.compile(r"\{(/?)([a-z][a-z0-9_.]*)\}")


class UserError(ValueError):
    """Bad input from the user: a value, a target, a path or a config that cannot be used.

    A message names config fields as `{field}` (a dotted path such as `{guidance.scale}`): str()
    gives the library's terms ("guidance.scale must be finite"); the command line shows each
    field's flag instead ("--push-scale must be finite"). A nested config names its own fields;
    `{/guidance.scale}` names one from the top of the job's config."""

    def __init__(self, template: str):
        self.template = template
        super().__init__(self.render(lambda field: field))

    def render(self, name_of) -> str:
        """The message with each `{field}` replaced by name_of(field)."""
        return _FIELD.sub(lambda m: name_of(m.group(2)), self.template)

    def within(self, path: str) -> UserError:
        """This error raised by a config nested at `path` ("sampler."): its fields in full."""
        return type(self)(_FIELD.sub(
            lambda m: m.group(0) if m.group(1) else "{" + path + m.group(2) + "}", self.template))


class ConfigMismatchError(UserError):
    """An existing output or run directory was made with another config; nothing is overwritten."""


@contextlib.contextmanager
def nested_at(path: str):
    """Inside: a UserError of the config nested at `path` ("text.") names its fields in full."""
    try:
        yield
    except UserError as e:
        raise e.within(path) from None


def template_of(error: Exception) -> str:
    """An error's message as a template for a UserError that wraps it (fields kept as fields)."""
    return error.template if isinstance(error, UserError) else str(error)
