"""Experiment tracking: nothing by default, Weights & Biases with `logger=wandb`."""

from __future__ import annotations

import logging
import os
from typing import Any

from hartkit.utils.distributed import is_main

log = logging.getLogger(__name__)


class NullLogger:
    """Default: metrics go to Python logging and result records only."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def log_image(self, key: str, path: str, caption: str | None = None, step: int | None = None) -> None:
        pass

    def log_record(self, record: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger(NullLogger):
    def __init__(self, cfg, full_config: dict[str, Any], run_name: str | None = None):
        import wandb

        mode = cfg.mode or os.environ.get("WANDB_MODE")
        self._wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=mode,
            name=run_name,
            tags=list(cfg.tags),
            # dotted keys, as the sweep parameters are named: a nested dict under a key the sweep
            # sets (e.g. `tokenizer` for tokenizer=hybrid) would be dropped by W&B's sweep lock
            config=flatten_config(full_config),
        )
        self.log_images = cfg.log_images
        log.info("W&B run %s (mode=%s)", self.run.name if self.run else None, mode or "online")

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._wandb.log(dict(metrics), step=step)

    def log_image(self, key: str, path: str, caption: str | None = None, step: int | None = None) -> None:
        if self.log_images:
            self._wandb.log({key: self._wandb.Image(path, caption=caption)}, step=step)

    def log_record(self, record: dict[str, Any]) -> None:
        # the sweep's metric is read from the summary, so store the record's metrics there under its stage
        stage = record.get("stage", "result")
        for name, value in record.get("metrics", {}).items():
            self.run.summary[f"{stage}/{name}"] = value
            self.run.summary[name] = value
        self.run.summary[f"{stage}/protocol"] = record.get("protocol", {})

    def finish(self) -> None:
        self._wandb.finish()


def flatten_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def build_logger(cfg, full_config: dict[str, Any], run_name: str | None = None):
    if cfg.name == "none" or not is_main():
        return NullLogger()
    if cfg.name == "wandb":
        return WandbLogger(cfg, full_config, run_name)
    raise ValueError(f"logger.name={cfg.name!r} is unknown; use logger=none or logger=wandb")
