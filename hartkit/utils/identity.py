"""Which config keys make an artifact what it is, declared where the keys are: on the config dataclasses.

A trained artifact's folder is named by a hash of its config (``hartkit.pipeline.artifact_dir``). Most keys
belong in that hash; two kinds do not, and say so in their field's metadata:

- ``setting(...)``: a key that does not change the trained weights (logging and checkpoint intervals,
  gradient accumulation, loader workers, sampling): left out of the hash, so changing it reuses the artifact;
- ``hashed_when_set(...)``: a key added after artifacts existed, whose unset value (None) reproduces the
  old behaviour: hashed only when set, so older artifacts keep their folders.

``identity_exemptions(Config)`` reads them back as dotted keys, walking nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

IDENTITY = "identity"  # the metadata key
NOT_IDENTITY = False  # its value on a setting
WHEN_SET = "when_set"  # its value on a key hashed only when set


def setting(**kwargs: Any) -> Any:
    """``dataclasses.field(**kwargs)`` for a key that does not change the trained weights."""
    return dataclasses.field(**kwargs, metadata={IDENTITY: NOT_IDENTITY})


def hashed_when_set(**kwargs: Any) -> Any:
    """``dataclasses.field(**kwargs)`` for a key hashed into an artifact's identity only when not None."""
    return dataclasses.field(**kwargs, metadata={IDENTITY: WHEN_SET})


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``Optional[X]``), None for anything else."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and dataclasses.is_dataclass(args[0]) and isinstance(args[0], type):
        return args[0]
    return None


def identity_exemptions(schema: type, prefix: str = "") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(settings, keys hashed only when set) of a config dataclass, as dotted keys under ``prefix``.

    A setting that holds a dataclass (``ar.sampling``) is left out whole; its own fields are not listed."""
    if not (dataclasses.is_dataclass(schema) and isinstance(schema, type)):
        raise TypeError(f"{schema!r} is not a dataclass")
    hints = typing.get_type_hints(schema)
    ignored: list[str] = []
    when_set: list[str] = []
    for f in dataclasses.fields(schema):
        dotted = f"{prefix}{f.name}"
        mark = f.metadata.get(IDENTITY, True)
        if mark is NOT_IDENTITY:
            ignored.append(dotted)
        elif mark == WHEN_SET:
            when_set.append(dotted)
        elif mark is not True:
            raise ValueError(f"{schema.__name__}.{f.name}: metadata {IDENTITY}={mark!r}; use setting() or "
                             "hashed_when_set()")
        elif (inner := _dataclass_of(hints[f.name])) is not None:
            sub_ignored, sub_when_set = identity_exemptions(inner, f"{dotted}.")
            ignored += sub_ignored
            when_set += sub_when_set
    return tuple(ignored), tuple(when_set)
