"""Shared test helpers: compose the real Hydra config with overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

# tests never touch the network and never write into the repository's results/
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: no busy-waiting threads
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
# built datasets are cached on disk; tests keep that cache in a folder of their own, never the user's ~/.cache
if "HARTKIT_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["HARTKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="hartkit-test-cache-")
    atexit.register(shutil.rmtree, os.environ["HARTKIT_CACHE_DIR"], True)


def compose(overrides: list[str] | None = None):
    """The checkout's config (hartkit.configs finds conf/) with these overrides."""
    from hartkit.configs import compose as hartkit_compose

    return hartkit_compose(list(overrides or []))


def smoke_overrides(tmp_path) -> list[str]:
    """`experiment=smoke` (every stage in seconds) with every output inside tmp_path."""
    return ["experiment=smoke", f"paths.results={tmp_path}/results", f"paths.artifacts={tmp_path}/artifacts",
            f"eval.stats_cache={tmp_path}/artifacts/fd_stats"]


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose the config with paths redirected into tmp_path."""

    def _compose(*overrides: str):
        return compose([f"paths.results={tmp_path}/results", f"paths.artifacts={tmp_path}/artifacts",
                        f"eval.stats_cache={tmp_path}/artifacts/fd_stats", *overrides])

    return _compose


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use small tensors: one intra-op thread is fastest, and on a shared 2-core machine several
    spin-waiting OpenMP threads made them 10-30x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
