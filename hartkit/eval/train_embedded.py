"""Train the embedded evaluator (the model shipped in hartkit/eval/embedded/).

    python -m hartkit.tools.train_embedded            # the shipped weights (defaults: hartkit/tools/train_embedded.py)
    python -m hartkit.tools.train_embedded --steps 50 --out /tmp/emb   # a quick smoke run

Two losses on synthscenes train-split renders at 64 px (plus captioned crops of
the bundled photographs for the image-text part):

- layout: cross-entropy of the cell reader against every grid cell's truth,
  known at render time (shape or "empty" on all cells; colour and size on
  occupied cells);
- contrastive: symmetric InfoNCE between image and caption embeddings, with
  two hard negative captions per scene (one attribute of one object changed:
  shape, colour, size, or position to a free cell), plus an auxiliary linear
  read-out of the per-cell layout from both embeddings (``LayoutHeads``,
  training only), so that the text embedding carries the layout too.

Deterministic for a given ``--seed`` and ``--threads`` (data order,
initialisation, negatives); the global torch / numpy / Python RNG states and thread count
of the calling process are restored afterwards. At the end it scores the saved
(fp16) weights on a validation set (synthscenes *train* split, indices from
``VAL_OFFSET`` on, never trained on) and writes ``weights.safetensors``,
``weights.sha256`` and ``quality.json`` (validation numbers + command) to
``--out``. The held-out test numbers are measured separately, by
``python -m hartkit.tools.embedded_quality`` (see hartkit/eval/embedded/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm import tqdm

from hartkit.data import build_dataset, synthscenes
from hartkit.data.config import DataConfig
from hartkit.data.synthscenes import COLORS, POSITIONS, SHAPES, SIZES, parse_caption
from hartkit.eval.embedded.model import (
    EmbeddedEvaluator,
    build_model,
    get_tokenizer,
    load_config,
    load_weights,
)
from hartkit.eval.embedded.quality import measure_quality
from hartkit.utils.env import torch_threads
from hartkit.utils.hashing import file_sha256
from hartkit.utils.io import atomic_save_safetensors, atomic_write_json, atomic_write_text

log = logging.getLogger("hartkit.eval.train_embedded")

VAL_OFFSET = 1_000_000  # validation scenes: synthscenes train split, indices VAL_OFFSET.. (training uses 0..N-1)
IGNORE = -100  # cross-entropy's ignore_index: colour / size of empty cells, every cell of a photo


# ---------------------------------------------------------------- data


def scene_labels(objects: list[dict]) -> torch.Tensor:
    """(cells, 3) targets: shape (0 = empty, 1.. = SHAPES), colour and size (IGNORE where empty)."""
    out = torch.full((len(POSITIONS), 3), IGNORE, dtype=torch.long)
    out[:, 0] = 0
    for o in objects:
        cell = POSITIONS.index(o["position"])
        out[cell] = torch.tensor([SHAPES.index(o["shape"]) + 1, list(COLORS).index(o["color"]),
                                  list(SIZES).index(o["size"])])
    return out


def _design_hash() -> str:
    """Hash of the synthscenes source: a cached render is reused only while the scene design is unchanged."""
    return hashlib.sha256(Path(synthscenes.__file__).read_bytes()).hexdigest()[:12]


def render_scenes(split: str, start: int, count: int, resolution: int, seed: int,
                  cache_dir: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """uint8 images (N x 3 x H x W) and captions of synthscenes ``split`` scenes start..start+count-1."""
    path = None
    if cache_dir:
        path = Path(cache_dir) / f"synthscenes-{split}-{start}-{count}-{resolution}-{seed}-{_design_hash()}.pt"
        if path.exists():
            blob = torch.load(path)
            return blob["images"], blob["prompts"]
    images = torch.empty((count, 3, resolution, resolution), dtype=torch.uint8)
    prompts = []
    for k in tqdm(range(count), desc=f"render synthscenes/{split}", leave=False, disable=count < 500):
        img, caption, _ = synthscenes.render_scene(seed, split, start + k, resolution)
        images[k] = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
        prompts.append(caption)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": images, "prompts": prompts}, path)
    return images, prompts


def load_photos(size: int, resolution: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Captioned crops of the bundled photographs (train split), uint8 N x 3 x H x W."""
    cfg = OmegaConf.structured(DataConfig(name="photos", resolution=resolution, seed=seed, train_size=size,
                                          test_size=10))
    ds = build_dataset(cfg, "train")
    images = np.empty((len(ds), resolution, resolution, 3), dtype=np.uint8)
    prompts = []
    for i, row in enumerate(ds):
        images[i] = np.asarray(row["image"].convert("RGB"))
        prompts.append(row["prompt"])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), prompts


# ---------------------------------------------------------------- hard negatives


def _caption(objects: list[dict], background: str | None) -> str:
    phrases = [f"a {o['size']} {o['color']} {o['shape']} at the {o['position']}" for o in objects]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"{listed}, {background}" if background else listed


