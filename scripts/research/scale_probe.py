"""Research probe: how much of a scene the first k scales of a tokenizer's real codes carry, decoded alone.

For a discrete or hybrid tokenizer artifact, held-out synthscenes images are encoded, and for every k = 0..K the
latent built from the first k scales only (the later scales left out, no residual) is decoded. Reported per k:
PSNR against the image, the prompt metrics the embedded evaluator reads (main colour, position, shape, class
accuracy), and the RMS of scale k's own contribution to the latent. Two more rows per k < K answer whether a
*wrong* later code harms more than a missing one: the first k real scales with every later scale filled with
codes drawn from that scale's code frequencies ("unigram fill").

It tells apart two reasons why a generator that gets the coarse scales right can still lose the objects:
the coarse scales do not carry them (decoded alone they score low), or wrong fine codes overwrite them
(decoded alone they score high, filled with wrong codes low).

    python scripts/research/scale_probe.py artifacts/tokenizer/discrete-<hash> --label default --n 300
"""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf
from probe_log import ROOT, append_record  # scripts/research/probe_log.py
from torchmetrics.functional.image import peak_signal_noise_ratio

from hartkit import load_tokenizer
from hartkit.data import ImageTensorDataset, build_dataset, collate
from hartkit.eval.embedded.model import get_embedded_evaluator
from hartkit.eval.embedded.prompt_accuracy import PromptAccuracy

LOG = ROOT / "results" / "research" / "scale_probe.jsonl"
KEYS = ("prompt_accuracy/main_color", "prompt_accuracy/main_position", "prompt_accuracy/main_shape",
        "class_accuracy")


@torch.no_grad()
def prefix_latents(tok, idx_per_scale: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    """The latents of the first 0, 1, ..., K given scales, built as a generator builds them (``add_scale``)."""
    latents = [tok.empty_f_hat(batch)]  # no code at all: the all-zero latent
    for k, idx in enumerate(idx_per_scale):
        latents.append(tok.add_scale(latents[-1], k, idx))
    return latents


def latent_from_scales(tok, idx_per_scale: list[torch.Tensor], batch: int) -> torch.Tensor:
    """The latent of the given first scales (none: all zero)."""
    return prefix_latents(tok, idx_per_scale, batch)[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokenizer", help="a discrete or hybrid tokenizer artifact folder")
    ap.add_argument("--label", required=True)
    ap.add_argument("--n", type=int, default=300, help="test images")
    ap.add_argument("--data", default=str(ROOT / "conf" / "data" / "synthscenes.yaml"),
                    help="the data config (a YAML file), plus key=value overrides")
    ap.add_argument("overrides", nargs="*", help="data overrides, e.g. 'backgrounds=[gradient]'")
    ap.add_argument("--no-log", action="store_true")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    tok = load_tokenizer(args.tokenizer).model.eval()
    if tok.kind == "continuous":
        raise SystemExit("the probe reads codes: a discrete or hybrid tokenizer is needed")
    data_cfg = OmegaConf.merge(OmegaConf.load(args.data), OmegaConf.from_dotlist(args.overrides))
    ds = ImageTensorDataset(build_dataset(data_cfg, "test"))
    n = min(args.n, len(ds))
    batch = collate([ds[j] for j in range(n)])
    images, prompts = batch["image"], list(batch["prompt"])
    indices = tok.encode(images).indices
    K = len(indices)
    freqs = [torch.bincount(idx.flatten(), minlength=tok.quantize.vocab_size).float() for idx in indices]
    gen = torch.Generator().manual_seed(0)
    evaluator = get_embedded_evaluator(None, "cpu")

    def score(latent: torch.Tensor) -> dict:
        recon01 = (tok.decode_latent(latent) + 1) / 2
        acc = PromptAccuracy(evaluator)
        acc.update(recon01, prompts)
        m = acc.compute()
        psnr = peak_signal_noise_ratio(recon01, (images + 1) / 2, data_range=1.0, reduction="none", dim=(1, 2, 3))
        return {"psnr": round(float(psnr.mean()), 3), **{k: round(m[k], 4) for k in KEYS}}

    prefixes = prefix_latents(tok, indices, n)
    rec = {"label": args.label, "tokenizer": str(args.tokenizer), "data_overrides": args.overrides, "n": n,
           "patch_nums": list(tok.patch_nums), "prefix": {}, "unigram_fill": {},
           "scale_rms": [round(float((b - a).pow(2).mean().sqrt()), 4) for a, b in zip(prefixes, prefixes[1:])]}
    print(f"per-scale RMS of its contribution to the latent: {rec['scale_rms']}")
    for k in range(K + 1):
        rec["prefix"][k] = score(prefixes[k])
        line = f"real scales {k}: " + ", ".join(f"{a} {v}" for a, v in rec["prefix"][k].items())
        if k < K:
            fill = [torch.multinomial(freqs[j], idx.numel(), replacement=True, generator=gen).view_as(idx)
                    for j, idx in enumerate(indices) if j >= k]
            rec["unigram_fill"][k] = score(latent_from_scales(tok, list(indices[:k]) + fill, n))
            line += " | unigram fill: " + ", ".join(f"{a} {v}" for a, v in rec["unigram_fill"][k].items())
        print(line)
    if not args.no_log:
        append_record(LOG, rec)


if __name__ == "__main__":
    main()
