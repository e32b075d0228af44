"""Errors caused by the user's input or environment, as opposed to bugs.

``run.py`` prints a ``UserError`` (and a missing / unreadable file) as one
clear message and exits with code 2, without a traceback: the message already
names the problem and the fix. ``HYDRA_FULL_ERROR=1`` shows the traceback
anyway. Every other exception is a programming error and keeps its traceback.
"""

from __future__ import annotations

# a file the user pointed at (or that the environment lacks) is missing or unreadable
ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                                         PermissionError)


class UserError(Exception):
    """Bad input or environment: a config value, a missing weight file, a corrupt image, an unknown stage."""


class ConfigError(UserError, ValueError):
    """A config value (or a file a config value points at) that cannot work; the message names the key or file
    and what to set instead."""


class CheckpointMismatchError(RuntimeError):
    """Checkpoint keys or shapes do not match the model (no partial load happens). A bug or a wrong file, so not
    a UserError by itself; loaders that know the file came from the user mix in ConfigError."""


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, (UserError, *ENVIRONMENT_ERRORS))
