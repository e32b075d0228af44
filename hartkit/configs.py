"""Where hartkit's Hydra configs live, in a source checkout and in an installed wheel.

The config tree is the top-level ``conf/`` folder of the repository. The wheel
ships the same files as the package data folder ``hartkit/conf/`` (pyproject
maps ``conf/`` onto ``hartkit.conf``), found through Hydra's ``pkg://hartkit.conf``
search path. A source checkout (``conf/config.yaml`` beside the package, as in
an editable install) always wins, so edits to ``conf/`` take effect at once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

CONFIG_NAME = "config"
PACKAGE = "hartkit.conf"
_PACKAGE_DIR = Path(__file__).resolve().parent


def source_conf_dir() -> Path | None:
    """The checkout's ``conf/`` folder, or None when hartkit runs from an installed wheel."""
    root = _PACKAGE_DIR.parent
    conf = root / "conf"
    if (conf / "config.yaml").is_file() and (root / "pyproject.toml").is_file():
        return conf
    return None


def packaged_conf_dir() -> Path | None:
    """``hartkit/conf/`` inside an installed package (None in a checkout, where it does not exist)."""
    conf = _PACKAGE_DIR / "conf"
    return conf if (conf / "config.yaml").is_file() else None


def conf_dir() -> Path:
    """The folder holding ``config.yaml`` and the config groups (checkout first, then the installed package)."""
    found = source_conf_dir() or packaged_conf_dir()
    if found is None:
        raise FileNotFoundError(
            f"hartkit's configs are missing: neither {_PACKAGE_DIR.parent / 'conf'} (a source checkout) nor "
            f"{_PACKAGE_DIR / 'conf'} (an installed wheel) holds config.yaml. Reinstall hartkit "
            "(pip install --force-reinstall hartkit-*.whl) or run from the repository root.")
    return found


def hydra_config_path() -> str:
    """``config_path`` for ``hydra.main``: the checkout's absolute ``conf/`` path, else ``pkg://hartkit.conf``."""
    source = source_conf_dir()
    if source is not None:
        return str(source)
    conf_dir()  # a clear error when the package data is missing too
    return f"pkg://{PACKAGE}"


@contextlib.contextmanager
def initialize(job_name: str = "hartkit") -> Iterator[None]:
    """Hydra's compose API over hartkit's configs (schema registered), wherever they are."""
    # heavy, so not at the top: Hydra, and the schema (hartkit.config loads every package's config and the
    # datasets library); callers of conf_dir() alone (ar_models.presets, the wheel check) need neither
    from hydra import initialize_config_dir, initialize_config_module

    from hartkit.config import register_configs

    register_configs()
    source = source_conf_dir()
    if source is not None:
        ctx = initialize_config_dir(config_dir=str(source), version_base="1.3", job_name=job_name)
    else:
        conf_dir()
        ctx = initialize_config_module(config_module=PACKAGE, version_base="1.3", job_name=job_name)
    with ctx:
        yield


class ConfigCompositionError(ValueError):
    """A list of overrides that does not compose; the message names it (``labels``) and Hydra's reason."""


def compose_many(override_lists: list[list[str]], return_hydra_config: bool = False,
                 config_dir: str | os.PathLike | None = None, labels: list[str] | None = None) -> list:
    """hartkit's composed config for each list of overrides, under one fresh Hydra initialisation (no job is run).

    The one place hartkit composes ``conf/``: the checkout's or the installed copy, or ``config_dir`` when given.
    With ``labels``, a failure raises ``ConfigCompositionError`` naming ``labels[i]`` of the list that failed;
    without, Hydra's own error."""
    from hydra import compose as hydra_compose  # heavy: see initialize()
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hartkit.config import register_configs  # heavy: see initialize()

    GlobalHydra.instance().clear()
    if config_dir is not None:
        register_configs()
        init = initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3")
    else:
        init = initialize()
    composed = []
    with init:
        for i, overrides in enumerate(override_lists):
            try:
                composed.append(hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides),
                                              return_hydra_config=return_hydra_config))
            except Exception as exc:  # any composition error, re-raised naming what failed
                if labels is None:
                    raise
                raise ConfigCompositionError(f"`{labels[i]}` does not compose: {exc}") from exc
    return composed


def compose(overrides: list[str] | None = None, return_hydra_config: bool = False,
            config_dir: str | os.PathLike | None = None):
    """hartkit's composed config with these overrides (a fresh Hydra initialisation; no job is run)."""
    return compose_many([list(overrides or [])], return_hydra_config, config_dir)[0]


def compose_for_run(overrides: list[str]):
    """hartkit's config with these overrides: inside a running ``run.py`` job through Hydra's own loader
    (the same search path as the job), elsewhere (tests, scripts) through a fresh initialisation."""
    from hydra import compose as hydra_compose  # heavy: see initialize()
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=CONFIG_NAME, overrides=overrides)
    return compose(overrides, return_hydra_config=True)
