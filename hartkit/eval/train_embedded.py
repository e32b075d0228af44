"""Train the embedded evaluator (the tiny CLIP shipped in hartkit/eval/embedded/).

    python -m hartkit.eval.train_embedded            # the shipped weights (defaults below)
    python -m hartkit.eval.train_embedded --steps 50 --out /tmp/emb   # a quick smoke run

Contrastive (symmetric InfoNCE, ``open_clip.ClipLoss``) training of
``hartkit-embedded-clip`` on synthscenes train-split captions at 64 px plus
captioned crops of the bundled photographs, with caption hard negatives and an
auxiliary per-grid-cell layout read-out (``LayoutHeads``, training only),
deterministic from ``--seed``
(data order and initialisation; fixed thread count). At the end it measures the
saved (fp16) weights on the held-out synthscenes test split: image-text
retrieval top-1 and zero-shot attribute accuracy of the main object, and writes
``weights.safetensors``, ``weights.sha256`` and ``quality.json`` (numbers +
command) to ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hartkit.data.synthscenes import COLORS, POSITIONS, SHAPES, SIZES, parse_caption
from hartkit.eval.embedded.model import (
    CONFIG_PATH,
    PACKAGE_DIR,
    EmbeddedEvaluator,
    build_model,
    get_tokenizer,
    load_weights,
)
from hartkit.eval.embedded.prompt_accuracy import PromptAccuracy, counterfactuals
from hartkit.utils.hashing import file_sha256
from hartkit.utils.io import atomic_save_safetensors, atomic_write_json, atomic_write_text

log = logging.getLogger("hartkit.eval.train_embedded")


def load_split(name: str, split: str, size: int, resolution: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Images (uint8 N x 3 x H x W) and prompts of one split of an embedded dataset."""
    from omegaconf import OmegaConf

    from hartkit.data import build_dataset
    from hartkit.data.config import DataConfig

    cfg = OmegaConf.structured(DataConfig(name=name, resolution=resolution, seed=seed,
                                          train_size=size if split == "train" else 10,
                                          test_size=size if split == "test" else 10))
    ds = build_dataset(cfg, split)
    images = np.empty((len(ds), resolution, resolution, 3), dtype=np.uint8)
    prompts = []
    for i, row in enumerate(tqdm(ds, desc=f"load {name}/{split}", leave=False)):
        images[i] = np.asarray(row["image"].convert("RGB"))
        prompts.append(row["prompt"])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), prompts


def cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def measure_quality(evaluator: EmbeddedEvaluator, images_u8: torch.Tensor, prompts: list[str],
                    batch_size: int = 250) -> dict[str, float]:
    """Held-out retrieval top-1 (both directions) and main-object attribute accuracy."""
    img_f, txt_f = [], []
    acc = PromptAccuracy(evaluator)
    for s in range(0, len(prompts), batch_size):
        x = images_u8[s : s + batch_size].float() / 255
        img_f.append(evaluator.image_features(x, normalize=True))
        txt_f.append(evaluator.text_features(prompts[s : s + batch_size], normalize=True))
        acc.update(x, prompts[s : s + batch_size])
    sim = torch.cat(img_f) @ torch.cat(txt_f).T
    target = torch.arange(sim.shape[0])
    result = {
        "retrieval_top1_image_to_text": float((sim.argmax(1) == target).float().mean()),
        "retrieval_top1_text_to_image": float((sim.argmax(0) == target).float().mean()),
        "retrieval_candidates": int(sim.shape[0]),
    }
    result.update({f"real_{k.replace('/', '_')}": v for k, v in acc.compute().items()})
    return result


def hard_negative_texts(idx: list[int], prompts: list[str], variants: list, rng: np.random.Generator) -> list[str]:
    """Two negatives per sample: its caption with another main-object shape, and with another colour.

    Captions outside the synthscenes grammar (photos) get two random captions instead.
    """
    out = []
    for i in idx:
        if variants[i] is None:
            out += [prompts[int(j)] for j in rng.integers(0, len(prompts), 2)]
            continue
        for group in variants[i]:
            others = [t for t in group if t != prompts[i]]
            out.append(others[int(rng.integers(len(others)))])
    return out


