"""Gradient accumulation: same global batch, same update as one big batch."""

from __future__ import annotations

import torch

from hartkit.tokenizers import build_tokenizer
from hartkit.tokenizers.trainer import train_tokenizer
from tests.conftest import compose


def _train(tmp_path, accum: int):
    cfg = compose(["tokenizer=discrete", "tokenizer.train.steps=3", "tokenizer.train.batch_size=8",
                   f"tokenizer.train.grad_accum={accum}", "tokenizer.quantizer.dead_code_reinit=false",
                   "tokenizer.train.warmup_steps=0",
                   # fp32: under bf16 autocast the two halves round differently from the whole batch (not a
                   # property of accumulation); the tolerances below are for fp32 sums
                   "tokenizer.train.cpu_amp=false"]).tokenizer
    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    data = [{"image": torch.rand(3, 64, 64) * 2 - 1} for _ in range(16)]
    collate = lambda items: {"image": torch.stack([it["image"] for it in items])}
    result = train_tokenizer(model, data, cfg, tmp_path / f"a{accum}", torch.device("cpu"), collate_fn=collate)
    return result.model, result.summary


def test_tokenizer_grad_accum_matches_the_full_batch(tmp_path):
    full, s1 = _train(tmp_path, 1)
    accumulated, s2 = _train(tmp_path, 2)
    assert abs(s1["final_loss"] - s2["final_loss"]) < 1e-4
    # parameters only: the codebook-usage EMA buffer is updated once per forward (per micro-batch)
    for (name, a), b in zip(full.named_parameters(), accumulated.parameters()):
        assert torch.allclose(a, b, atol=1e-4), name