def perturbed_caption(prompt: str, rng: np.random.Generator) -> str | None:
    """The caption with one attribute of one object changed (shape, colour, size, or position to a free cell);
    None outside the synthscenes grammar."""
    parsed = parse_caption(prompt)
    objects = [dict(o) for o in parsed["objects"]]
    if not objects:
        return None
    o = objects[int(rng.integers(len(objects)))]
    attr = ("shape", "color", "size", "position")[int(rng.integers(4))]
    used = {x["position"] for x in objects}
    values = {"shape": SHAPES, "color": tuple(COLORS), "size": tuple(SIZES),
              "position": tuple(p for p in POSITIONS if p not in used)}[attr]
    values = [v for v in values if v != o[attr]]
    if not values:  # nine objects leave no free cell: change the shape instead
        attr, values = "shape", [v for v in SHAPES if v != o["shape"]]
    o[attr] = values[int(rng.integers(len(values)))]
    return _caption(objects, parsed["background"])


def hard_negative_texts(idx: list[int], prompts: list[str], per_sample: int, rng: np.random.Generator) -> list[str]:
    """``per_sample`` perturbed captions per sample; photos (no grammar) get random other captions."""
    out = []
    for i in idx:
        for _ in range(per_sample):
            neg = perturbed_caption(prompts[i], rng)
            out.append(neg if neg is not None else prompts[int(rng.integers(len(prompts)))])
    return out


