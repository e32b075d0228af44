"""Experiment tracking: nothing by default, Weights & Biases with `logger=wandb`.

W&B keeps one global step per run that may only grow, while every hartkit trainer counts its own steps from
0. So hartkit never passes ``step=`` to ``wandb.log``: a value logged with a step goes out with a per-stage
step metric beside it (``tokenizer/step``, ``generator/step``), declared once with
``define_metric("<stage>/*", step_metric="<stage>/step")``, and W&B's own step simply counts the calls. Each
stage's curves are plotted against that stage's steps, and nothing is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hartkit.errors import ConfigError
from hartkit.utils.distributed import is_main
from hartkit.utils.hashing import config_hash

log = logging.getLogger(__name__)

# settings that do not make a different experiment: a run resumed with other values continues the same W&B run
_NOT_RUN_IDENTITY = ("run_name", "paths", "logger", "stages", "resume", "retrain", "device", "threads", "kernels",
                     "objective")


class NullLogger:
    """Default: metrics go to Python logging and result records only."""

    run_id: str | None = None

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def log_image(self, key: str, path: str, caption: str | None = None, step: int | None = None) -> None:
        pass

    def log_table(self, key: str, frame) -> None:
        pass

    def log_record(self, record: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger(NullLogger):
    def __init__(self, cfg, full_config: dict[str, Any], run_name: str | None = None, run_id: str | None = None,
                 group: str | None = None):
        try:
            import wandb
        except ImportError as exc:
            raise ConfigError("logger=wandb needs the wandb package: pip install 'hartkit[wandb]' "
                              "(or use logger=none)") from exc

        mode = cfg.mode or os.environ.get("WANDB_MODE")
        self._wandb = wandb
        kwargs: dict[str, Any] = {}
        if run_id is not None:
            kwargs.update(id=run_id, resume="allow")  # the same id continues the same run
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=mode,
            name=run_name,
            group=group,
            tags=list(cfg.tags),
            # dotted keys, as the sweep parameters are named: a nested dict under a key the sweep
            # sets (e.g. `tokenizer` for tokenizer=hybrid) would be dropped by W&B's sweep lock
            config=flatten_config(full_config),
            **kwargs,
        )
        self.run_id = self.run.id if self.run else None
        self.log_images = cfg.log_images
        self._step_metrics: set[str] = set()
        log.info("W&B run %s, id %s (mode=%s%s)", self.run.name if self.run else None, self.run_id,
                 mode or "online", f", group {group}" if group else "")

    def _with_stage_steps(self, payload: dict[str, Any], step: int | None) -> dict[str, Any]:
        """Add ``<stage>/step`` = step for the stage prefix of every key (declared once per stage)."""
        if step is None:
            return payload
        out = dict(payload)
        for key in payload:
            if "/" not in key:
                continue
            prefix = key.split("/", 1)[0]
            step_metric = f"{prefix}/step"
            if step_metric not in self._step_metrics:
                self.run.define_metric(step_metric)
                self.run.define_metric(f"{prefix}/*", step_metric=step_metric)
                self._step_metrics.add(step_metric)
            out[step_metric] = int(step)
        return out

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(self._with_stage_steps(dict(metrics), step))

    def log_image(self, key: str, path: str, caption: str | None = None, step: int | None = None) -> None:
        if self.log_images:
            self.run.log(self._with_stage_steps({key: self._wandb.Image(str(path), caption=caption)}, step))

    def log_table(self, key: str, frame) -> None:
        """A pandas DataFrame as a ``wandb.Table`` (e.g. the leaderboard)."""
        self.run.log({key: self._wandb.Table(dataframe=frame)})

    def log_record(self, record: dict[str, Any]) -> None:
        # the sweep's metric is read from the summary, so store the record's metrics there under its stage
        stage = record.get("stage", "result")
        for name, value in record.get("metrics", {}).items():
            self.run.summary[f"{stage}/{name}"] = value
            self.run.summary[name] = value
        self.run.summary[f"{stage}/protocol"] = record.get("protocol", {})

    def finish(self) -> None:
        self.run.finish()


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


def run_id_name(full_config: dict[str, Any]) -> str:
    """``run-<hash>.json``: the file that keeps the W&B run id of this experiment.

    The hash covers the experiment (data, models, training, evaluation, seed, W&B project) and leaves out how
    it is run (stages, resume, devices, paths), so ``resume=true`` finds the id of the run it continues. An
    artifact can serve several experiments (a sweep over generator settings trains one tokenizer), hence one
    file per experiment."""
    identity = {k: v for k, v in full_config.items() if k not in _NOT_RUN_IDENTITY}
    logger = full_config.get("logger") or {}
    identity["wandb_project"] = [logger.get("project"), logger.get("entity")]
    return f"run-{config_hash(identity)}.json"


def run_id_file(full_config: dict[str, Any], folder: str | os.PathLike | None = None) -> Path:
    """Where the W&B run id of this experiment is kept inside an artifact folder: ``<folder>/wandb/run-<hash>.json``;
    without a folder ``<paths.artifacts>/wandb/run-<hash>.json`` (for runs that use no artifact, and the place
    earlier versions kept every id, still read on resume)."""
    base = Path(folder) if folder is not None else Path(full_config["paths"]["artifacts"])
    return base / "wandb" / run_id_name(full_config)


def new_wandb_id() -> str:
    """A fresh W&B run id (8 lowercase letters and digits, the form wandb generates itself)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _resumed_run_id(paths: Sequence[Path]) -> str | None:
    """The id in the most recently written of these files (a run that used fewer artifacts may be newer)."""
    found = []
    for path in paths:
        try:
            found.append((path.stat().st_mtime_ns, str(json.loads(path.read_text())["id"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(found)[1] if found else None


def build_logger(cfg, full_config: dict[str, Any], run_name: str | None = None, resume: bool = False,
                 group: str | None = None, artifact_dirs: Sequence[str | os.PathLike] = (),
                 resume_dirs: Sequence[str | os.PathLike] = ()):
    """The run's logger (rank 0 only; other ranks log nothing).

    The W&B run id is kept in the artifact folders this run trains or scores (``artifact_dirs``:
    ``<artifact>/wandb/run-<experiment hash>.json``), or under ``<paths.artifacts>/wandb/`` when it uses none.
    ``resume=True`` continues the W&B run that the same experiment started: the newest id found in
    ``artifact_dirs``, ``resume_dirs`` (the experiment's other artifacts) or ``<paths.artifacts>/wandb/``.
    Inside a W&B sweep the agent chooses the run instead."""
    if cfg.name == "none" or not is_main():
        return NullLogger()
    if cfg.name != "wandb":
        raise ConfigError(f"logger.name={cfg.name!r} is unknown; use logger=none or logger=wandb")
    in_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))
    has_paths = "paths" in full_config
    id_files = [run_id_file(full_config, folder) for folder in artifact_dirs]
    if not id_files and has_paths:
        id_files = [run_id_file(full_config)]
    run_id = None
    if resume and not in_sweep:
        others = [run_id_file(full_config, folder) for folder in resume_dirs]
        candidates = list(dict.fromkeys([*id_files, *others, *([run_id_file(full_config)] if has_paths else [])]))
        run_id = _resumed_run_id(candidates)
        if run_id is None:
            log.info("resume=true: no W&B run of this experiment recorded at %s, starting a new one",
                     ", ".join(str(c) for c in candidates) or "(no paths.artifacts)")
    if run_id is None and not in_sweep and "WANDB_RUN_ID" not in os.environ:
        run_id = new_wandb_id()
    logger = WandbLogger(cfg, full_config, run_name=run_name, run_id=run_id, group=cfg.group or group)
    if logger.run_id and not in_sweep:
        from hartkit.utils.io import atomic_write_json

        for id_file in id_files:
            atomic_write_json(id_file, {"id": logger.run_id, "project": cfg.project, "entity": cfg.entity,
                                        "name": logger.run.name})
    return logger
