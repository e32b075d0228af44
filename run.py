"""hartkit entry point: `python run.py tokenizer=hybrid` (see README and conf/)."""

from __future__ import annotations

import os
import sys
import tempfile

import hydra
from omegaconf import DictConfig

from hartkit.config import register_configs
from hartkit.utils.logging import setup_logging

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
    run_pipeline(cfg)


if __name__ == "__main__":
    _only_rank_zero_writes_hydra_files()
    main()
