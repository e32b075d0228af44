"""The research scripts that turn committed records into the tables of results/ (so no number there is typed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hartkit.records import Protocol, ResultRecord, write_record

REPO = Path(__file__).resolve().parents[1]


def _gen_record(folder: Path, dataset: str, checkpoint: str, seed: int, position: float, role: str = "model"):
    proto = Protocol(task="generation", dataset=dataset, split="test", num_images=500, resolution=64)
    rec = ResultRecord(stage="gen_eval", label="discrete+tiny", protocol=proto, role=role,
                       metrics={"prompt_accuracy/main_position": position},
                       intervals={"prompt_accuracy/main_position": [position - 0.03, position + 0.03]},
                       config={"seed": seed, "tokenizer": {"checkpoint": f"artifacts/tokenizer/{checkpoint}"}})
    write_record(folder, rec)


def test_record_rows_filters_sorts_by_seed_and_gives_the_spread(tmp_path):
    grad = "synthscenes[backgrounds=gradient]"
    _gen_record(tmp_path / "a", grad, "discrete-aaa", 1, 0.10)
    _gen_record(tmp_path / "b", grad, "discrete-aaa", 0, 0.30)
    _gen_record(tmp_path / "b", grad, "discrete-bbb", 0, 0.90)  # another tokenizer: filtered out
    _gen_record(tmp_path / "b", "synthscenes", "discrete-aaa", 2, 0.90)  # another protocol: filtered out
    _gen_record(tmp_path / "b", grad, "discrete-aaa", 3, 0.90, role="floor")  # not a model row
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts/research/record_rows.py"), str(tmp_path / "a"), str(tmp_path / "b"),
         "--dataset", grad, "--checkpoint", "discrete-aaa", "--metrics", "prompt_accuracy/main_position"],
        capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[2] == "| discrete+tiny | discrete-aaa | 0 | 0.300 [0.270, 0.330] |"
    assert out[3] == "| discrete+tiny | discrete-aaa | 1 | 0.100 [0.070, 0.130] |"
    # mean and sample standard deviation of 0.30 and 0.10
    assert out[4] == "| mean ± std over 2 runs | | | 0.200 ± 0.141 |"
    assert len(out) == 5


def test_scale_probe_builds_the_tokenizers_own_latent_from_all_scales():
    """The probe's prefix latents are the generator's path (``add_scale`` per scale); with every scale they must
    be the latent the tokenizer decodes its codes to, or the probe's "real scales K" row would not be a
    reconstruction. The empty prefix is the all-zero latent."""
    import torch

    from tests.test_ar_hart_recipe import tiny_tokenizer

    sys.path.insert(0, str(REPO / "scripts/research"))
    try:
        from scale_probe import latent_from_scales
    finally:
        sys.path.remove(str(REPO / "scripts/research"))
    tok = tiny_tokenizer("discrete")  # codes spread over the codebook, a Phi unlike the identity
    with torch.no_grad():
        tokens = tok.encode(torch.rand(3, 3, 16, 16) * 2 - 1)
        full = latent_from_scales(tok, tokens.indices, 3)
        expected = tok.tokens_to_latent(tokens)
        # same additions in the same order: equal up to float32 rounding of a few terms
        assert torch.allclose(full, expected, rtol=0, atol=8 * torch.finfo(torch.float32).eps * expected.abs().max())
        assert not torch.allclose(latent_from_scales(tok, tokens.indices[:2], 3), expected)
        assert torch.equal(latent_from_scales(tok, [], 3), torch.zeros_like(expected))
