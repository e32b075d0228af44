"""The ``hartkit`` command (also ``python -m hartkit`` and ``python run.py``): compose the config, run the pipeline.

    hartkit tokenizer=hybrid                 # the main job
    hartkit stages=[preview]                 # look at the data
    hartkit experiment=smoke                 # every stage in seconds
    hartkit -m tokenizer=discrete,continuous,hybrid

The configs come from the checkout's ``conf/`` or, installed from a wheel, from
``pkg://hartkit.conf`` (``hartkit.configs``). The job returns the value of
``objective`` (e.g. ``objective=recon_eval/psnr``) so Hydra sweepers that
optimise (Optuna) read it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

# OpenMP threads that busy-wait between ops starve every other process on a shared machine
# (measured: 5x slower steps under load); must be set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from hartkit.config import register_configs  # noqa: E402
from hartkit.configs import hydra_config_path  # noqa: E402
from hartkit.errors import is_user_error  # noqa: E402
from hartkit.pipeline import objective_value, run_pipeline  # noqa: E402
from hartkit.scaleout.launch import export_submitit_task_env  # noqa: E402
from hartkit.utils.logging import setup_logging  # noqa: E402

log = logging.getLogger("hartkit")


def only_rank_zero_writes_hydra_files(argv: list[str]) -> None:
    """Under torchrun every rank enters @hydra.main; only rank 0 may create the output folder and its logs."""
    if int(os.environ.get("RANK", "0")) != 0:
        scratch = tempfile.mkdtemp(prefix=f"hartkit-rank{os.environ['RANK']}-")
        argv += [
            "hydra.output_subdir=null",
            "hydra.run.dir=.",
            f"hydra.sweep.dir={scratch}",
            "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled",
        ]


def run_job(cfg: DictConfig) -> float | None:
    """One Hydra job: run the configured stages; return the ``objective`` metric (None when unset).

    A user error (bad config value, missing file) prints one line and exits with code 2
    (``HYDRA_FULL_ERROR=1`` keeps the traceback); any other exception keeps its traceback.
    """
    setup_logging()
    export_submitit_task_env()  # tasks of one submitit/SLURM job join one DDP group, as under torchrun
    try:
        ctx = run_pipeline(cfg)
        return objective_value(cfg, ctx)
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # a programming error: keep the traceback
        log.error("%s (HYDRA_FULL_ERROR=1 shows the traceback)", exc)
        sys.exit(2)


def main() -> None:
    """Console entry point: Hydra parses ``sys.argv`` (overrides, ``-m``, ``--cfg job``, ``--help``)."""
    register_configs()
    only_rank_zero_writes_hydra_files(sys.argv)
    hydra.main(version_base="1.3", config_path=hydra_config_path(), config_name="config")(run_job)()


if __name__ == "__main__":
    main()
