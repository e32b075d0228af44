"""W&B sweep configs: the agent's command line reaches Hydra intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from hartkit.scaleout.sweep import (
    SweepConfigError,
    agent_command,
    check_sweep,
    compose_overrides,
    grid,
    hydra_overrides,
    load_sweep_config,
    validate_sweep_config,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
EXPECTED = {"tokenizer_comparison.yaml", "codebook_scales.yaml", "generator_sampling.yaml"}


def _stages_of(argv: list[str]) -> list[str]:
    [arg] = [a for a in argv if a.startswith("stages=")]
    return [s.strip() for s in arg.split("=", 1)[1].strip("[]").split(",")]


def test_the_three_sweeps_exist():
    assert EXPECTED <= {p.name for p in SWEEPS}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_run_of_a_sweep_composes_with_its_values(path):
    cfg = load_sweep_config(path)
    assert cfg["program"] == "run.py"
    assert cfg["command"][:4] == ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
    checked = check_sweep(path)
    runs = list(grid(cfg))
    assert len(checked) == len(runs) > 0
    for params, (argv, composed) in zip(runs, checked):
        assert composed.logger.name == "wandb"
        for key, value in params.items():
            node = OmegaConf.select(composed, key)
            if OmegaConf.is_dict(node):  # a config-group choice, e.g. tokenizer=hybrid
                assert node.name == value, key
            else:
                got = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node
                assert got == value, key
        # the metric the sweep optimises is one that a stage of this sweep records ({stage}/{metric})
        metric_stage = cfg["metric"]["name"].split("/")[0]
        assert metric_stage in _stages_of(argv)
        assert list(composed.stages) == _stages_of(argv)


def test_codebook_sweep_builds_valid_tokenizers():
    """Every scale schedule of the sweep must end at the latent size; fail here, not in run 7 of 9."""
    from hartkit.tokenizers import build_tokenizer

    path = ROOT / "sweeps" / "codebook_scales.yaml"
    for _, composed in check_sweep(path):
        model = build_tokenizer(composed.tokenizer)
        model.check_image_size(composed.data.resolution)
        assert model.vocab_size == composed.tokenizer.quantizer.vocab_size
        assert list(model.patch_nums) == list(composed.tokenizer.quantizer.patch_nums)


def test_agent_command_line_with_spaces_lists_and_plus_key():
    cfg = load_sweep_config(ROOT / "sweeps" / "tokenizer_comparison.yaml")
    params = {
        "tokenizer": "continuous",
        "run_name": "cmp: continuous seed 0",  # spaces and a colon
        "data.captions": "'captions, v2.txt'",  # a comma must be quoted for Hydra inside the value
        "logger.tags": ["first sweep", "cpu"],
        "tokenizer.quantizer.patch_nums": [1, 2, 4, 8],
        "resume": True,
        # absent from the config: needs the `+` in the parameter's name
        "+hydra.job.env_set.WANDB_NOTES": "notes with spaces",
    }
    argv = agent_command(cfg, params)
    assert argv[:3] == ["/usr/bin/env", "python", "run.py"]
    # the agent passes a list to Popen (no shell), so a value with spaces stays one argument
    assert "run_name=cmp: continuous seed 0" in argv
    assert "+hydra.job.env_set.WANDB_NOTES=notes with spaces" in argv
    composed = compose_overrides(hydra_overrides(argv))
    assert composed.run_name == "cmp: continuous seed 0"
    assert composed.data.captions == "captions, v2.txt"
    assert list(composed.logger.tags) == ["first sweep", "cpu"]
    assert list(composed.tokenizer.quantizer.patch_nums) == [1, 2, 4, 8]
    assert composed.tokenizer.kind == "continuous"
    assert composed.resume is True
    assert composed.hydra.job.env_set.WANDB_NOTES == "notes with spaces"
    assert composed.logger.name == "wandb"


def test_unquoted_comma_is_rejected_by_hydra():
    """Documented limit: Hydra reads a bare `a, b` as a list/sweep; the sweep value must quote it."""
    cfg = load_sweep_config(ROOT / "sweeps" / "tokenizer_comparison.yaml")
    argv = agent_command(cfg, {"run_name": "a, b"})
    with pytest.raises(Exception, match="Ambiguous value"):
        compose_overrides(hydra_overrides(argv))


def test_key_absent_from_config_fails_without_plus():
    cfg = load_sweep_config(ROOT / "sweeps" / "tokenizer_comparison.yaml")
    argv = agent_command(cfg, {"tokenizer": "hybrid", "hydra.job.env_set.WANDB_NOTES": "x"})
    with pytest.raises(Exception, match="WANDB_NOTES"):
        compose_overrides(hydra_overrides(argv))


def test_default_agent_args_are_rejected_by_hydra_and_by_validation():
    """Why the sweeps use ${args_no_hyphens}: the default ${args} gives --key=value."""
    cfg = {"program": "run.py", "command": ["${env}", "${interpreter}", "${program}", "${args}"],
           "parameters": {"seed": {"value": 3}}}
    argv = agent_command(cfg, {"seed": 3})
    assert argv[-1] == "--seed=3"
    with pytest.raises(Exception):  # noqa: B017 - Hydra's parser raises its own error types
        compose_overrides(hydra_overrides(argv))
    with pytest.raises(SweepConfigError, match="args_no_hyphens"):
        validate_sweep_config(cfg)


def test_broken_sweep_names_the_failing_run(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "program": "run.py", "method": "grid",
        "parameters": {"tokenizer.quantizer.vocab_sise": {"values": [256]}},
        "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"],
    }))
    with pytest.raises(SweepConfigError, match="vocab_sise=256"):
        check_sweep(bad)


def test_agent_command_line_parses_in_run_py(tmp_path):
    """The real entry point, as a subprocess with the agent's argv (Hydra prints the job config)."""
    cfg = load_sweep_config(ROOT / "sweeps" / "codebook_scales.yaml")
    params = {"tokenizer": "discrete", "tokenizer.quantizer.vocab_size": 256,
              "tokenizer.quantizer.patch_nums": [1, 2, 4, 8], "run_name": "codebook 256 x 4 scales"}
    argv = agent_command(cfg, params)
    cmd = [sys.executable, str(ROOT / "run.py"), *hydra_overrides(argv), "--cfg", "job"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    job = yaml.safe_load(out.stdout)
    assert job["run_name"] == "codebook 256 x 4 scales"
    assert job["tokenizer"]["quantizer"]["vocab_size"] == 256
    assert job["tokenizer"]["quantizer"]["patch_nums"] == [1, 2, 4, 8]
    assert job["logger"]["name"] == "wandb"
    assert job["stages"] == ["tokenizer", "recon_eval"]


def test_sweep_checker_cli(tmp_path, capsys):
    from hartkit.tools.check_sweep import main

    assert main([str(ROOT / "sweeps" / "tokenizer_comparison.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "3 runs compose" in printed and "run.py tokenizer=hybrid" in printed
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"program": "run.py", "parameters": {"seed": {"value": 1}},
                                   "command": ["${env}", "${interpreter}", "${program}", "${args}"]}))
    assert main([str(bad)]) == 1
    assert "args_no_hyphens" in capsys.readouterr().err


def test_torchrun_command_for_multi_gpu_trials():
    """The documented multi-GPU sweep command: torchrun starts run.py with the agent's overrides."""
    cfg = {"program": "run.py", "parameters": {"tokenizer": {"values": ["hybrid"]}},
           "command": ["torchrun", "--standalone", "--nproc_per_node=8", "${program}", "${args_no_hyphens}",
                       "logger=wandb"]}
    validate_sweep_config(cfg)
    argv = agent_command(cfg, {"tokenizer": "hybrid"})
    assert argv == ["torchrun", "--standalone", "--nproc_per_node=8", "run.py", "tokenizer=hybrid", "logger=wandb"]
    composed = compose_overrides(hydra_overrides(argv))
    assert composed.tokenizer.name == "hybrid" and composed.logger.name == "wandb"
