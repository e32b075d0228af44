"""The training-throughput benchmark runs end to end on a tiny config and writes its table."""

from __future__ import annotations

import torch

from hartkit.tools.bench_train import main


def test_bench_train_writes_ratios_against_its_own_baseline(tmp_path):
    out = tmp_path / "bench.md"
    main(["data.resolution=32", "data.train_size=16", "tokenizer.train.batch_size=4", "ar.train.batch_size=4",
          "tokenizer.quantizer.patch_nums=[1,2,4]", "ar.depth=1", "ar.width=32", "ar.heads=2",
          "ar.text_encoder.width=16", "ar.text_encoder.depth=1", "ar.diffusion.width=16", "ar.diffusion.depth=1",
          "--steps", "1", "--warmup", "0", "--variants", "eager fp32 (baseline),fused AdamW", "--out", str(out)])
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| tokenizer", "| generator"))]
    assert len(rows) == 4, text
    assert all("| x1.00 |" in r for r in rows if "baseline" in r)
    assert "matmul peak" in text and "| PIL decode per step |" in text and "| preloaded tensor |" in text


def test_bench_train_times_the_real_loop_at_one_and_default_threads(tmp_path):
    out = tmp_path / "bench.md"
    main(["data.resolution=32", "data.train_size=16", "tokenizer.train.batch_size=4", "ar.train.batch_size=4",
          "tokenizer.quantizer.patch_nums=[1,2,4]", "ar.depth=1", "ar.width=32", "ar.heads=2",
          "ar.text_encoder.width=16", "ar.text_encoder.depth=1", "ar.diffusion.width=16", "ar.diffusion.depth=1",
          "--steps", "1", "--warmup", "0", "--variants", "eager fp32 (baseline)", "--trainer-steps", "2",
          "--out", str(out)])
    text = out.read_text()
    loop = [line.split("|")[1:5] for line in text.split("The real training loop")[1].splitlines()
            if line.startswith(("| tokenizer", "| generator"))]
    assert [row[0].strip() for row in loop] == ["tokenizer"] * 4 + ["generator"] * 4, text
    assert [row[1].strip() for row in loop][:2] == ["1", str(torch.get_num_threads())]
    assert all(float(row[2]) > 0 for row in loop)
