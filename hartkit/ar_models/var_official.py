"""VAR's official generator checkpoints (``var_d16.pth`` ... ``var_d30.pth``): check, load, save back.

``ar=var_d16 ar.checkpoint=/path/to/var_d16.pth`` (d20, d24, d30 alike) with ``tokenizer=var_pretrained``
builds hartkit's ``ScaleAR`` with VAR's architecture, fills it from the official file and samples what the
official model samples. The facts this rests on, each with the file and function of VAR's public code
(FoundationVision/VAR) it comes from, are listed in hartkit/ar_models/README.md, "Official VAR generators".

In short: the checkpoint holds the same tensors as ``ScaleAR`` under other names (``class_emb`` <->
``cond_module.class_emb``, ``blocks.{i}`` <-> ``blocks.blocks.{i}``) plus three buffers hartkit recomputes
(``lvl_1L``, ``attn_bias_for_masking``, ``blocks.{i}.attn.zero_k_bias``); VAR's AdaLN linear emits
gamma1, gamma2, scale1, scale2, shift1, shift2 (models/basic_var.py, ``AdaLNSelfAttn.forward``) and
hartkit's gamma1, gamma2, scale1, shift1, scale2, shift2 (``backbone.AdaLNBlock.forward``), so the rows
of ``blocks.{i}.ada_lin.1`` are permuted on load and back on save, both exact. VAR's ``forward`` drops
class labels with ``torch.rand`` even in eval mode; ``var_forward`` does so in training mode only.
Official files are pickles: they are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hartkit.ar_models.model import ScaleAR, TokenSpec
from hartkit.errors import CheckpointMismatchError, ConfigError
from hartkit.utils.io import atomic_save_safetensors, atomic_write, read_state_dict

log = logging.getLogger(__name__)

VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
VAR_RELEASE = "https://huggingface.co/FoundationVision/var/resolve/main"
# parameters of the released models (VAR's README: 310M, 600M, 1.0B, 2.0B); d16 checked exactly in the tests
VAR_DEPTHS = (16, 20, 24, 30)

# order of the six AdaLN vectors in the rows of blocks.{i}.ada_lin.1
VAR_ADALN_ORDER = ("gamma1", "gamma2", "scale1", "scale2", "shift1", "shift2")  # basic_var.AdaLNSelfAttn.forward
HARTKIT_ADALN_ORDER = ("gamma1", "gamma2", "scale1", "shift1", "scale2", "shift2")  # backbone.AdaLNBlock.forward

_DERIVED = "derived"  # a VAR buffer that hartkit recomputes (lvl_1L, attn_bias_for_masking, zero_k_bias)


class GeneratorCheckpointMismatchError(CheckpointMismatchError, ConfigError):
    """A generator checkpoint whose keys, shapes or buffers do not fit the configured model (nothing was loaded)."""


# ------------------------------------------------------------------------------------------------ layout
def var_key_map(depth: int, l2_norm: bool = True) -> dict[str, str]:
    """VAR key -> hartkit key (or ``_DERIVED``), in the order VAR's ``state_dict`` lists them (a module's own
    parameters, then its buffers, then its children in registration order)."""
    out = {"pos_start": "pos_start", "pos_1LC": "pos_1LC", "lvl_1L": _DERIVED, "attn_bias_for_masking": _DERIVED}
    for name in ("word_embed.weight", "word_embed.bias"):
        out[name] = name
    out["class_emb.weight"] = "cond_module.class_emb.weight"
    out["lvl_embed.weight"] = "lvl_embed.weight"
    for i in range(depth):
        var, hk = f"blocks.{i}.", f"blocks.blocks.{i}."
        own = (["attn.scale_mul_1H11"] if l2_norm else []) + ["attn.q_bias", "attn.v_bias"]
        for leaf in own:
            out[var + leaf] = hk + leaf
        out[var + "attn.zero_k_bias"] = _DERIVED
        for leaf in ("attn.mat_qkv.weight", "attn.proj.weight", "attn.proj.bias", "ffn.fc1.weight", "ffn.fc1.bias",
                     "ffn.fc2.weight", "ffn.fc2.bias", "ada_lin.1.weight", "ada_lin.1.bias"):
            out[var + leaf] = hk + leaf
    for name in ("head_nm.ada_lin.1.weight", "head_nm.ada_lin.1.bias", "head.weight", "head.bias"):
        out[name] = name
    return out


def _is_block_adaln(var_key: str) -> bool:
    return re.fullmatch(r"blocks\.\d+\.ada_lin\.1\.(weight|bias)", var_key) is not None


def reorder_adaln(t: torch.Tensor, src: tuple[str, ...], dst: tuple[str, ...]) -> torch.Tensor:
    """Rows of an AdaLN linear (6C, ...) or its bias (6C,) with the six chunks moved from order ``src`` to ``dst``."""
    chunks = t.chunk(6, dim=0)
    return torch.cat([chunks[src.index(name)] for name in dst], dim=0)


def var_level_ids(patch_nums, device: torch.device | str | None = None) -> torch.Tensor:
    """VAR's ``lvl_1L``: (1, L) int64, the scale index of every token."""
    return torch.cat([torch.full((p * p,), k, dtype=torch.long, device=device)
                      for k, p in enumerate(patch_nums)]).view(1, -1)


