"""hartkit entry point: `python run.py tokenizer=hybrid` (see README and conf/)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hartkit.config import register_configs
from hartkit.utils.logging import setup_logging

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hartkit.pipeline import run_pipeline

    setup_logging()
    run_pipeline(cfg)


if __name__ == "__main__":
    main()
