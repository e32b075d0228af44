"""hartkit as a library: load_tokenizer / load_generator on local folders, range-checked encode / decode,
and the Hugging Face format (save_pretrained -> from_pretrained gives bit-identical outputs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hartkit import Generator, Tokenizer, ValueRangeError, load_generator, load_tokenizer
from hartkit.tokenizers import build_tokenizer, save_tokenizer
from tests.conftest import compose, smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a large red star at the center, on a brick wall", "a small blue circle at the top left"]


def _tokenizer_config(kind: str = "hybrid") -> dict:
    return OmegaConf.to_container(compose(["experiment=smoke", f"tokenizer={kind}"]).tokenizer, resolve=True)


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture
def tokenizer_artifact(tmp_path) -> Path:
    torch.manual_seed(0)
    cfg = _tokenizer_config()
    folder = tmp_path / "artifacts" / "tokenizer" / "hybrid-test"
    save_tokenizer(build_tokenizer(cfg), cfg, folder, {"steps": 0})
    return folder


def test_encode_decode_round_trip_on_a_saved_artifact(tokenizer_artifact):
    tok = load_tokenizer(tokenizer_artifact)
    assert isinstance(tok, Tokenizer) and tok.kind == "hybrid" and tok.image_size == 64
    x = _images()
    tokens = tok.encode(x)
    assert [tuple(t.shape) for t in tokens.indices] == [(2, p * p) for p in tok.patch_nums]
    recon = tok.decode(tokens)
    assert recon.shape == x.shape and recon.min() >= -1 and recon.max() <= 1
    # the hybrid keeps the residual: decoding tokens = decoding the latent, whatever the training
    assert torch.allclose(recon, tok.model.decode_latent(tok.model.encode_latent(x)).clamp(-1, 1), atol=1e-4)


def test_encode_refuses_images_of_another_range_and_converts_on_request(tokenizer_artifact):
    tok = load_tokenizer(tokenizer_artifact)
    x = _images()
    x01 = (x + 1) / 2
    with pytest.raises(ValueRangeError, match=r"value_range=\(0, 1\)"):
        tok.encode(x01)
    u8 = (x01 * 255).round().to(torch.uint8)
    with pytest.raises(ValueRangeError, match=r"value_range=\(0, 255\)"):
        tok.encode(u8)
    with pytest.raises(ValueRangeError, match=r"outside \[-1, 1\]"):
        tok.encode(x * 3)
    with pytest.raises(ValueRangeError, match="outside value_range"):
        tok.encode(x, value_range=(0, 1))
    # converted to [-1, 1]: the same tokens as the same images given in [-1, 1]
    for images, value_range, in_model_range in ((x01, (0, 1), x01 * 2 - 1), (u8, (0, 255), u8 / 255 * 2 - 1)):
        tokens, reference = tok.encode(images, value_range=value_range), tok.encode(in_model_range)
        assert all(torch.equal(a, b) for a, b in zip(tokens.indices, reference.indices)), value_range
    assert tok.decode(tok.encode(x), value_range=(0, 255)).dtype == torch.uint8
    recon01 = tok.reconstruct(x01, value_range=(0, 1))
    assert recon01.min() >= 0 and recon01.max() <= 1


def test_save_pretrained_and_from_pretrained_give_bit_identical_outputs(tokenizer_artifact, tmp_path):
    tok = load_tokenizer(tokenizer_artifact)
    tok.save_pretrained(tmp_path / "hf")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["kind"] == "hybrid" and config["quantizer"]["patch_nums"] == list(tok.patch_nums)
    # the same weights file as the run's artifact: the keys are the tokenizer's own
    assert (tmp_path / "hf" / "model.safetensors").read_bytes() == (tokenizer_artifact / "model.safetensors").read_bytes()
    again = Tokenizer.from_pretrained(tmp_path / "hf")
    same = load_tokenizer(tmp_path / "hf")
    x = _images(seed=3)
    out = tok.decode(tok.encode(x))
    assert torch.equal(again.decode(again.encode(x)), out) and torch.equal(same.decode(same.encode(x)), out)


def test_from_pretrained_refuses_weights_that_do_not_fit(tokenizer_artifact, tmp_path):
    tok = load_tokenizer(tokenizer_artifact)
    tok.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["quantizer"]["vocab_size"] = 512
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="shape mismatches"):
        Tokenizer.from_pretrained(tmp_path / "hf")


def test_missing_folders_say_what_to_load(tmp_path):
    with pytest.raises(FileNotFoundError, match="paths.artifacts"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        load_tokenizer(tmp_path / "empty")


def test_python_c_from_hartkit_import_load_tokenizer(tokenizer_artifact):
    """What a user types after `pip install`: a fresh interpreter, the public import, a round trip."""
    code = textwrap.dedent(f"""
        import torch
        from hartkit import load_tokenizer
        tok = load_tokenizer({str(tokenizer_artifact)!r})
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        print("OK", tuple(tok.decode(tok.encode(x)).shape))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tokenizer_artifact, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert "OK (1, 3, 64, 64)" in out.stdout


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tokenizer and a generator trained by the pipeline (experiment=smoke: seconds)."""
    from hartkit.pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("run")
    ctx = run_pipeline(compose([*smoke_overrides(tmp), "stages=[tokenizer,generator]"]))
    return ctx.state["tokenizer_dir"], ctx.state["generator_dir"]


def test_load_generator_finds_its_tokenizer_and_samples(trained_run, tmp_path):
    tok_dir, gen_dir = trained_run
    gen = load_generator(gen_dir)
    assert torch.equal(gen.tokenizer.model.quantize.embedding.weight,
                       load_tokenizer(tok_dir).model.quantize.embedding.weight)
    images = gen.sample(PROMPTS, seed=1)
    assert images.shape == (2, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(gen.sample(PROMPTS, seed=1), images)  # the seed fixes the samples
    assert gen.sample(PROMPTS[:1], seed=1, value_range=(0, 255)).dtype == torch.uint8
    with pytest.raises(TypeError, match="prompt strings"):
        gen.sample([1, 2])
    # the artifact folders may move together: the tokenizer is found relative to the generator
    moved = tmp_path / "moved"
    import shutil

    shutil.copytree(Path(gen_dir).parents[1], moved)
    assert torch.equal(load_generator(moved / "generator" / Path(gen_dir).name).sample(PROMPTS, seed=1), images)


def test_generator_round_trips_through_the_hub_format(trained_run, tmp_path):
    _, gen_dir = trained_run
    gen = load_generator(gen_dir)
    gen.save_pretrained(tmp_path / "hf")
    files = sorted(p.name for p in (tmp_path / "hf").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors", "tokenizer.safetensors"]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert set(config) == {"ar", "tokenizer"} and config["tokenizer"]["kind"] == "hybrid"
    again = Generator.from_pretrained(tmp_path / "hf")
    assert torch.equal(again.sample(PROMPTS, seed=4), gen.sample(PROMPTS, seed=4))
    assert torch.equal(load_generator(tmp_path / "hf").sample(PROMPTS, seed=4), gen.sample(PROMPTS, seed=4))


def test_generator_artifact_without_its_tokenizer_asks_for_it(trained_run, tmp_path):
    import shutil

    tok_dir, gen_dir = trained_run
    lone = tmp_path / "lone"
    shutil.copytree(gen_dir, lone)
    cfg = OmegaConf.load(lone / "config.yaml")
    del cfg["tokenizer_dir"]
    OmegaConf.save(cfg, lone / "config.yaml")
    with pytest.raises(FileNotFoundError, match="tokenizer="):
        load_generator(lone)
    assert load_generator(lone, tokenizer=tok_dir).sample(PROMPTS[:1], seed=0).shape == (1, 3, 64, 64)