def contrastive_loss_with_negatives(img_BD: torch.Tensor, txt_ND: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; texts [B positives; extra negatives] (image -> text sees the negatives too)."""
    B = img_BD.shape[0]
    target = torch.arange(B)
    i2t = scale * img_BD @ txt_ND.T  # (B, N)
    t2i = scale * txt_ND[:B] @ img_BD.T  # (B, B)
    return (F.cross_entropy(i2t, target) + F.cross_entropy(t2i, target)) / 2


# ---------------------------------------------------------------- layout losses


def cell_loss(logits_BPK: torch.Tensor, labels_BP3: torch.Tensor, head_sizes: tuple[int, ...],
              shape_weight: float = 1.0) -> torch.Tensor:
    """Weighted mean of the three cross-entropies of the cell reader (shape-or-empty x ``shape_weight``,
    colour, size)."""
    parts = logits_BPK.split(head_sizes, dim=-1)
    total, weights = 0.0, 0.0
    for g, part in enumerate(parts):
        target = labels_BP3[..., g].reshape(-1)
        if (target != IGNORE).any():
            w = shape_weight if g == 0 else 1.0
            total = total + w * F.cross_entropy(part.reshape(-1, part.shape[-1]), target, ignore_index=IGNORE)
            weights += w
    return total / max(weights, 1e-12)


class LayoutHeads(torch.nn.Module):
    """Auxiliary linear read-outs of the scene layout from an embedding (training only, never shipped).

    For each of the 9 grid cells: which shape (or none), which colour (or none) and which size (or none) sits
    there. The same heads read image and text embeddings, so both towers must put every object's attributes
    into the shared space, in the same directions.
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


# ---------------------------------------------------------------- training


def cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@contextlib.contextmanager
def isolated_torch_state(threads: int, seed: int):
    """Seeded RNGs and a fixed thread count inside; the caller's RNG states and thread count restored after,
    so that a training run neither depends on nor changes what ran before it in the same process."""
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        with torch_threads(threads):
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


def augment(x_B3HW_01: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``prob`` per image: area-down to 24..48 px and bicubic back up (blur like a decoder's)."""
    if prob <= 0:
        return x_B3HW_01
    pick = torch.rand(x_B3HW_01.shape[0], generator=gen) < prob
    if not pick.any():
        return x_B3HW_01
    res = x_B3HW_01.shape[-1]
    small = int(torch.randint(24, 49, (1,), generator=gen))
    sub = F.interpolate(x_B3HW_01[pick], size=(small, small), mode="area")
    sub = F.interpolate(sub, size=(res, res), mode="bicubic", align_corners=False).clamp(0, 1)
    out = x_B3HW_01.clone()
    out[pick] = sub
    return out


def save_weights(weights_path: Path, state_dict: dict[str, torch.Tensor], seed: int) -> str:
    """Write fp16 safetensors (+ ``weights.sha256`` beside them); return the sha256.

    Floats go to fp16; integer buffers (BatchNorm's num_batches_tracked) keep their dtype. The metadata is a
    single key on purpose: safetensors writes metadata keys in hash-map order, which differs from one save to
    the next, so two keys made the file's bytes (and its sha256) differ between identical runs about half the
    time.
    """
    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach() for k, v in state_dict.items()}
    atomic_save_safetensors(weights_path, state, metadata={"hartkit": f"hartkit-embedded-clip seed {seed}"})
    digest = file_sha256(weights_path)
    atomic_write_text(Path(weights_path).parent / "weights.sha256", f"{digest}  weights.safetensors\n")
    return digest


def train(args: argparse.Namespace) -> dict:
    with isolated_torch_state(args.threads, args.seed):
        return _train(args)


def _train(args: argparse.Namespace) -> dict:
    images, prompts = render_scenes("train", 0, args.train_size, args.resolution, args.seed, args.cache_dir)
    n_scenes = len(prompts)
    if args.photos:
        p_images, p_prompts = load_photos(args.photos, args.resolution, args.seed)
        images, prompts = torch.cat([images, p_images]), prompts + p_prompts
    val_images, val_prompts = render_scenes("train", VAL_OFFSET, args.val_size, args.resolution, args.seed,
                                            args.cache_dir)
    log.info("training on %d image-caption pairs (%d scenes), validating on %d scenes", len(prompts), n_scenes,
             len(val_prompts))

    tokenizer = get_tokenizer(load_config(args.model_config)["text"]["context_length"])
    tokens = torch.cat([tokenizer(prompts[s : s + 4096]) for s in range(0, len(prompts), 4096)])
    parsed = [parse_caption(p)["objects"] for p in prompts]
    cell_labels = torch.stack([scene_labels(objs) if objs else torch.full((len(POSITIONS), 3), IGNORE)
                               for objs in parsed])
    readout_labels = torch.stack([layout_labels(p) if objs else torch.zeros(len(POSITIONS), 3, dtype=torch.long)
                                  for p, objs in zip(prompts, parsed)])
    has_layout = torch.tensor([bool(objs) for objs in parsed])

    model = build_model(args.model_config)
    model.train()
    heads = LayoutHeads(model.cfg["embed_dim"])
    named = [*model.named_parameters(), *(("heads." + n, p) for n, p in heads.named_parameters())]
    decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    # exactly the evaluator's preprocessing (resize to the model's input size, mean/std)
    preprocess = EmbeddedEvaluator(model=model).preprocess
    model.train()

    order = torch.randperm(len(prompts), generator=gen)
    cursor = 0
    t0 = time.perf_counter()
    bar = tqdm(range(args.steps), desc="train embedded evaluator", mininterval=10)
    for step in bar:
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(prompts), generator=gen), 0
        idx = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        x = preprocess(augment(images[idx].float() / 255, args.blur_prob, gen))
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.warmup, args.lr)
        cell_logits, img_f = model.layout_and_embedding(x, normalize=True)
        loss_cells = cell_loss(cell_logits, cell_labels[idx], model.visual.head_sizes, args.shape_weight)
        negatives = hard_negative_texts(idx.tolist(), prompts, args.negatives, rng) if args.negatives else []
        neg_tokens = [tokenizer(negatives)] if negatives else []
        txt_all = model.encode_text(torch.cat([tokens[idx], *neg_tokens]), normalize=True)
        loss_clip = contrastive_loss_with_negatives(img_f, txt_all, model.logit_scale.exp())
        loss = args.cell_weight * loss_cells + loss_clip
        keep = has_layout[idx]
        if args.layout_weight > 0 and keep.any():
            lab = readout_labels[idx][keep]
            f_BD = torch.cat([img_f[keep], txt_all[: len(idx)][keep]])
            loss = loss + args.layout_weight * heads(f_BD * args.layout_scale, torch.cat([lab, lab]))[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *heads.parameters()], 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0 or step == args.steps - 1:
            log.info("step %d/%d loss %.3f cells %.3f clip %.3f scale %.1f (%.0f s)", step, args.steps, loss.item(),
                     loss_cells.item(), loss_clip.item(), model.logit_scale.exp().item(), time.perf_counter() - t0)
    train_seconds = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / "weights.safetensors"
    digest = save_weights(weights_path, model.state_dict(), args.seed)

    # validation numbers of exactly what ships: the fp16 file, reloaded
    shipped = load_weights(build_model(args.model_config), weights_path)
    val = measure_quality(EmbeddedEvaluator(model=shipped), val_images, val_prompts,
                          fd_n=len(val_prompts) // 2 if len(val_prompts) >= 20 else 0)
    report = {
        "command": " ".join(["python -m hartkit.tools.train_embedded", *sys.argv[1:]]),
        "sha256": digest,
        "size_bytes": weights_path.stat().st_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_seconds, 1),
        "threads": args.threads,
        "validation_set": f"synthscenes train split, scenes {VAL_OFFSET}..{VAL_OFFSET + len(val_prompts) - 1} "
                          f"(never trained on) at {args.resolution} px, seed {args.seed}",
        "validation": val,
        "args": vars(args),
    }
    atomic_write_json(out / "quality.json", report)
    log.info("wrote %s (sha256 %s, %.1f MB); validation %s", weights_path, digest[:16],
             report["size_bytes"] / 1e6, val)
    return report
