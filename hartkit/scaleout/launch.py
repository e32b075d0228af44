"""Join one DDP process group from the tasks of a submitit job (SLURM or local).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a
SLURM job launched by ``hydra/launcher=slurm`` with ``tasks_per_node > 1``
starts its processes through ``srun`` instead, which sets SLURM_* variables.
submitit's ``TorchDistributedEnvironment`` translates them into torchrun's
variables, after which ``hartkit.utils.distributed.init_distributed`` joins the
group exactly as under torchrun.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def export_submitit_task_env() -> bool:
    """Inside a submitit job with several tasks, set torchrun's variables; returns whether it did.

    A no-op under torchrun (RANK already set), outside submitit, and for one-task jobs.
    """
    if "RANK" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    try:  # optional (the slurm extra): only inside a submitit job
        import submitit
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:  # submitit sets SUBMITIT_EXECUTOR, so it is installed; be safe anyway
        return False
    job_env = submitit.JobEnvironment()
    if job_env.num_tasks <= 1:
        return False
    # keep every GPU visible: hartkit picks cuda:LOCAL_RANK itself
    dist_env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    log.info("submitit task %d of %d joins DDP via %s:%d", dist_env.rank, dist_env.world_size,
             dist_env.master_addr, dist_env.master_port)
    return True
