"""Scale-out helpers: W&B sweep command lines, rank sharding of evaluation work.

Distributed training itself lives in ``hartkit.engine`` (DDP, rank-sliced
batches, rank-0 checkpoints); these helpers are for running many experiments
(sweeps, multirun) and for splitting evaluation across ranks.
"""
