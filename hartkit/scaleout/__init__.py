"""Scale-out helpers: W&B sweep command lines and the SLURM/submitit task environment.

Distributed training itself lives in ``hartkit.engine`` (DDP, rank-sliced
batches, rank-0 checkpoints) and the evaluation stages split their own work
across ranks; these helpers are for running many experiments (sweeps,
multirun, SLURM jobs).
"""
