"""W&B sweep configs: the command line an agent runs, and a dry check of it through Hydra.

``wandb agent`` turns each sweep parameter into a command-line argument and runs
the sweep's ``command``. hartkit's sweep configs use ``${args_no_hyphens}``
(``key=value``, which Hydra understands) instead of the default ``${args}``
(``--key=value``, which Hydra rejects). ``agent_command`` rebuilds that command
line with wandb's own expansion functions, so a sweep config can be checked
(``python -m hartkit.tools.check_sweep sweeps/X.yaml``, which calls ``check_sweep``) before it burns runs.
"""

from __future__ import annotations

import itertools
import os
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from hartkit import configs
from hartkit.errors import UserError

REQUIRED_MACRO = "${args_no_hyphens}"


class SweepConfigError(UserError, ValueError):
    """A sweep config whose runs would not reach Hydra intact."""


def load_sweep_config(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    if not isinstance(cfg, dict):
        raise SweepConfigError(f"{path} is not a W&B sweep config (a YAML mapping)")
    validate_sweep_config(cfg, source=str(path))
    return cfg


def validate_sweep_config(cfg: Mapping[str, Any], source: str = "sweep config") -> None:
    command = cfg.get("command")
    if not command or REQUIRED_MACRO not in command:
        raise SweepConfigError(
            f"{source}: `command` must contain {REQUIRED_MACRO} (e.g. [${{env}}, ${{interpreter}}, ${{program}}, "
            f"{REQUIRED_MACRO}]); the agent's default `--key=value` arguments are rejected by Hydra"
        )
    if "${args}" in command:
        raise SweepConfigError(f"{source}: remove ${{args}} from `command`; it passes `--key=value`, which Hydra rejects")
    if not cfg.get("parameters"):
        raise SweepConfigError(f"{source}: no `parameters`")
    metric = cfg.get("metric") or {}
    if cfg.get("method") == "bayes" and not metric.get("name"):
        raise SweepConfigError(f"{source}: method bayes needs `metric.name` (e.g. recon_eval/psnr)")


def agent_command(cfg: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """The argv ``wandb agent`` runs for one set of parameter values.

    Uses wandb's ``create_sweep_command`` (``${envvar:X}`` macros) and
    ``create_sweep_command_args`` (all ``${args*}`` formats). The final
    substitution of the list-valued macros lives inside wandb's private agent
    method (``wandb_agent.Agent._command_run``); it is mirrored here: a chunk that
    is exactly ``${name}`` is replaced by the list of that name, ``python`` is the
    interpreter and ``/usr/bin/env`` the env (non-Windows).
    """
    from wandb.sdk.launch.sweeps import utils as sweep_utils  # optional (the wandb extra) and heavy

    command = sweep_utils.create_sweep_command(list(cfg["command"]))
    sweep_vars: dict[str, Any] = sweep_utils.create_sweep_command_args(
        {"args": {k: {"value": v} for k, v in params.items()}}
    )
    sweep_vars["interpreter"] = ["python"]
    sweep_vars["program"] = [cfg.get("program", "run.py")]
    sweep_vars["env"] = ["/usr/bin/env"]
    argv: list[str] = []
    for chunk in command:
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += sweep_vars.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv


def hydra_overrides(argv: list[str], program: str = "run.py") -> list[str]:
    """The arguments after the program in an agent's argv (what Hydra parses)."""
    for i, arg in enumerate(argv):
        if Path(arg).name == Path(program).name:
            return argv[i + 1 :]
    raise SweepConfigError(f"program {program!r} not found in the command {argv}")


def parameter_values(spec: Mapping[str, Any]) -> list[Any]:
    """The values a grid over one parameter takes (``value`` / ``values``; ranges give their ends)."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    if "min" in spec and "max" in spec:
        return [spec["min"], spec["max"]]
    raise SweepConfigError(f"parameter spec {dict(spec)} has no value, values or min/max")


def grid(cfg: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every combination of the parameters' values (for a dry check; random/bayes get their range ends)."""
    names = list(cfg["parameters"])
    choices = [parameter_values(cfg["parameters"][n]) for n in names]
    for combo in itertools.product(*choices):
        yield dict(zip(names, combo))


def compose_overrides(overrides: list[str], config_dir: str | os.PathLike | None = None):
    """Compose hartkit's config with these overrides, as ``run.py`` would (no job is run)."""
    return compose_many([overrides], config_dir)[0]


def compose_many(override_lists: list[list[str]], config_dir: str | os.PathLike | None = None,
                 labels: list[str] | None = None) -> list:
    """``compose_overrides`` for several override lists under one Hydra initialisation (``hartkit.configs``).

    A failure raises ``SweepConfigError`` naming ``labels[i]`` (default: the overrides) of the list that failed.
    """
    labels = labels or [shlex.join(overrides) for overrides in override_lists]
    try:
        return configs.compose_many(override_lists, return_hydra_config=True, config_dir=config_dir, labels=labels)
    except configs.ConfigCompositionError as exc:
        raise SweepConfigError(str(exc)) from exc.__cause__


def check_sweep(path: str | os.PathLike, config_dir: str | os.PathLike | None = None) -> list[tuple[list[str], Any]]:
    """Compose every run of a sweep through Hydra; raises on the first that fails.

    Returns (argv, composed config) per run.
    """
    cfg = load_sweep_config(path)
    program = cfg.get("program", "run.py")
    argvs = [agent_command(cfg, params) for params in grid(cfg)]
    try:
        composed = compose_many([hydra_overrides(a, program) for a in argvs], config_dir,
                                labels=[shlex.join(a) for a in argvs])
    except SweepConfigError as exc:
        raise SweepConfigError(f"{path}: the run {exc}") from exc.__cause__
    return list(zip(argvs, composed))