def var_attn_bias(patch_nums, device: torch.device | str | None = None) -> torch.Tensor:
    """VAR's ``attn_bias_for_masking``: (1, 1, L, L) float32, 0 where key scale <= query scale, else -inf."""
    lvl = var_level_ids(patch_nums, device)[0]
    zero = torch.zeros((), device=device)
    return torch.where(lvl[:, None] >= lvl[None, :], zero, zero - torch.inf).view(1, 1, lvl.numel(), lvl.numel())


def _model_depth(model: ScaleAR) -> int:
    return len(model.blocks.blocks)


def _uses_l2_norm(model: ScaleAR) -> bool:
    return hasattr(model.blocks.blocks[0].attn, "scale_mul_1H11")


def var_layout(model: ScaleAR) -> dict[str, tuple[int, ...]]:
    """VAR key -> shape of the checkpoint ``model`` corresponds to (no tensor is copied)."""
    own = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    L, C = model.spec.num_tokens, model.width
    derived = {"lvl_1L": (1, L), "attn_bias_for_masking": (1, 1, L, L)}
    out = {}
    for vk, hk in var_key_map(_model_depth(model), _uses_l2_norm(model)).items():
        out[vk] = derived.get(vk, (C,)) if hk == _DERIVED else own[hk]
    return out


def _check_tree(model: ScaleAR) -> dict[str, str]:
    """The key map for ``model``; every persistent hartkit tensor must have a place in VAR's layout."""
    kmap = var_key_map(_model_depth(model), _uses_l2_norm(model))
    mapped = {hk for hk in kmap.values() if hk != _DERIVED}
    extra = sorted(set(model.state_dict(keep_vars=True)) - mapped)
    if extra:
        raise ConfigError(f"this generator has weights VAR's checkpoint layout has no place for: {extra[:8]} "
                          "(only a discrete, class-conditional ar=var_d* model maps onto VAR's layout)")
    return kmap


# ------------------------------------------------------------------------------------------------ architecture
def check_var_architecture(cfg: Any, spec: TokenSpec, tokenizer: nn.Module | None = None) -> None:
    """Raise ConfigError naming every setting in which the model ``cfg`` builds on ``spec`` departs from VAR."""
    get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
    problems = []
    if spec.kind != "discrete":
        problems.append(f"the tokenizer is {spec.kind!r}, VAR's generator needs a discrete one (tokenizer=var_pretrained)")
    for key, want in (("condition", "class"), ("pos", "absolute"), ("norm", "layernorm"), ("qv_bias", True),
                      ("attn_l2_norm", True)):
        if get(key) != want:
            problems.append(f"ar.{key}={get(key)!r} (VAR: {want!r})")
    quantize = getattr(tokenizer, "quantize", None) if tokenizer is not None else None
    if quantize is not None and getattr(quantize, "phi_on_last_scale", True) is False:
        problems.append("the tokenizer skips Phi at the last scale (VAR applies it: "
                        "tokenizer.quantizer.phi_on_last_scale=true, as tokenizer=var_pretrained sets it)")
    if problems:
        raise ConfigError("ar.checkpoint loads VAR's official generator, but this config does not build VAR's "
                          "architecture: " + "; ".join(problems) + ". Use ar=var_d16|var_d20|var_d24|var_d30 with "
                          "tokenizer=var_pretrained")


