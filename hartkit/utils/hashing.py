"""Stable hashes of config subtrees and files (artifact lookup, weight provenance)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def config_hash(*subtrees: Any, length: int = 10) -> str:
    """Hash plain (resolved) config containers; key order does not matter."""
    plain = [
        OmegaConf.to_container(t, resolve=True) if isinstance(t, (DictConfig, ListConfig)) else t
        for t in subtrees
    ]
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
