"""A finished stage artifact: final weights + the config they came from + a DONE marker.

``DONE`` is written last, so a folder without it is an unfinished (or killed)
run that later stages must not read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from safetensors.torch import load_model, save_model
from torch import nn

from hartkit.utils.distributed import barrier, is_main
from hartkit.utils.io import atomic_write, atomic_write_json, atomic_write_text

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
DONE = "DONE"


def is_finished(artifact_dir: str | os.PathLike) -> bool:
    folder = Path(artifact_dir)
    return all((folder / name).is_file() for name in (DONE, WEIGHTS, CONFIG))


def mark_unfinished(artifact_dir: str | os.PathLike) -> None:
    """Retraining: the folder's old weights no longer count as finished (rank 0 removes DONE)."""
    if is_main():
        (Path(artifact_dir) / DONE).unlink(missing_ok=True)


def finish_artifact(artifact_dir: str | os.PathLike, model: nn.Module, config: Any, summary: dict | None = None) -> None:
    """Write weights, config and summary atomically; ``DONE`` (with the summary) last. Rank 0 only."""
    artifact_dir = Path(artifact_dir)
    if is_main():
        artifact_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(artifact_dir / WEIGHTS, lambda tmp: save_model(model, tmp))
        yaml_text = OmegaConf.to_yaml(OmegaConf.create(config)) if not isinstance(config, str) else config
        atomic_write_text(artifact_dir / CONFIG, yaml_text)
        atomic_write_json(artifact_dir / DONE, summary or {})
    barrier()


def read_summary(artifact_dir: str | os.PathLike) -> dict:
    with open(Path(artifact_dir) / DONE, encoding="utf-8") as fh:
        return json.load(fh)


def load_artifact_weights(artifact_dir: str | os.PathLike, model: nn.Module) -> nn.Module:
    artifact_dir = Path(artifact_dir)
    if not is_finished(artifact_dir):
        raise FileNotFoundError(
            f"{artifact_dir} has no {DONE} marker: its training did not finish. Rerun the stage (resume=true continues it)."
        )
    missing, unexpected = load_model(model, str(artifact_dir / WEIGHTS), strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"{artifact_dir / WEIGHTS} does not match the model: missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}"
        )
    return model
