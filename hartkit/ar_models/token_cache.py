"""Encode a dataset once with a (frozen) tokenizer and keep the generator's training tensors on disk.

Per image the cache stores what ``TokenBatch`` needs: the teacher-forcing
inputs, the code indices (discrete / hybrid), the per-token continuous values
(continuous), the final scale's residual, the codebook rows of its
indices and the latent before the last scale's code (``rest_before_last``,
HART's ``f_rest_wo_last_discrete``: the hybrid loss subtracts the embedding
of the code it samples from it) (hybrid), plus the prompt, category and category id. Tensors go to one
safetensors file, the text fields to a JSON file written last (its presence
marks a complete cache); both are written atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from hartkit.ar_models.conditioning import CondInput
from hartkit.ar_models.model import TokenBatch
from hartkit.tokenizers.protocol import ScaleTokenizer, teacher_forcing_input
from hartkit.utils.io import atomic_save_safetensors, atomic_write_json

log = logging.getLogger(__name__)

TENSORS = "tokens.safetensors"
META = "meta.json"
FORMAT_VERSION = 2  # 2: + rest_before_last (hybrid)


def _flat(map_BChw: torch.Tensor) -> torch.Tensor:
    return map_BChw.flatten(2).transpose(1, 2)


@torch.no_grad()
def encode_dataset(tokenizer: ScaleTokenizer, dataset, batch_size: int, device, collate_fn, desc: str = "encode") -> dict:
    """Run ``tokenizer.encode`` over a torch dataset of dicts (image in [-1, 1], prompt, category, category_id)."""
    tokenizer.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    prompts, categories, cat_ids = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    for batch in tqdm(loader, desc=desc, leave=False):
        tokens = tokenizer.encode(batch["image"].to(device))
        fields = {"x_in": teacher_forcing_input(tokenizer, tokens)}
        if tokens.indices is not None:
            fields["idx"] = tokens.flat_indices()
        if tokens.scales is not None:
            fields["cont"] = torch.cat([_flat(s) for s in tokens.scales], dim=1)
        if tokens.residual is not None:
            fields["residual"] = _flat(tokens.residual)
            fields["code_emb"] = tokenizer.code_embedding(tokens.indices[-1])
            rest = tokens.rest_before_last
            if rest is None:  # a tokenizer that does not report it: residual + the last scale's contribution
                rest = tokens.residual + tokenizer.add_scale(torch.zeros_like(tokens.residual), len(tokens.patch_nums) - 1,
                                                             tokens.indices[-1])
            fields["rest_before_last"] = _flat(rest)
        for k, v in fields.items():
            parts.setdefault(k, []).append(v.float().cpu() if v.is_floating_point() else v.cpu())
        prompts += list(batch["prompt"])
        categories += list(batch["category"])
        cat_ids += [int(c) for c in batch["category_id"]]
    tensors = {k: torch.cat(v) for k, v in parts.items()}
    tensors["category_id"] = torch.tensor(cat_ids, dtype=torch.long)
    return {"tensors": tensors, "prompts": prompts, "categories": categories}


def save_cache(folder: str | Path, encoded: dict, info: dict) -> None:
    folder = Path(folder)
    atomic_save_safetensors(folder / TENSORS, encoded["tensors"])
    atomic_write_json(folder / META, {"format": FORMAT_VERSION, "prompts": encoded["prompts"],
                                      "categories": encoded["categories"], **info})


def load_cache(folder: str | Path) -> dict | None:
    """The cached encoding, or None when absent / incomplete / of another format."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT_VERSION or not (folder / TENSORS).exists():
        return None
    return {"tensors": load_file(str(folder / TENSORS)), "prompts": meta["prompts"], "categories": meta["categories"],
            "info": {k: v for k, v in meta.items() if k not in ("prompts", "categories")}}


class TokenCacheDataset(Dataset):
    """Map-style dataset over a loaded cache: item i -> dict of its tensors + prompt + category."""

    def __init__(self, cache: dict):
        self.tensors = cache["tensors"]
        self.prompts = cache["prompts"]
        self.categories = cache["categories"]

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.tensors.items()}
        item["prompt"], item["category"] = self.prompts[i], self.categories[i]
        return item


def collate_tokens(items: list[dict]) -> dict:
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in ("prompt", "category")}
    out["prompt"] = [it["prompt"] for it in items]
    out["category"] = [it["category"] for it in items]
    return out


def to_token_batch(batch: dict, cond: CondInput, device) -> TokenBatch:
    get = lambda k: batch[k].to(device) if k in batch else None
    return TokenBatch(cond=cond, x_in=get("x_in"), idx=get("idx"), cont=get("cont"), residual=get("residual"),
                      code_emb=get("code_emb"), rest_before_last=get("rest_before_last"))