# ------------------------------------------------------------------------------------------------ conversion
def to_var_state_dict(model: ScaleAR) -> dict[str, torch.Tensor]:
    """The model's weights in VAR's layout and key order (on the model's device; buffers recomputed)."""
    kmap = _check_tree(model)
    own = model.state_dict()
    device = model.level_ids.device
    dtype = model.word_embed.weight.dtype
    out: dict[str, torch.Tensor] = {}
    for vk, hk in kmap.items():
        if vk == "lvl_1L":
            out[vk] = var_level_ids(model.spec.patch_nums, device)
        elif vk == "attn_bias_for_masking":
            out[vk] = var_attn_bias(model.spec.patch_nums, device)
        elif hk == _DERIVED:  # blocks.{i}.attn.zero_k_bias
            out[vk] = torch.zeros(model.width, device=device, dtype=dtype)
        elif _is_block_adaln(vk):
            out[vk] = reorder_adaln(own[hk].detach(), HARTKIT_ADALN_ORDER, VAR_ADALN_ORDER)
        else:
            out[vk] = own[hk].detach()
    return out


def listing(title: str, items: list[str]) -> str:
    """An indented block of an error message: the first 40 items (keys, shapes) and how many more."""
    if not items:
        return ""
    more = f"\n    ... and {len(items) - 40} more" if len(items) > 40 else ""
    return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:40]) + more


def derived_buffer_problems(state: dict[str, torch.Tensor], levels: torch.Tensor, mask: torch.Tensor,
                            level_what: str, mask_what: str, zero_k_why: str = "") -> list[str]:
    """What is wrong with the buffers VAR and HART save but hartkit recomputes (each checked when present):
    ``lvl_1L`` must equal ``levels``, ``attn_bias_for_masking`` ``mask``, every ``attn.zero_k_bias`` zero."""
    bad = []
    if "lvl_1L" in state and not torch.equal(state["lvl_1L"].cpu().long(), levels):
        bad.append(level_what)
    if "attn_bias_for_masking" in state and not torch.equal(state["attn_bias_for_masking"].cpu().float(), mask):
        bad.append(mask_what)
    nonzero = [k for k in state if k.endswith("attn.zero_k_bias") and bool(state[k].any())]
    if nonzero:
        bad.append(f"{nonzero[0]} is not zero{zero_k_why}")
    return bad


def _mismatch_message(source: str, layout: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor]) -> str | None:
    missing = [k for k in layout if k not in state]
    unexpected = sorted(k for k in state if k not in layout)
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {layout[k]}"
              for k in layout if k in state and tuple(state[k].shape) != layout[k]]
    if not (missing or unexpected or shapes):
        return None

    hint = ""
    if "word_embed.weight" in state and any(k.startswith("blocks.") for k in state):
        depth = 1 + max(int(k.split(".")[1]) for k in state if re.match(r"blocks\.\d+\.", k))
        width = int(state["word_embed.weight"].shape[0])
        hint = f"\n  The file holds a VAR of depth {depth} and width {width}"
        hint += f" (ar=var_d{depth})." if depth in VAR_DEPTHS and width == 64 * depth else "."
    if any(k.startswith("shared_ada_lin") or k.endswith("ada_gss") for k in state):
        hint += "\n  It uses shared AdaLN (VAR-d36, 512 px), which hartkit does not build."
    return (f"{source} does not match the VAR generator built from the config (nothing was loaded):"
            + listing("missing keys", missing) + listing("unexpected keys", unexpected)
            + listing("shape mismatches", shapes) + hint
            + "\n  Check that ar=var_d<depth> matches the file and that the tokenizer is VAR's (tokenizer=var_pretrained).")


