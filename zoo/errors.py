"""The base of every error zoo raises on purpose.

A :class:`ZooError` means "the user asked for something wrong or the input is bad": the
command line prints its message as one line and exits 2. Any other exception is a bug in
zoo and keeps its traceback (exit 1). Subclasses keep a builtin parent too
(``UnknownBackboneError(ZooError, KeyError)``) so ``except KeyError`` still catches them.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class of the errors zoo raises on purpose; the message says what to fix."""


class InvalidValueError(ZooError, ValueError):
    """An argument, file content or config value is wrong; the message says what to pass."""


class InvalidTypeError(ZooError, TypeError):
    """An argument has the wrong type; the message names the types accepted."""


class UnknownNameError(ZooError, KeyError):
    """A name (variant, split, layer, format) is not one zoo knows; the message lists them."""

    def __str__(self) -> str:  # KeyError quotes its message; print it as written
        return str(self.args[0]) if self.args else ""


class MissingFileError(ZooError, FileNotFoundError):
    """A file or directory the user named does not exist or is not what was expected."""
