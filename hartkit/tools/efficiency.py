"""The paper-scale efficiency table: ``python -m hartkit.tools.efficiency`` writes ``results/efficiency.md``.

Parameters, MACs per image and steps of the VAR d16..d30 (256 px) and
HART-0.7B (512 / 1024 px) generator presets, counted on the meta device by
``hartkit.ar_models.efficiency``, plus the tokenizer decoder the pipeline runs
after sampling (VAR's 109 M decoder; HART uses the same architecture) and an
estimate of the text encoder. It lives here, not in ``ar_models``, because it
builds a concrete tokenizer: generators only know the tokenizer protocol.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hartkit.ar_models.efficiency import count_macs, format_table, preset_rows
from hartkit.configs import compose
from hartkit.tokenizers import build_tokenizer
from hartkit.utils.io import atomic_write_text


def var_decoder_macs() -> dict[int, int]:
    """MACs of VAR's tokenizer decoder (post_quant_conv + decoder) per latent side, counted on the meta device."""
    cfg = compose(["tokenizer=var_256", "data.resolution=256"])  # the checkout's conf/ or the installed copy
    with torch.device("meta"):
        tok = build_tokenizer(cfg.tokenizer)
    return {s: count_macs(lambda s=s: tok.decode_latent(torch.zeros(1, 32, s, s, device="meta"))) for s in (16, 32, 64)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/efficiency.md")
    args = parser.parse_args(argv)
    rows = preset_rows(var_decoder_macs())
    text = "\n".join([
        "# Efficiency of the paper-scale generator presets (computed on the meta device)",
        "",
        "Command: `python -m hartkit.tools.efficiency`. MACs = FLOPs / 2 from "
        "`torch.utils.flop_counter.FlopCounterMode` over the calls sampling makes (KV-cached scale steps, "
        "logits head, every diffusion step); element-wise ops are not counted. CFG doubles the transformer's "
        "batch on every scale. Tokenizer decoder: VAR's 109 M decoder (hartkit `tokenizer=var_256`, counted "
        "the same way; HART uses the same architecture). Text encoder: Qwen2-1.5B estimated as 1.31 B "
        "non-embedding parameters x 300 tokens (one forward; not counted). "
        "VAR: class-conditional, VAR tokenizer (V 4096, Cvae 32). HART-0.7B: 300 text prefix tokens, "
        "8 diffusion steps on the final scale; 1024 px scales are an unverified schedule (docs/reference.md).",
        "",
        format_table(rows),
        "",
    ])
    path = atomic_write_text(Path(args.out), text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