def from_var_state_dict(model: ScaleAR, state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """hartkit's state dict for ``model`` from a VAR-layout one, after a strict key / shape / buffer check."""
    kmap = _check_tree(model)
    problem = _mismatch_message(source, var_layout(model), state)
    if problem:
        raise GeneratorCheckpointMismatchError(problem)
    pn = model.spec.patch_nums
    bad = derived_buffer_problems(
        state, var_level_ids(pn), var_attn_bias(pn),
        f"lvl_1L (the scale of every token) differs from the tokenizer's scales {list(pn)}",
        "attn_bias_for_masking is not VAR's block-causal mask for these scales",
        " (VAR never trains it; hartkit has no k bias)")
    if bad:
        raise GeneratorCheckpointMismatchError(f"{source}: " + "; ".join(bad) + " (nothing was loaded)")
    out = {}
    for vk, hk in kmap.items():
        if hk == _DERIVED:
            continue
        t = state[vk]
        out[hk] = reorder_adaln(t, VAR_ADALN_ORDER, HARTKIT_ADALN_ORDER) if _is_block_adaln(vk) else t
    return out


def load_var_state_dict(model: ScaleAR, state: dict[str, torch.Tensor], source: str = "checkpoint") -> ScaleAR:
    model.load_state_dict(from_var_state_dict(model, state, source), strict=True)
    return model


# ------------------------------------------------------------------------------------------------ files
def resolve_generator_checkpoint(path: str | os.PathLike | None, preset: str = "var_d16") -> Path:
    """The checkpoint file ``ar.checkpoint`` names (a folder is searched for ``<preset>.pth``)."""
    fname = f"{preset}.pth" if preset.startswith("var_d") else "var_d16.pth"
    where = (f"download {VAR_RELEASE}/{fname} (VAR's release, FoundationVision/var on Hugging Face; nothing is "
             f"downloaded for you), put it e.g. at checkpoints/{fname} and pass ar.checkpoint=checkpoints/{fname}")
    if path is None or str(path) in ("", "???"):
        raise FileNotFoundError(f"no generator checkpoint given: {where}")
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / fname).is_file():
            return p / fname
        raise FileNotFoundError(f"no {fname} in folder {p}: {where}")
    if not p.is_file():
        raise FileNotFoundError(f"generator checkpoint {p} does not exist: {where}")
    return p


def load_var_checkpoint(model: ScaleAR, path: str | os.PathLike) -> ScaleAR:
    """Fill ``model`` from an official VAR file (.pth read with weights_only=True, or .safetensors)."""
    path = Path(path)
    return load_var_state_dict(model, read_state_dict(path), source=str(path))


def save_var_checkpoint(model: ScaleAR, path: str | os.PathLike) -> Path:
    """Write ``model`` in VAR's layout: a .pth state dict VAR's ``load_state_dict(strict=True)`` accepts
    (or .safetensors with the same keys)."""
    state = {k: v.cpu().contiguous() for k, v in to_var_state_dict(model).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        return atomic_save_safetensors(path, state)
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_var_generator(ar_cfg: Any, tokenizer: nn.Module, device: torch.device | str = "cpu") -> ScaleAR:
    """``ScaleAR`` with VAR's architecture on ``tokenizer``, filled from ``ar_cfg.checkpoint``, in eval mode."""
    get = ar_cfg.get if hasattr(ar_cfg, "get") else lambda k, d=None: getattr(ar_cfg, k, d)
    if str(get("name", "")).startswith("hart"):  # ar=hart_0.7b: HART's layout (hart_official.py)
        from hartkit.ar_models.hart_official import load_hart_generator
        return load_hart_generator(ar_cfg, tokenizer, device)
    path = resolve_generator_checkpoint(get("checkpoint"), str(get("name", "var_d16")))
    spec = TokenSpec.from_tokenizer(tokenizer)
    check_var_architecture(ar_cfg, spec, tokenizer)
    state = read_state_dict(path)
    with torch.device(device):  # built where it runs: random init of a 2 B model on a GPU takes no time
        model = ScaleAR(ar_cfg, spec)
    load_var_state_dict(model, state, source=str(path))
    n = sum(p.numel() for p in model.parameters())
    log.info("loaded VAR generator %s (%.1f M parameters, depth %d, width %d) from %s", get("name"), n / 1e6,
             _model_depth(model), model.width, path)
    return model.eval()


# ------------------------------------------------------------------------------------------------ VAR's forward
def var_forward(model: ScaleAR, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor, cond_drop_rate: float = 0.1,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """VAR's ``VAR.forward(label_B, x_BLCv_wo_first_l)``: teacher-forced logits (B, L, V) in float32 (float64
    for a float64 model).

    VAR replaces each label by the null class with probability ``cond_drop_rate`` on every call; here that
    happens in training mode only (draws from ``generator``), so in eval mode the logits are deterministic.
    """
    label_B = torch.as_tensor(label_B)
    if model.training and cond_drop_rate > 0:
        dev = generator.device if generator is not None else label_B.device
        drop = torch.rand(label_B.shape[0], generator=generator, device=dev).to(label_B.device) < cond_drop_rate
        label_B = torch.where(drop, torch.full_like(label_B, model.cond_module.num_classes), label_B)
    cond = model.condition(label_B)
    logits = model.head(model(cond, x_BLCv_wo_first_l))
    return logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 as VAR's get_logits (float64 stays)
