"""Exceptions that the CLI turns into one-line messages with exit code 2."""
from __future__ import annotations

from roborl.config import ConfigError


class UsageError(Exception):
    """Bad input from the user (a missing file, a bad id, a mismatched space): one line, exit 2.

    The message must name the offending key, file, field or device.
    """


__all__ = ["UsageError", "ConfigError"]
