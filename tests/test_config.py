"""Every config group option composes; typos and wrong types fail with the key's name."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from tests.conftest import CONF_DIR, compose

GROUPS = ["data", "tokenizer", "ar", "eval", "logger", "experiment"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_required_group_has_options():
    for group in ["data", "tokenizer", "ar", "eval", "logger"]:
        assert _options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose([f"{group}={option}"] if group != "experiment" else [f"experiment={option}"])
    assert cfg.stages, "stages must not be empty"
    if group in ("data", "tokenizer", "ar"):
        assert cfg[group].name, f"{group}={option} sets no name"


@pytest.mark.parametrize("kind", ["discrete", "continuous", "hybrid"])
def test_the_finer_latent_preset_builds_a_16x16_walk(kind):
    """experiment=embedded_f4 swaps both tokenizer groups: a 16x16 latent at 64 px whose walk ends at 16, so the
    last scale is the whole latent (a mismatch would fail in the quantizer's first step, minutes into a run)."""
    import torch

    from hartkit.tokenizers.checkpoint import build_tokenizer

    cfg = compose(["experiment=embedded_f4", f"tokenizer={kind}"])
    tok = build_tokenizer(cfg.tokenizer).eval()
    assert tok.latent_size == 16 and tuple(tok.patch_nums) == (1, 2, 3, 4, 6, 8, 11, 16)
    with torch.no_grad():
        tokens = tok.encode(torch.zeros(1, 3, cfg.data.resolution, cfg.data.resolution))
        assert tok.decode(tokens).shape == (1, 3, 64, 64)
    assert sum(p * p for p in tok.patch_nums) == 507


def test_defaults_are_the_embedded_hybrid_job():
    cfg = compose()
    assert cfg.data.name == "synthscenes"
    assert cfg.tokenizer.kind == "hybrid"
    assert cfg.logger.name == "none"


@pytest.mark.parametrize("override,key", [
    ("data.resolutoin=64", "resolutoin"),
    ("tokenizer.not_a_key=1", "not_a_key"),
    ("tokenizer.quantizer.vocab_sise=512", "vocab_sise"),
])
def test_unknown_key_names_the_key(override, key):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        compose([override])
    assert key in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize("override,key", [
    ("data.resolution=big", "resolution"),
    ("seed=abc", "seed"),
    ("tokenizer.train.steps=1.5", "steps"),
])
def test_wrong_type_names_the_key(override, key):
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose([override])
    assert key in str(err.value) + str(err.value.__cause__)
