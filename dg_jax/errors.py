"""Errors that command-line entry points report as one line with exit code 2."""


class UserError(ValueError):
    """Bad input from the user: a flag, a target, a path or a config that cannot be used."""


class ConfigMismatchError(UserError):
    """An existing output or run directory was made with another config; nothing is overwritten."""
