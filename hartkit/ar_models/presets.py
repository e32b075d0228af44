"""Load an ``ar`` preset from ``conf/ar/<name>.yaml`` without Hydra (for sizing and efficiency tables).

Inside a run, Hydra composes the same files; this loader only follows the one
default those files use (``text_encoder: <option>``).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hartkit.ar_models.config import ARConfig
from hartkit.configs import conf_dir as hartkit_conf_dir


def load_preset(name: str, conf_dir: str | Path | None = None) -> DictConfig:
    """``conf/ar/<name>.yaml`` of the checkout or of the installed package (``hartkit.configs``)."""
    if conf_dir is None:
        conf_dir = hartkit_conf_dir() / "ar"
    path = Path(conf_dir) / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in Path(conf_dir).glob("*.yaml"))
        raise FileNotFoundError(f"no ar preset {name!r} in {conf_dir}; known presets: {known}")
    raw = OmegaConf.load(path)
    cfg = OmegaConf.structured(ARConfig)
    for entry in raw.pop("defaults", []) or []:
        if isinstance(entry, (dict, DictConfig)) and "text_encoder" in entry:
            te = OmegaConf.load(Path(conf_dir) / "text_encoder" / f"{entry['text_encoder']}.yaml")
            cfg.text_encoder = OmegaConf.merge(cfg.text_encoder, te)
    return OmegaConf.merge(cfg, raw)