def contrastive_loss_with_negatives(img_BD: torch.Tensor, txt_ND: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; texts [B positives; extra negatives] (image -> text sees the negatives too)."""
    B = img_BD.shape[0]
    target = torch.arange(B)
    i2t = scale * img_BD @ txt_ND.T  # (B, N)
    t2i = scale * txt_ND[:B] @ img_BD.T  # (B, B)
    return (F.cross_entropy(i2t, target) + F.cross_entropy(t2i, target)) / 2


class LayoutHeads(torch.nn.Module):
    """Auxiliary linear read-outs of the scene layout from an embedding (training only, never shipped).

    For each of the 9 grid cells: which shape (or none), which colour (or none) and which size (or none) sits
    there. The same heads read image and text embeddings, so both towers must put every object's attributes
    into the shared space, in the same directions; contrastive matching alone learns shape only slowly because
    colours and backgrounds already separate most captions.
    """

    groups = (("shape", SHAPES), ("color", tuple(COLORS)), ("size", tuple(SIZES)))

    def __init__(self, embed_dim: int):
        super().__init__()
        self.sizes = [len(values) + 1 for _, values in self.groups]  # + "empty cell"
        self.proj = torch.nn.Linear(embed_dim, len(POSITIONS) * sum(self.sizes))

    def forward(self, f_BD: torch.Tensor, labels_BPG: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, shape accuracy on occupied cells); ``labels_BPG``: class per cell and group, 0 = empty.

        Shape and colour are scored on occupied cells only (most cells are empty, and "empty" would drown the
        shape signal); size keeps the empty class, so it also teaches where objects are.
        """
        logits = self.proj(f_BD).view(f_BD.shape[0], len(POSITIONS), -1)
        occupied = labels_BPG[..., 2] > 0
        losses, shape_acc = [], torch.tensor(0.0)
        for g, (part, n) in enumerate(zip(logits.split(self.sizes, dim=-1), self.sizes)):
            target = labels_BPG[..., g]
            if g < 2:
                part, target = part[occupied], target[occupied]
            losses.append(F.cross_entropy(part.reshape(-1, n), target.reshape(-1)))
            if g == 0:
                shape_acc = (part.argmax(-1) == target).float().mean().detach()
        return sum(losses) / len(losses), shape_acc


def layout_labels(prompt: str) -> torch.Tensor | None:
    """(9 cells, 3 groups) class indices (0 = empty) from a synthscenes caption; None outside the grammar."""
    objects = parse_caption(prompt)["objects"]
    if not objects:
        return None
    out = torch.zeros(len(POSITIONS), len(LayoutHeads.groups), dtype=torch.long)
    for obj in objects:
        for g, (key, values) in enumerate(LayoutHeads.groups):
            out[POSITIONS.index(obj["position"]), g] = list(values).index(obj[key]) + 1
    return out


def train(args: argparse.Namespace) -> dict:
    import open_clip

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    images, prompts = load_split("synthscenes", "train", args.train_size, args.resolution, args.seed)
    if args.photos:
        p_images, p_prompts = load_split("photos", "train", args.photos, args.resolution, args.seed)
        images, prompts = torch.cat([images, p_images]), prompts + p_prompts
    test_images, test_prompts = load_split("synthscenes", "test", args.test_size, args.resolution, args.seed)
    log.info("training on %d image-caption pairs, %d held out", len(prompts), len(test_prompts))

    tokenizer = get_tokenizer()
    tokens = torch.cat([tokenizer(prompts[s : s + 4096]) for s in range(0, len(prompts), 4096)])

    model = build_model(args.model_config)
    model.train()
    # layout supervision: labels per sample, and a mask for the photos (no layout)
    labels = [layout_labels(p) for p in prompts]
    has_layout = torch.tensor([lab is not None for lab in labels])
    empty = torch.zeros(len(POSITIONS), len(LayoutHeads.groups), dtype=torch.long)
    labels = torch.stack([lab if lab is not None else empty for lab in labels])
    heads = LayoutHeads(model.text_projection.shape[1])
    named = [*model.named_parameters(), *(("heads." + n, p) for n, p in heads.named_parameters())]
    decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    # hard negatives: the caption with only the main object's shape (or colour) changed, so that the model must
    # bind shape and colour to the image instead of matching captions by background and position alone
    variants = [counterfactuals(p) for p in prompts] if args.hard_negatives else []
    rng = np.random.default_rng(args.seed)
    # exactly the evaluator's preprocessing (resize to the model's input size, CLIP mean/std)
    preprocess = EmbeddedEvaluator(model=model).preprocess
    model.train()

    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(prompts), generator=gen)
    cursor = 0
    shape_acc = torch.tensor(float("nan"))  # the layout read-out's shape accuracy (images + texts), for the bar
    t0 = time.perf_counter()
    bar = tqdm(range(args.steps), desc="train embedded-clip")
    for step in bar:
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(prompts), generator=gen), 0
        idx = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        x = preprocess(images[idx].float() / 255)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.warmup, args.lr)
        img_f = model.encode_image(x, normalize=True)
        if args.hard_negatives:
            negatives = hard_negative_texts(idx.tolist(), prompts, variants, rng)
            txt_all = model.encode_text(torch.cat([tokens[idx], tokenizer(negatives)]), normalize=True)
            loss = contrastive_loss_with_negatives(img_f, txt_all, model.logit_scale.exp())
        else:
            txt_all = model.encode_text(tokens[idx], normalize=True)
            loss = loss_fn(img_f, txt_all, model.logit_scale.exp())
        keep = has_layout[idx]
        if args.layout_weight > 0 and keep.any():
            lab = labels[idx][keep]
            f_BD = torch.cat([img_f[keep], txt_all[: len(idx)][keep]])
            layout_loss, shape_acc = heads(f_BD * args.layout_scale, torch.cat([lab, lab]))
            loss = loss + args.layout_weight * layout_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{model.logit_scale.exp().item():.1f}",
                            shape=f"{shape_acc.item():.2f}")
    train_seconds = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / "weights.safetensors"
    # fp16 floats; integer buffers (BatchNorm's num_batches_tracked) keep their dtype
    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
             for k, v in model.state_dict().items()}
    atomic_save_safetensors(weights_path, state, metadata={"model": "hartkit-embedded-clip", "seed": str(args.seed)})
    digest = file_sha256(weights_path)
    atomic_write_text(out / "weights.sha256", f"{digest}  weights.safetensors\n")

    # quality of exactly what ships: the fp16 file, reloaded
    shipped = load_weights(build_model(args.model_config), weights_path)
    quality = measure_quality(EmbeddedEvaluator(model=shipped), test_images, test_prompts)
    report = {
        "command": " ".join(["python -m hartkit.eval.train_embedded", *sys.argv[1:]]),
        "sha256": digest,
        "size_bytes": weights_path.stat().st_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_seconds, 1),
        "threads": args.threads,
        "held_out": f"synthscenes test split, {len(test_prompts)} images at {args.resolution} px, seed {args.seed}",
        "quality": quality,
        "args": vars(args),
    }
    atomic_write_json(out / "quality.json", report)
    log.info("wrote %s (sha256 %s, %.1f MB); quality %s", weights_path, digest[:16],
             report["size_bytes"] / 1e6, quality)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--train-size", type=int, default=20000, help="synthscenes train images")
    p.add_argument("--photos", type=int, default=2000, help="captioned photo crops added to training (0: none)")
    p.add_argument("--test-size", type=int, default=1000, help="held-out synthscenes test images")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--hard-negatives", action=argparse.BooleanOptionalAction, default=True,
                   help="add shape- and colour-swapped captions as negatives (default: on)")
    p.add_argument("--layout-weight", type=float, default=2.0,
                   help="weight of the auxiliary per-cell shape/colour/size read-out loss (0: contrastive only)")
    p.add_argument("--layout-scale", type=float, default=8.0,
                   help="the read-out sees the unit-norm embedding times this")
    p.add_argument("--model-config", default=str(CONFIG_PATH),
                   help="open_clip model json (default: the shipped one; others only to try architectures)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(PACKAGE_DIR), help="folder for weights.safetensors/.sha256 + quality.json")
    return p


def main(argv: list[str] | None = None) -> None:
    from hartkit.utils.logging import setup_logging

    setup_logging()
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
