"""hartkit as a library: tokenize and reconstruct an image, then sample images from a trained generator.

    python examples/tokenize_and_sample.py --out example/            # trains the smoke models first (seconds)
    python examples/tokenize_and_sample.py --generator artifacts/generator/hybrid-tiny-<hash> --image photo.jpg

Writes <out>/reconstruction.png (the image | its reconstruction) and <out>/samples.png (one image per prompt).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from hartkit import load_generator, load_tokenizer

PROMPTS = ["a large red star at the center, on a brick wall", "a small blue circle at the top left, on a "
           "black and orange noise pattern", "a medium yellow heart at the bottom right, in front of a cat"]


def train_smoke_models(out: Path) -> Path:
    """A tokenizer and a generator trained by the pipeline with experiment=smoke; returns the generator's folder."""
    from hartkit import compose, run_pipeline

    cfg = compose(["experiment=smoke", "stages=[tokenizer,generator]", f"paths.artifacts={out / 'artifacts'}",
                   f"paths.results={out / 'results'}"])
    return run_pipeline(cfg).state["generator_dir"]


def read_image(path: str | None, size: int) -> torch.Tensor:
    """(1, 3, size, size) uint8: the file centre-cropped and resized, or a synthscenes test scene."""
    if path is None:
        from hartkit.data import render_scene

        img, caption, _ = render_scene(0, "test", 0, size)
        print(f"image: synthscenes test scene 0 ({caption})")
    else:
        img = ImageOps.fit(Image.open(path).convert("RGB"), (size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None]


def save_row(images: torch.Tensor, path: Path) -> None:
    """uint8 (B, 3, H, W) side by side as one PNG."""
    row = torch.cat(list(images), dim=2).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", help="a generator artifact or save_pretrained folder (default: train one)")
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: the generator's tokenizer)")
    parser.add_argument("--image", help="an image file to reconstruct (default: a synthscenes scene)")
    parser.add_argument("--out", default="example", help="output folder")
    args = parser.parse_args(argv)
    out = Path(args.out)

    generator = load_generator(args.generator or train_smoke_models(out))
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else generator.tokenizer

    image = read_image(args.image, tokenizer.image_size)
    tokens = tokenizer.encode(image, value_range=(0, 255))  # uint8 in, converted to [-1, 1] explicitly
    recon = tokenizer.decode(tokens, value_range=(0, 255))
    mse = (image.float() - recon.float()).pow(2).mean().item()
    psnr = 10 * np.log10(255**2 / max(mse, 1e-10))
    print(f"{tokenizer.kind} tokenizer: {tokenizer.num_tokens} tokens per image, reconstruction PSNR {psnr:.2f} dB")
    save_row(torch.cat([image, recon]), out / "reconstruction.png")

    samples = generator.sample(PROMPTS, seed=0, value_range=(0, 255))
    save_row(samples, out / "samples.png")
    print(f"wrote {out / 'reconstruction.png'} and {out / 'samples.png'} ({len(PROMPTS)} samples)")


if __name__ == "__main__":
    main()
