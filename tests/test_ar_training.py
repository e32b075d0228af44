"""Generator training on a token cache: cache round trip, loss goes down, resume continues exactly, and what it
learns by heart comes back out of the sampler."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from hartkit.ar_models.config import ARConfig
from hartkit.ar_models.model import ScaleAR, TokenSpec
from hartkit.ar_models.sampling import generate_tokens
from hartkit.ar_models.token_cache import encode_dataset, load_cache, save_cache
from hartkit.ar_models.trainer import train_generator
from hartkit.tokenizers.fake import FakeMultiScaleTokenizer

WORDS = ["red circle", "blue square", "green star", "white cross"]



def fake_items(n: int = 16):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(3, 16, 16, generator=g) * 2 - 1, "prompt": f"a {WORDS[i % 4]}",
             "category": WORDS[i % 4].split()[1], "category_id": i % 4} for i in range(n)]


def collate(items):
    return {"image": torch.stack([it["image"] for it in items]), "prompt": [it["prompt"] for it in items],
            "category": [it["category"] for it in items], "category_id": torch.tensor([it["category_id"] for it in items])}


def small_cfg(**train):
    cfg = OmegaConf.structured(ARConfig)
    cfg.depth, cfg.width, cfg.heads = 1, 32, 2
    cfg.text_encoder.width, cfg.text_encoder.depth, cfg.text_encoder.vocab_buckets = 16, 1, 256
    cfg.diffusion.width, cfg.diffusion.depth, cfg.diffusion.batch_mul = 16, 1, 2
    cfg.train.batch_size, cfg.train.warmup_steps, cfg.train.log_every = 8, 1, 1
    for k, v in train.items():
        cfg.train[k] = v
    return cfg


@pytest.mark.parametrize("kind", ["discrete", "hybrid", "continuous"])
def test_token_cache_round_trip(tmp_path, kind):
    tok = FakeMultiScaleTokenizer(kind, (1, 2, 4), 16, 4)
    enc = encode_dataset(tok, fake_items(10), 4, "cpu", collate)
    save_cache(tmp_path / "c", enc, {"kind": kind})
    back = load_cache(tmp_path / "c")
    assert back["prompts"] == enc["prompts"] and back["info"]["kind"] == kind
    expected = {"x_in", "category_id"} | {"discrete": {"idx"}, "hybrid": {"idx", "residual", "code_emb", "rest_before_last"},
                                          "continuous": {"cont"}}[kind]
    assert set(back["tensors"]) == expected
    for k, v in enc["tensors"].items():
        torch.testing.assert_close(back["tensors"][k], v)
    assert back["tensors"]["x_in"].shape == (10, 1 + 4 + 16 - 1, 4)
    assert load_cache(tmp_path / "missing") is None


def test_training_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    tok = FakeMultiScaleTokenizer("hybrid", (1, 2, 4), 16, 4)
    cache = encode_dataset(tok, fake_items(16), 8, "cpu", collate)
    cfg = small_cfg(steps=40, lr=0.1, checkpoint_every=0, final_scale_keep=0.5)
    model = ScaleAR(cfg, TokenSpec.from_tokenizer(tok))
    losses = []

    class Rec:
        def log_metrics(self, m, step=None):
            losses.append(m["generator/loss"])

    res = train_generator(model, cache, cfg, tmp_path / "g", torch.device("cpu"), logger=Rec())
    assert len(losses) == 40 and sum(losses[-5:]) < 0.8 * sum(losses[:5])
    assert res.summary["steps"] == 40 and not res.model.training


def test_resume_continues_exactly(tmp_path):
    tok = FakeMultiScaleTokenizer("hybrid", (1, 2, 4), 16, 4)
    cache = encode_dataset(tok, fake_items(16), 8, "cpu", collate)
    cfg = small_cfg(steps=4, checkpoint_every=2, grid_every=3, ema_decay=0.5)

    def fresh():
        torch.manual_seed(0)
        return ScaleAR(cfg, TokenSpec.from_tokenizer(tok))

    torch.manual_seed(1)
    full = train_generator(fresh(), cache, cfg, tmp_path / "a", torch.device("cpu"), seed=3)

    class Killed(Exception):
        pass

    def die(*_):
        raise Killed

    torch.manual_seed(1)
    with pytest.raises(Killed):  # dies at step 3, after the step-2 checkpoint
        train_generator(fresh(), cache, cfg, tmp_path / "b", torch.device("cpu"), seed=3, grid_fn=die)
    torch.manual_seed(123)  # the checkpoint restores the RNG state, so this must not matter
    resumed = train_generator(fresh(), cache, cfg, tmp_path / "b", torch.device("cpu"), seed=3, resume=True)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_grad_accum_gives_the_full_batch_update(tmp_path):
    tok = FakeMultiScaleTokenizer("discrete", (1, 2, 4), 16, 4)
    cache = encode_dataset(tok, fake_items(16), 8, "cpu", collate)

    def run(accum: int):
        cfg = small_cfg(steps=3, checkpoint_every=0, grad_accum=accum, cpu_amp=False)  # fp32: the tolerances
        torch.manual_seed(0)
        model = ScaleAR(cfg, TokenSpec.from_tokenizer(tok))
        return train_generator(model, cache, cfg, tmp_path / f"a{accum}", torch.device("cpu"), seed=3).model

    full, accumulated = run(1), run(2)
    for (name, a), b in zip(full.named_parameters(), accumulated.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_a_generator_that_memorised_its_images_samples_them_back(tmp_path):
    """Training (teacher-forced inputs from the cache) and sampling (inputs rebuilt from the sampled codes, KV
    cache) must see the same sequence: a model that has learned four images by heart, decoded greedily with their
    prompts, gives back exactly their codes, and the prompt decides which image comes out."""
    tok = FakeMultiScaleTokenizer("discrete", (1, 2, 4), 16, 4)
    items = fake_items(4)
    cache = encode_dataset(tok, items, 4, "cpu", collate)
    cfg = small_cfg(steps=150, lr=0.2, batch_size=4, checkpoint_every=0, cond_drop_p=0.0, warmup_steps=5)
    cfg.width, cfg.heads = 64, 4
    torch.manual_seed(0)
    model = train_generator(ScaleAR(cfg, TokenSpec.from_tokenizer(tok)), cache, cfg, tmp_path / "g",
                            torch.device("cpu")).model
    prompts = [it["prompt"] for it in items]
    out = generate_tokens(model, tok, prompts, top_k=1)
    torch.testing.assert_close(out.tokens.flat_indices(), cache["tensors"]["idx"], rtol=0, atol=0)
    swapped = generate_tokens(model, tok, prompts[1:] + prompts[:1], top_k=1)
    torch.testing.assert_close(swapped.tokens.flat_indices(), cache["tensors"]["idx"].roll(-1, 0), rtol=0, atol=0)


def test_input_noise_perturbs_the_teacher_forced_inputs_and_keeps_the_targets(tmp_path, monkeypatch):
    """ar.train.input_noise adds noise of the set size (relative to the inputs' std) to what the model reads, on
    the same batch with the same targets; unset, the inputs are the cache's."""
    tok = FakeMultiScaleTokenizer("discrete", (1, 2, 4), 16, 4)
    cache = encode_dataset(tok, fake_items(16), 8, "cpu", collate)
    seen = {}
    for noise in (None, 0.5):
        cfg = small_cfg(steps=1, checkpoint_every=0, input_noise=noise)
        model = ScaleAR(cfg, TokenSpec.from_tokenizer(tok))

        def spy(batch, *args, _loss=model.loss, _noise=noise, **kwargs):
            seen[_noise] = (batch.x_in.clone(), batch.idx.clone())
            return _loss(batch, *args, **kwargs)

        monkeypatch.setattr(model, "loss", spy)
        train_generator(model, cache, cfg, tmp_path / str(noise), torch.device("cpu"))
    (clean, targets), (noisy, noisy_targets) = seen[None], seen[0.5]
    assert torch.equal(targets, noisy_targets)
    assert any(torch.equal(clean[i], cache["tensors"]["x_in"][j]) for i in range(len(clean)) for j in range(16))
    # the noise's std over the batch's 8 x 20 x 4 = 640 values estimates 0.5 x std(inputs) with a relative
    # standard error of 1/sqrt(2 * 640) = 0.028, i.e. 0.014 on the ratio: 0.1 is seven standard errors
    ratio = float((noisy - clean).std() / clean.std())
    assert abs(ratio - 0.5) < 0.1, ratio
