"""Benchmark of the embedded evaluator itself, on real synthscenes renders (takes a minute or two on a CPU).

    python -m hartkit.tools.embedded_quality                 # shipped weights, test split, print the numbers
    python -m hartkit.tools.embedded_quality --write         # ... and record them in quality.json ("test")
    python -m hartkit.tools.embedded_quality --weights W.safetensors --split val

What it measures (README.md in this folder says why each target):

- prompt accuracy of real scenes with their own captions (``PromptAccuracy``:
  main-object and all-object shape / colour / size / position, joint, count);
- image -> text and text -> image retrieval top-1 among all N captions;
- Fréchet distance of the evaluator's image features (``fd_embedded``'s
  features: unnormalised 64-d embeddings of uint8 images) between two disjoint
  real sets of ``fd_n`` images (the noise floor), and between the first set and
  the same images each replaced by its own mean colour (the floor baseline);
  their ratio is the noise floor as a fraction of that baseline;
- for reference, prompt accuracy of floors: captions shuffled between images,
  mean-colour images, and 8 / 16 px thumbnails (area down, bicubic up).

Splits: ``test`` is synthscenes' test split, scenes 0..N-1 (never used to
choose the design); ``val`` is the train split from ``VAL_OFFSET`` on (used to
choose it; never trained on).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hartkit.eval.embedded.model import EmbeddedEvaluator
from hartkit.eval.embedded.prompt_accuracy import PromptAccuracy
from hartkit.eval.frechet import FrechetStats, compute_fd


def mean_color_images(images_u8: torch.Tensor) -> torch.Tensor:
    """Each image replaced by its own per-channel mean colour (rounded to uint8)."""
    mean = images_u8.float().mean((2, 3), keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return mean.expand_as(images_u8).contiguous()


@torch.no_grad()
def _features(evaluator: EmbeddedEvaluator, images_u8: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([evaluator.image_features(images_u8[s : s + batch_size].float() / 255).double()
                      for s in range(0, len(images_u8), batch_size)])


@torch.no_grad()
def measure_quality(evaluator: EmbeddedEvaluator, images_u8: torch.Tensor, prompts: list[str], fd_n: int = 500,
                    batch_size: int = 250) -> dict:
    """Prompt accuracy, retrieval and the FD noise floor of ``evaluator`` on real images with their captions."""
    img_f, txt_f = [], []
    acc = PromptAccuracy(evaluator)
    for s in range(0, len(prompts), batch_size):
        x = images_u8[s : s + batch_size].float() / 255
        img_f.append(evaluator.image_features(x, normalize=True))
        txt_f.append(evaluator.text_features(prompts[s : s + batch_size], normalize=True))
        acc.update(x, prompts[s : s + batch_size])
    sim = torch.cat(img_f) @ torch.cat(txt_f).T
    target = torch.arange(sim.shape[0])
    out = {
        "images": len(prompts),
        "retrieval_top1_image_to_text": float((sim.argmax(1) == target).float().mean()),
        "retrieval_top1_text_to_image": float((sim.argmax(0) == target).float().mean()),
        "retrieval_candidates": int(sim.shape[0]),
        "prompt_accuracy": acc.compute(),
    }
    if fd_n and 2 * fd_n <= len(images_u8):
        a, b = images_u8[:fd_n], images_u8[fd_n : 2 * fd_n]
        fa = FrechetStats.from_features(_features(evaluator, a, batch_size))
        fb = FrechetStats.from_features(_features(evaluator, b, batch_size))
        fm = FrechetStats.from_features(_features(evaluator, mean_color_images(a), batch_size))
        real_real, real_mean = compute_fd(fa, fb), compute_fd(fa, fm)
        total_var = float(np.trace(fa.mean_cov()[1]))
        out["fd"] = {
            "n": fd_n,
            "real_vs_real": real_real,
            "real_vs_mean_color": real_mean,
            "noise_floor_fraction": real_real / real_mean,
            "feature_total_variance": total_var,
        }
    return out


def thumbnail_images(images_u8: torch.Tensor, size: int) -> torch.Tensor:
    """Area down to ``size`` px and bicubic back up (the issue's matched-budget reconstruction baseline)."""
    x = images_u8.float() / 255
    small = F.interpolate(x, size=(size, size), mode="area")
    up = F.interpolate(small, size=x.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    return (up * 255).round().to(torch.uint8)


@torch.no_grad()
def baseline_prompt_accuracy(evaluator: EmbeddedEvaluator, images_u8: torch.Tensor, prompts: list[str],
                             batch_size: int = 250) -> dict[str, dict[str, float]]:
    """Prompt accuracy of floors: each image's caption swapped with the next image's, mean-colour images,
    and 8 / 16 px thumbnails (what a generator or tokenizer that only gets coarse structure right would score)."""
    cases = {
        "shuffled_prompts": (images_u8, prompts[1:] + prompts[:1]),
        "mean_color": (mean_color_images(images_u8), prompts),
        "thumbnail_8px": (thumbnail_images(images_u8, 8), prompts),
        "thumbnail_16px": (thumbnail_images(images_u8, 16), prompts),
    }
    out = {}
    for name, (imgs, caps) in cases.items():
        acc = PromptAccuracy(evaluator)
        for s in range(0, len(caps), batch_size):
            acc.update(imgs[s : s + batch_size].float() / 255, caps[s : s + batch_size])
        out[name] = acc.compute()
    return out


def load_split(split: str, size: int, resolution: int, seed: int, cache_dir: str | None = None):
    # inside: hartkit.eval.train_embedded imports this module (a cycle at the top)
    from hartkit.eval.train_embedded import VAL_OFFSET, render_scenes

    if split == "test":
        return render_scenes("test", 0, size, resolution, seed, cache_dir)
    if split == "val":
        return render_scenes("train", VAL_OFFSET, size, resolution, seed, cache_dir)
    raise ValueError(f"unknown split {split!r}; use test or val")
