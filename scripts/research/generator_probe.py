"""Research probe: what a trained generator has learned, read from its teacher-forced cross-entropy.

For a discrete or hybrid generator artifact it reports, per scale, the mean cross-entropy (nats per token) of the
ground-truth codes

- on training images (the token cache it trained on) and on held-out test images (encoded here),
- with each image's own condition (prompt or class) and with the conditions shuffled across the batch,

next to the unigram floor (the entropy of the code frequencies of the training cache, per scale). The gap
"shuffled - own" is how much the generator uses its condition; "test - train" is how much it memorised. One JSON
line per run is appended to results/research/generator_probe.jsonl.

    python scripts/research/generator_probe.py artifacts/generator/discrete-tiny-<hash> --label default

``--completion N`` also samples N images whose first k scales are a real image's codes (``--fixed`` picks the k;
0: from the condition alone) and scores them with the prompt metrics, overall and per background kind of the
prompt (gradient / noise / photo); ``--completion-split train`` does it for training images, which tells
whether sampling gives back what the generator memorised. ``--object-ce`` splits the last scale's cross-entropy
into the cells an object covers and the rest, per background kind (own and shuffled prompts). ``--cache``: the
token cache the generator trained on, when its data differ from its tokenizer's. Data overrides follow the
generator's folder:

    python scripts/research/generator_probe.py artifacts/generator/<g> max_objects=1 --label ... --n 500 \
        --completion 500 --fixed 0 --skip-ce
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from probe_log import ROOT, append_record  # scripts/research/probe_log.py

from hartkit import load_generator
from hartkit.ar_models.sampling import generate_tokens
from hartkit.ar_models.token_cache import encode_dataset, load_cache, to_token_batch
from hartkit.data import ImageTensorDataset, build_dataset, collate
from hartkit.data.builder import as_data_config, render_synthscene
from hartkit.data.synthscenes import parse_caption
from hartkit.eval.embedded.model import get_embedded_evaluator
from hartkit.eval.embedded.prompt_accuracy import PromptAccuracy

LOG = ROOT / "results" / "research" / "generator_probe.jsonl"


@torch.no_grad()
def per_token_ce(model, tensors: dict, conds, batch_size: int = 100) -> torch.Tensor:
    """(n, L) cross-entropy of every ground-truth code, teacher-forced."""
    n, out = tensors["idx"].shape[0], []
    for i in range(0, n, batch_size):
        sl = slice(i, min(n, i + batch_size))
        tb = to_token_batch({k: v[sl] for k, v in tensors.items()}, conds[sl], "cpu")
        logits = model.head(model(model.condition(tb.cond), tb.x_in)).float()
        out.append(F.cross_entropy(logits.transpose(1, 2), tb.idx, reduction="none"))
    return torch.cat(out)


def per_scale_ce(ce: torch.Tensor, spec) -> torch.Tensor:
    """(K,) mean cross-entropy per scale, from ``per_token_ce``."""
    return torch.stack([ce[:, spec.scale_slice(k)].mean() for k in range(spec.num_scales)])


def object_masks(data_cfg, split: str, n: int, side: int) -> tuple[torch.Tensor, list[str]]:
    """(n, side * side) bool: the last-scale cells an object's box (centre +- radius) touches, per image of the
    split, from the scenes' own layouts; and each image's background kind."""
    cfg = as_data_config(data_cfg)
    masks, kinds = torch.zeros(n, side * side, dtype=torch.bool), []
    for i in range(n):
        _, _, layout = render_synthscene(cfg, split, i)
        cell = layout.resolution / side
        grid = masks[i].view(side, side)
        for obj in layout.objects:
            (cx, cy), r = obj.center, obj.radius
            x0, x1 = int((cx - r) // cell), int(min((cx + r) // cell, side - 1))
            y0, y1 = int((cy - r) // cell), int(min((cy + r) // cell, side - 1))
            grid[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = True
        kinds.append(layout.background_kind)
    return masks, kinds


def last_scale_ce_split(ce: torch.Tensor, spec, masks: torch.Tensor, kinds: list[str]) -> dict[str, float]:
    """Mean cross-entropy (from ``per_token_ce``) of the last scale's codes on the cells an object covers and on
    the others, overall and per background kind."""
    last = ce[:, spec.scale_slice(spec.num_scales - 1)]
    n, kinds_arr = last.shape[0], np.array(kinds[: last.shape[0]])
    out = {}
    for kind in ["all", *sorted(set(kinds_arr))]:
        rows = torch.ones(n, dtype=torch.bool) if kind == "all" else torch.from_numpy(kinds_arr == kind)
        obj, part = masks[:n][rows], last[rows]
        out[f"object/{kind}"] = round(float(part[obj].mean()), 4)
        out[f"background/{kind}"] = round(float(part[~obj].mean()), 4)
    return out


def unigram_entropy(idx: torch.Tensor, spec) -> torch.Tensor:
    """(K,) entropy (nats) of the per-scale code frequencies: the loss of a model that ignores everything."""
    out = []
    for k in range(spec.num_scales):
        codes = idx[:, spec.scale_slice(k)].flatten()
        p = torch.bincount(codes, minlength=spec.vocab_size).double() / codes.numel()
        p = p[p > 0]
        out.append(float(-(p * p.log()).sum()))
    return torch.tensor(out)


@torch.no_grad()
def completion_scores(model, tok, tensors: dict, prompts: list[str], conds, n_fixed: int, sampling: dict,
                      batch_size: int = 100, seed: int = 0, use_residual: bool = True) -> dict[str, float]:
    """Prompt metrics of images whose first ``n_fixed`` scales are the real image's codes and the rest sampled.

    ``use_residual=False`` (hybrid): decode the codes only, without sampling the residual."""
    spec = model.spec
    acc = PromptAccuracy(get_embedded_evaluator(None, "cpu"))
    n = len(prompts)
    for i in range(0, n, batch_size):
        sl = slice(i, min(n, i + batch_size))
        prefix = [tensors["idx"][sl][:, spec.scale_slice(k)] for k in range(n_fixed)] if n_fixed else None
        g = torch.Generator().manual_seed(seed + i)
        out = generate_tokens(model, tok, conds[sl], generator=g, prefix_indices=prefix,
                              skip_residual=not use_residual, **sampling)
        images = tok.decode(out.tokens, use_residual=use_residual).clamp(-1, 1)
        acc.update((images + 1) / 2, prompts[sl])
    scores = acc.compute()
    per_image = acc.per_image()  # in update order, over the prompts the evaluator could parse
    parsed = [parse_caption(p) for p in prompts]
    kinds = np.array([c["background_kind"] for c in parsed if c["objects"]])
    for kind in sorted(set(kinds)):
        scores[f"n/{kind}"] = int((kinds == kind).sum())
        for key in ("main_position", "main_color"):
            scores[f"{key}/{kind}"] = float(per_image[f"prompt_accuracy/{key}"][kinds == kind].mean())
    return scores



def shuffled(conds, seed: int = 0):
    perm = torch.randperm(len(conds), generator=torch.Generator().manual_seed(seed))
    if torch.is_tensor(conds):
        return conds[perm]
    return [conds[int(j)] for j in perm]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("generator", help="a generator artifact folder")
    ap.add_argument("--label", required=True)
    ap.add_argument("--tokenizer", default=None, help="its tokenizer artifact, when the generator does not name it")
    ap.add_argument("--cache", default=None, help="the token cache it trained on (default: named after --tokenizer)")
    ap.add_argument("--n", type=int, default=500, help="images per split")
    ap.add_argument("--data", default=str(ROOT / "conf" / "data" / "synthscenes.yaml"),
                    help="the data config the generator was trained on (a YAML file), plus key=value overrides")
    ap.add_argument("overrides", nargs="*", help="data overrides, e.g. train_size=10000")
    ap.add_argument("--completion", type=int, default=0,
                    help="also score completions of this many test images from 0..K real scales")
    ap.add_argument("--fixed", type=int, nargs="*", default=None, help="real-scale counts to score (default: all)")
    ap.add_argument("--completion-split", choices=("test", "train"), default="test",
                    help="complete test images, or training images (with 0 real scales: does sampling give back "
                         "what the generator memorised?)")
    ap.add_argument("--cfg", type=float, default=None, help="sampling overrides (default: the artifact's)")
    ap.add_argument("--top-k", type=int, default=None)
    ap.add_argument("--top-p", type=float, default=None)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--diffusion-temperature", type=float, default=1.0)
    ap.add_argument("--skip-ce", action="store_true", help="completion only")
    ap.add_argument("--object-ce", action="store_true",
                    help="also the last scale's cross-entropy on object cells and on background cells (synthscenes)")
    ap.add_argument("--discrete-decode", action="store_true",
                    help="hybrid: decode the sampled codes without the residual (no diffusion head)")
    ap.add_argument("--no-log", action="store_true")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    gen = load_generator(args.generator, args.tokenizer)
    model, tok = gen.model.eval(), gen.tokenizer.model.eval()
    if model.head is None and not args.skip_ce:
        raise SystemExit("the probe reads cross-entropy: a discrete or hybrid generator is needed (or --skip-ce)")
    art = OmegaConf.load(Path(args.generator) / "config.yaml")
    tok_dir = Path(args.tokenizer).resolve() if args.tokenizer else (Path(args.generator) / art.tokenizer_dir).resolve()
    # the pipeline names a cache after the configured tokenizer artifact (its data included), which differs from
    # the --tokenizer folder when the generator trained on other data than the tokenizer: then pass --cache
    cache_dir = Path(args.cache) if args.cache else tok_dir.parents[1] / "token_cache" / tok_dir.name
    cache = load_cache(cache_dir)
    if cache is None:
        raise SystemExit(f"no token cache at {cache_dir}")
    data_cfg = OmegaConf.merge(OmegaConf.load(args.data), OmegaConf.from_dotlist(args.overrides))
    test = ImageTensorDataset(build_dataset(data_cfg, "test"))
    enc = encode_dataset(tok, torch.utils.data.Subset(test, range(min(args.n, len(test)))), 100, "cpu", collate,
                         desc="encode test")
    condition = str(art.ar.condition)

    def conds_of(c: dict, n: int):
        if condition == "class":
            return c["tensors"]["category_id"][:n]
        return list(c["prompts"][:n])

    n_train = min(args.n, len(cache["prompts"]))
    train_t = {k: v[:n_train] for k, v in cache["tensors"].items()}
    splits = {"train": (train_t, conds_of(cache, n_train)), "test": (enc["tensors"], conds_of(enc, args.n))}
    spec = model.spec
    rec = {"label": args.label, "generator": str(args.generator), "condition": condition,
           "data_overrides": args.overrides, "patch_nums": list(spec.patch_nums)}
    if model.head is not None:
        rec["unigram"] = [round(float(v), 4) for v in unigram_entropy(cache["tensors"]["idx"], spec)]
    for name, (t, c) in ({} if args.skip_ce else splits).items():
        ce = {"own": per_token_ce(model, t, c), "shuffled": per_token_ce(model, t, shuffled(c))}
        masks = object_masks(data_cfg, name, t["idx"].shape[0], spec.patch_nums[-1]) if args.object_ce else None
        for tag, per_token in ce.items():
            rec[f"{name}_{tag}"] = [round(float(v), 4) for v in per_scale_ce(per_token, spec)]
            if masks is not None:
                rec[f"{name}_last_scale_{tag}"] = last_scale_ce_split(per_token, spec, *masks)
                print(f"{name} last scale, {tag} prompts: {rec[f'{name}_last_scale_{tag}']}")
    if args.completion:
        source = enc if args.completion_split == "test" else cache
        m = min(args.completion, args.n, len(source["prompts"]))
        t_test = {k: v[:m] for k, v in source["tensors"].items()}
        s_cfg = art.ar.sampling
        pick = lambda given, default: default if given is None else given
        sampling = dict(cfg=float(pick(args.cfg, s_cfg.cfg)), top_k=int(pick(args.top_k, s_cfg.top_k)),
                        top_p=float(pick(args.top_p, s_cfg.top_p)), temperature=args.temperature,
                        diffusion_temperature=args.diffusion_temperature)
        rec["sampling"] = sampling
        rec["decode"] = "discrete only" if args.discrete_decode else "full"
        rec["completion_split"] = args.completion_split
        rec["completion"] = {}
        for n_fixed in (range(spec.num_scales + 1) if args.fixed is None else args.fixed):
            scores = completion_scores(model, tok, t_test, list(source["prompts"][:m]), conds_of(source, m),
                                       n_fixed, sampling,
                                       use_residual=not args.discrete_decode)
            rec["completion"][n_fixed] = {k: round(v, 4) for k, v in scores.items()}
            print(f"real scales {n_fixed}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()
                                                     if k in ("prompt_accuracy", "class_accuracy",
                                                              "prompt_accuracy/main_shape",
                                                              "prompt_accuracy/main_position",
                                                              "prompt_accuracy/main_color")
                                                     or k.startswith(("main_", "n/"))))
    if args.skip_ce:
        print(json.dumps(rec.get("sampling")))
        if not args.no_log:
            append_record(LOG, rec)
        return
    print(f"{'scale':>6} {'pn':>3} {'unigram':>8} {'train':>7} {'tr-shuf':>8} {'test':>7} {'te-shuf':>8}")
    for k, p in enumerate(spec.patch_nums):
        print(f"{k:>6} {p:>3} {rec['unigram'][k]:8.3f} {rec['train_own'][k]:7.3f} {rec['train_shuffled'][k]:8.3f} "
              f"{rec['test_own'][k]:7.3f} {rec['test_shuffled'][k]:8.3f}")
    if not args.no_log:
        append_record(LOG, rec)


if __name__ == "__main__":
    main()
