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


def compose(overrides: list[str] | None = None):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from hartkit.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose the config with paths redirected into tmp_path."""

    def _compose(*overrides: str):
        return compose([f"paths.results={tmp_path}/results", f"paths.artifacts={tmp_path}/artifacts", *overrides])

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
