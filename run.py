"""hartkit entry point: `python run.py tokenizer=hybrid` (see README and conf/)."""

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
from hartkit.errors import is_user_error  # noqa: E402
from hartkit.utils.logging import setup_logging  # noqa: E402

register_configs()


def _only_rank_zero_writes_hydra_files() -> None:
    """Under torchrun every rank enters @hydra.main; only rank 0 may create the output folder and its logs."""
    if int(os.environ.get("RANK", "0")) != 0:
        scratch = tempfile.mkdtemp(prefix=f"hartkit-rank{os.environ['RANK']}-")
        sys.argv += [
            "hydra.output_subdir=null",
            "hydra.run.dir=.",
            f"hydra.sweep.dir={scratch}",
            "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled",
        ]


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hartkit.pipeline import run_pipeline
    from hartkit.scaleout.launch import export_submitit_task_env

    setup_logging()
    export_submitit_task_env()  # tasks of one submitit/SLURM job join one DDP group, as under torchrun
    try:
        run_pipeline(cfg)
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # a programming error: keep the traceback
        logging.getLogger("hartkit").error("%s (HYDRA_FULL_ERROR=1 shows the traceback)", exc)
        sys.exit(2)


if __name__ == "__main__":
    _only_rank_zero_writes_hydra_files()
    main()
