"""HART's released text-to-image transformer (``hart-0.7b-1024px``, folder ``llm/``): layout, strict check, save back.

``ar=hart_0.7b ar.checkpoint=/path/to/llm`` names the folder of HART's release that holds ``config.json`` and the
weights (``ema_model.bin``, which HART's ``sample.py`` loads by default, else ``model.safetensors`` or
``pytorch_model.bin``), or one weights file next to its ``config.json``. Nothing is downloaded.

What this module does, with the facts it rests on (file and function of mit-han-lab/hart, commit e28a41f; the
table is in hartkit/ar_models/README.md, "Official HART generator"):

- ``hart_layout(config, vocab_size, latent_channels)``: every key HART's ``HARTForT2I.state_dict()`` holds, in
  its order, with its shape, derived from the fields of ``HARTForT2IConfig`` (configuration.py) and the module
  tree of ``HARTForT2I.__init__`` (hart_transformer_t2i.py), ``AdaLNSelfAttn`` / ``LlamaAttention`` /
  ``LlamaMLP`` / ``LlamaRMSNormFused`` / ``AdaLNBeforeHead`` (networks/basic_hart.py) and ``DiffLoss`` /
  ``SimpleMLPAdaLN`` (diffusion/diffloss.py).
- ``check_hart_state_dict``: strict comparison with that layout; missing, unexpected and mis-shaped keys are
  listed and the three buffers HART recomputes (``lvl_1L``, ``attn_bias_for_masking``, ``zero_k_bias``) are
  checked when the file holds them.
- ``save_hart_checkpoint`` writes a checked state dict back in HART's layout and key order (plus ``config.json``);
  load then save gives identical tensors.
- ``hart_diffusion_to_hartkit`` / ``hartkit_diffusion_to_hart`` map the residual diffusion MLP
  (``diffloss.net.*``) onto hartkit's ``DiffusionMLP`` and back, exactly.
- The transformer is computed as HART's code reads by ``hartkit.ar_models.hart_transformer.HARTTransformer`` (HART's key names;
  ``load_hart_transformer`` reads a release folder into it).
- ``load_hart_generator`` (the pipeline's route for ``ar=hart_0.7b``) checks the files, loads them into
  ``HARTTransformer``, loads HART's prompt encoder from the local folder ``ar.text_encoder.pretrained``
  (``hart_text.HARTTextEncoder``) and returns a ``hart_generator.HARTGenerator``, which gen_eval samples and
  scores like any generator. ``HART_CAVEATS`` lists what is not reproduced (random streams, float16 kernels).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hartkit.ar_models.model import TokenSpec
from hartkit.ar_models.var_official import GeneratorCheckpointMismatchError, derived_buffer_problems, listing
from hartkit.errors import ConfigError
from hartkit.utils.io import atomic_save_safetensors, atomic_write, read_state_dict

log = logging.getLogger(__name__)

HART_RELEASE = "https://huggingface.co/mit-han-lab/hart-0.7b-1024px"
# hartkit's 1024 px schedule (14 scales, 9451 tokens, 64x64 latent). HART's code holds no 1024 px schedule: it
# reads patch_nums from the release's config.json, and so does this module (unverified against that file).
HART_PATCH_NUMS_1024 = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
HART_VAE_SCALE = 0.6  # DiffLoss.__init__: targets divided by 0.6 for diffusion, samples multiplied by 0.6
HART_SAMPLING = {  # sample.py argparse defaults and HARTForT2I.autoregressive_infer_cfg
    "cfg": 4.5, "top_k_first_7_scales": 600, "top_k_later_scales": 300, "top_p": 0.0, "more_smooth": True,
    "use_ema": True, "max_token_length": 300, "num_maskgit_iters": 1, "diffusion_steps": 8,
    "diffusion_temperature": 1.0,
}
# HARTForT2IConfig / VARTransformerT2IConfig defaults (configuration.py); a config.json overrides them
HART_CONFIG_DEFAULTS: dict[str, Any] = {
    "context_token": 77, "context_dim": 768, "depth": 16, "embed_dim": 1024, "num_heads": 16, "mlp_ratio": 4.0,
    "norm_eps": 1e-6, "shared_aln": False, "attn_l2_norm": False,
    "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16], "mlp_type": "gpt2", "attn_type": "gpt2",
    "disable_aln": False, "use_timestep_embed": False, "sep_aln_pooling_mode": "max", "use_cross_attn": False,
    "diff_width": 1024, "diff_depth": 6, "num_sampling_steps": "8", "diffusion_batch_mul": 4, "sampler": "iddpm",
    "use_context_norm": False, "context_norm_scale": 1.0,
}
DIFF_FREQ_DIM = 256  # diffloss.TimestepEmbedder frequency_embedding_size

_DERIVED = ("lvl_1L", "attn_bias_for_masking")  # + blocks.{i}.attn.zero_k_bias

# What hartkit does not reproduce of HART's generator (the transformer itself is computed exactly by
# hartkit.ar_models.hart_transformer.HARTTransformer, the prompt encoder by hart_text.HARTTextEncoder; see their
# docstrings and hartkit/ar_models/README.md). Caveats of the pipeline's route, not refusals.
HART_CAVEATS = (
    "random streams: HART draws MaskGIT orders from numpy's global generator, codes and Gumbel noise from its "
    "CUDA generator and diffusion noise from torch's global one; HARTTransformer.sample draws the same "
    "distributions from one torch.Generator, so a seed does not give HART's images",
    "training forward: HART's forward drops text with torch.randn < cond_drop_rate, draws the subset of "
    "last-scale tokens it keeps and adds the diffusion loss; HARTTransformer.forward is the deterministic "
    "teacher forcing (all tokens, or a given subset with last_keep); the pipeline does not fine-tune HART",
    "precision: HART runs the text model and the transformer under float16 autocast with its fused RMSNorm / "
    "RoPE kernels and flash attention (app.py loads both in float16); hartkit computes in float32 (checked in "
    "float32 / float64 on CPU only, against a restatement of HART's code: no official weights or outputs were "
    "available)",
    "text model: HART pins transformers 4.42.2; another version may compute Qwen2's hidden states differently",
)


def _cfg(config: dict[str, Any]) -> dict[str, Any]:
    return {**HART_CONFIG_DEFAULTS, **config}


def check_hart_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config with defaults filled in; ConfigError for variants whose layout this module does not derive."""
    c = _cfg(config)
    bad = []
    if c["attn_type"] != "llama" or c["mlp_type"] != "llama":
        bad.append(f"attn_type={c['attn_type']!r}, mlp_type={c['mlp_type']!r} (HART-0.7B: 'llama')")
    if int(c["context_token"]) <= 0:
        bad.append("context_token must be > 0 (text-to-image)")
    for key in ("disable_aln", "use_timestep_embed", "use_cross_attn", "shared_aln"):
        if c[key]:
            bad.append(f"{key}=true")
    if int(c["embed_dim"]) % int(c["num_heads"]):
        bad.append(f"embed_dim {c['embed_dim']} is not divisible by num_heads {c['num_heads']}")
    if bad:
        raise ConfigError("HART config not supported by hartkit's HART layout: " + "; ".join(bad))
    return c


def hart_ffn_hidden(C: int, mlp_ratio: float) -> int:
    """basic_hart.AdaLNSelfAttn: LlamaMLP hidden width."""
    return int((C * mlp_ratio * 2) / 3 + 255) // 256 * 256


def hart_num_positions(config: dict[str, Any]) -> int:
    """Tokens of HART's training sequence: L + context_token - 1 (the text tokens replace scale 1)."""
    c = _cfg(config)
    return sum(int(p) ** 2 for p in c["patch_nums"]) + int(c["context_token"]) - 1


def hart_layout(config: dict[str, Any], vocab_size: int, latent_channels: int,
                with_buffers: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``HARTForT2I.state_dict()`` for ``config``, in its order (a module's parameters, its
    persistent buffers, then its children in registration order)."""
    c = check_hart_config(config)
    C, H, Dc = int(c["embed_dim"]), int(c["num_heads"]), int(c["context_dim"])
    K, N = len(c["patch_nums"]), hart_num_positions(c)
    V, Cv, W = int(vocab_size), int(latent_channels), int(c["diff_width"])
    out: dict[str, tuple[int, ...]] = {}
    # llama with context tokens: pos_start and pos_1LC are None (no parameter)
    if with_buffers:
        out["lvl_1L"] = (1, N)
        out["attn_bias_for_masking"] = (1, 1, N, N)
    out["word_embed.weight"], out["word_embed.bias"] = (C, Cv), (C,)
    out["context_embed.weight"], out["context_embed.bias"] = (C, Dc), (C,)
    if c["use_context_norm"]:
        out["context_norm.weight"] = (Dc,)  # LlamaRMSNormFused ignores context_norm_scale: weight starts at ones
    out["lvl_embed.weight"] = (K, C)
    hidden = hart_ffn_hidden(C, float(c["mlp_ratio"]))
    for i in range(int(c["depth"])):
        p = f"blocks.{i}."
        if c["attn_l2_norm"]:
            out[p + "attn.scale_mul_1H11"] = (1, H, 1, 1)
        out[p + "attn.q_bias"], out[p + "attn.v_bias"] = (C,), (C,)
        if with_buffers:
            out[p + "attn.zero_k_bias"] = (C,)
        out[p + "attn.qkv_proj.weight"] = (3 * C, C)
        out[p + "attn.proj.weight"], out[p + "attn.proj.bias"] = (C, C), (C,)
        out[p + "ffn.gate_proj.weight"] = (hidden, C)
        out[p + "ffn.up_proj.weight"] = (hidden, C)
        out[p + "ffn.down_proj.weight"] = (C, hidden)
        out[p + "ln_wo_grad.weight"] = (C,)
        out[p + "ada_lin.1.weight"], out[p + "ada_lin.1.bias"] = (6 * C, C), (6 * C,)
    out["head_nm.ln_wo_grad.weight"] = (C,)
    out["head_nm.ada_lin.1.weight"], out["head_nm.ada_lin.1.bias"] = (2 * C, C), (2 * C,)
    out["head.weight"], out["head.bias"] = (V, C), (V,)
    out["decoder_norm.weight"] = (C,)
    out.update(hart_diffusion_layout(C, Cv, W, int(c["diff_depth"])))
    return out


def hart_diffusion_layout(cond_dim: int, latent_channels: int, width: int, depth: int) -> dict[str, tuple[int, ...]]:
    """``diffloss.net`` (SimpleMLPAdaLN, learned sigma: 2 * Cvae outputs) key -> shape, in order."""
    W, Cv, d = width, latent_channels, "diffloss.net."
    out = {d + "time_embed.mlp.0.weight": (W, DIFF_FREQ_DIM), d + "time_embed.mlp.0.bias": (W,),
           d + "time_embed.mlp.2.weight": (W, W), d + "time_embed.mlp.2.bias": (W,),
           d + "cond_embed.weight": (W, cond_dim), d + "cond_embed.bias": (W,),
           d + "input_proj.weight": (W, Cv), d + "input_proj.bias": (W,)}
    for j in range(depth):
        r = f"{d}res_blocks.{j}."
        out.update({r + "in_ln.weight": (W,), r + "in_ln.bias": (W,), r + "mlp.0.weight": (W, W),
                    r + "mlp.0.bias": (W,), r + "mlp.2.weight": (W, W), r + "mlp.2.bias": (W,),
                    r + "adaLN_modulation.1.weight": (3 * W, W), r + "adaLN_modulation.1.bias": (3 * W,)})
    out.update({d + "final_layer.linear.weight": (2 * Cv, W), d + "final_layer.linear.bias": (2 * Cv,),
                d + "final_layer.adaLN_modulation.1.weight": (2 * W, W),
                d + "final_layer.adaLN_modulation.1.bias": (2 * W,)})
    return out


def hart_parameter_count(config: dict[str, Any], vocab_size: int, latent_channels: int) -> dict[str, int]:
    """Parameters (buffers excluded) of the transformer and of the diffusion head."""
    layout = hart_layout(config, vocab_size, latent_channels, with_buffers=False)
    n = lambda keys: sum(int(torch.Size(layout[k]).numel()) for k in keys)  # noqa: E731
    diff = [k for k in layout if k.startswith("diffloss.")]
    return {"transformer": n([k for k in layout if not k.startswith("diffloss.")]), "diffusion_head": n(diff),
            "total": n(layout)}


# ------------------------------------------------------------------------------------------------ buffers
def hart_level_ids(config: dict[str, Any]) -> torch.Tensor:
    """``lvl_1L``: (1, L + T - 1) int64: 0 for the T text tokens, k for scale k + 1 (k >= 1)."""
    c = _cfg(config)
    parts = [torch.zeros(int(c["context_token"]), dtype=torch.long)]
    parts += [torch.full((int(p) ** 2,), k + 1, dtype=torch.long) for k, p in enumerate(c["patch_nums"][1:])]
    return torch.cat(parts).view(1, -1)


def hart_attn_bias(config: dict[str, Any]) -> torch.Tensor:
    """``attn_bias_for_masking``: (1, 1, N, N) float32, 0 where the key's level <= the query's, else -inf."""
    lvl = hart_level_ids(config)[0]
    zero = torch.zeros(())
    return torch.where(lvl[:, None] >= lvl[None, :], zero, zero - torch.inf).view(1, 1, lvl.numel(), lvl.numel())


# ------------------------------------------------------------------------------------------------ check
def check_hart_state_dict(state: dict[str, torch.Tensor], config: dict[str, Any], vocab_size: int,
                          latent_channels: int, source: str = "checkpoint") -> None:
    """Raise GeneratorCheckpointMismatchError listing missing / unexpected / mis-shaped keys and wrong buffers.

    The buffers (``lvl_1L``, ``attn_bias_for_masking``, ``blocks.{i}.attn.zero_k_bias``) may be absent (HART
    recomputes them); when present their shape and value are checked."""
    layout = hart_layout(config, vocab_size, latent_channels, with_buffers=True)
    optional = {k for k in layout if k in _DERIVED or k.endswith("attn.zero_k_bias")}
    missing = [k for k in layout if k not in state and k not in optional]
    unexpected = sorted(k for k in state if k not in layout)
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs config {layout[k]}"
              for k in layout if k in state and tuple(state[k].shape) != layout[k]]
    if missing or unexpected or shapes:
        hint = ""
        if "context_embed.weight" in state:
            depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
            C, Dc = (int(s) for s in state["context_embed.weight"].shape)
            hint = f"\n  The file holds a HART of depth {depth}, width {C}, text width {Dc}"
            if "head.weight" in state:
                hint += f", vocabulary {int(state['head.weight'].shape[0])}"
            if "word_embed.weight" in state:
                hint += f", latent channels {int(state['word_embed.weight'].shape[1])}"
            hint += "."
        raise GeneratorCheckpointMismatchError(
            f"{source} does not match HART's layout for its config.json and the tokenizer (nothing was loaded):"
            + listing("missing keys", missing) + listing("unexpected keys", unexpected)
            + listing("shape mismatches", shapes) + hint
            + "\n  Check config.json (next to the weights) and that the tokenizer is HART's (tokenizer=hart_pretrained).")
    bad = derived_buffer_problems(
        state, hart_level_ids(config), hart_attn_bias(config),
        "lvl_1L is not HART's level of every token for these patch_nums / context_token",
        "attn_bias_for_masking is not HART's block-causal mask for these patch_nums / context_token")
    if bad:
        raise GeneratorCheckpointMismatchError(f"{source}: " + "; ".join(bad) + " (nothing was loaded)")


# ------------------------------------------------------------------------------------------------ files
def resolve_hart_checkpoint(path: str | os.PathLike | None) -> tuple[Path, Path]:
    """(weights file, config.json) for ``ar.checkpoint``: the release's ``llm/`` folder or a weights file."""
    where = (f"download the folder llm/ of HART's release ({HART_RELEASE}; nothing is downloaded for you), put it "
             "e.g. at checkpoints/hart-0.7b-1024px/llm and pass ar.checkpoint=checkpoints/hart-0.7b-1024px/llm")
    if path is None or str(path) in ("", "???"):
        raise FileNotFoundError(f"no HART generator checkpoint given: {where}")
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("ema_model.bin", "model.safetensors", "pytorch_model.bin"):
            if (p / name).is_file():
                weights = p / name
                break
        else:
            raise FileNotFoundError(f"no ema_model.bin, model.safetensors or pytorch_model.bin in {p}: {where}")
    elif p.is_file():
        weights = p
    else:
        raise FileNotFoundError(f"HART generator checkpoint {p} does not exist: {where}")
    config = weights.parent / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"no config.json next to {weights} (HART's llm/ folder holds one): {where}")
    return weights, config


def read_hart_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """(config.json as a dict, state dict, weights file); pickles are read with weights_only=True."""
    weights, config_path = resolve_hart_checkpoint(path)
    config = json.loads(config_path.read_text())
    return config, read_state_dict(weights), weights


def save_hart_checkpoint(state: dict[str, torch.Tensor], config: dict[str, Any], folder: str | os.PathLike,
                         vocab_size: int, latent_channels: int, fmt: str = "safetensors") -> Path:
    """Write a checked HART state dict in HART's key order to ``folder/model.safetensors`` (or ``ema_model.bin``
    with ``fmt="bin"``) plus ``config.json``; keys the state holds are kept, nothing is recomputed."""
    check_hart_state_dict(state, config, vocab_size, latent_channels, source="state to save")
    order = [k for k in hart_layout(config, vocab_size, latent_channels) if k in state]
    out = {k: state[k].detach().cpu().contiguous() for k in order}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    if fmt == "safetensors":
        return atomic_save_safetensors(folder / "model.safetensors", out)
    return atomic_write(folder / "ema_model.bin", lambda tmp: torch.save(out, tmp))


# ------------------------------------------------------------------------------------------------ diffusion head
def _diff_key_pairs(depth: int) -> list[tuple[str, str]]:
    """(HART key under diffloss.net., hartkit key under DiffusionMLP) pairs."""
    pairs = [(f"time_embed.mlp.{i}.{w}", f"time_embed.mlp.{i}.{w}") for i in (0, 2) for w in ("weight", "bias")]
    pairs += [(f"{m}.{w}", f"{m}.{w}") for m in ("cond_embed", "input_proj") for w in ("weight", "bias")]
    for j in range(depth):
        for hk, kk in (("in_ln", "norm"), ("mlp.0", "mlp.0"), ("mlp.2", "mlp.2"), ("adaLN_modulation.1", "ada_lin.1")):
            pairs += [(f"res_blocks.{j}.{hk}.{w}", f"blocks.{j}.{kk}.{w}") for w in ("weight", "bias")]
    pairs += [(f"final_layer.linear.{w}", f"out.{w}") for w in ("weight", "bias")]
    pairs += [(f"final_layer.adaLN_modulation.1.{w}", f"final_ada.1.{w}") for w in ("weight", "bias")]
    return pairs


def hart_diffusion_to_hartkit(state: dict[str, torch.Tensor], depth: int,
                              prefix: str = "diffloss.net.") -> dict[str, torch.Tensor]:
    """hartkit ``DiffusionMLP`` state dict from HART's ``diffloss.net.*`` tensors (same equations, renamed)."""
    return {kk: state[prefix + hk] for hk, kk in _diff_key_pairs(depth)}


def hartkit_diffusion_to_hart(net: nn.Module, prefix: str = "diffloss.net.") -> dict[str, torch.Tensor]:
    """HART's ``diffloss.net.*`` tensors from a hartkit ``DiffusionMLP`` (learned sigma)."""
    own = net.state_dict()
    return {prefix + hk: own[kk].detach() for hk, kk in _diff_key_pairs(len(net.blocks))}


# ------------------------------------------------------------------------------------------------ entry point
def _tokenizer_sizes(tokenizer: nn.Module) -> tuple[int, int, tuple[int, ...]]:
    return int(tokenizer.vocab_size), int(tokenizer.latent_channels), tuple(int(p) for p in tokenizer.patch_nums)


def _text_encoder_folder(ar_cfg: Any) -> tuple[Any, int]:
    """(local folder of HART's text model, max_len) from ``ar.text_encoder``; ConfigError for another encoder."""
    get = ar_cfg.get if hasattr(ar_cfg, "get") else lambda k, d=None: getattr(ar_cfg, k, d)
    te = get("text_encoder")
    tget = (te.get if hasattr(te, "get") else lambda k, d=None: getattr(te, k, d)) if te is not None else None
    if te is None or tget("name", "hf") != "hf":
        raise ConfigError("HART's generator reads its text encoder from a local transformers folder: use "
                          "ar/text_encoder=hf ar.text_encoder.pretrained=/path/to/Qwen2-VL-1.5B-Instruct "
                          f"(got ar.text_encoder.name={None if te is None else tget('name')!r})")
    folder = tget("pretrained", None)
    model = tget("model", None)
    if not folder and model and Path(str(model)).expanduser().is_dir():
        folder = model  # ar.text_encoder.model may name the local folder too
    return folder, int(tget("max_len", 300))


def load_hart_generator(ar_cfg: Any, tokenizer: nn.Module, device: torch.device | str = "cpu",
                        text_encoder: Any = None) -> nn.Module:
    """The pipeline's route for ``ar=hart_0.7b ar.checkpoint=.../llm ar/text_encoder=hf
    ar.text_encoder.pretrained=.../Qwen2-VL-1.5B-Instruct``: check the files against HART's layout and the
    tokenizer, load them into ``HARTTransformer`` (float32, on ``device``), load HART's prompt encoder
    (``hart_text.HARTTextEncoder``; ``text_encoder`` replaces it: any callable prompts -> (context, mask,
    position ids)) and return a ``hart_generator.HARTGenerator``. Every error says what to fix; nothing is
    downloaded. ``HART_CAVEATS`` lists what is not reproduced."""
    # these modules import this one (HART's layout facts), so they are imported when the route runs
    from hartkit.ar_models.hart_generator import HARTGenerator
    from hartkit.ar_models.hart_text import HARTTextEncoder, check_text_model_folder
    from hartkit.ar_models.hart_transformer import build_hart_transformer, load_hart_state_dict

    get = ar_cfg.get if hasattr(ar_cfg, "get") else lambda k, d=None: getattr(ar_cfg, k, d)
    folder, max_len = None, None
    if text_encoder is None:  # fail on a missing text model before reading 0.7 B weights
        folder, max_len = _text_encoder_folder(ar_cfg)
        check_text_model_folder(folder)
    config, state, weights = read_hart_checkpoint(get("checkpoint"))
    V, Cv, patch_nums = _tokenizer_sizes(tokenizer)
    c = check_hart_config(config)
    if tuple(int(p) for p in c["patch_nums"]) != patch_nums:
        raise ConfigError(f"{weights}: HART's config.json has patch_nums {list(c['patch_nums'])}, the tokenizer "
                          f"{list(patch_nums)} (1024 px: {list(HART_PATCH_NUMS_1024)}); set the tokenizer's scales "
                          "to the checkpoint's")
    if max_len is not None and max_len != int(c["context_token"]):
        raise ConfigError(f"ar.text_encoder.max_len={max_len} but HART's config.json has context_token="
                          f"{c['context_token']} (HART: 300 both); set ar.text_encoder.max_len={c['context_token']}")
    counts = hart_parameter_count(config, V, Cv)
    model = build_hart_transformer(config, V, Cv, "meta")  # no random init of 0.7 B weights
    load_hart_state_dict(model, state, source=str(weights), assign=True)
    model = model.to(device=device, dtype=torch.float32).eval()
    if text_encoder is None:
        text_encoder = HARTTextEncoder(folder, max_len=max_len).to(device)
        if text_encoder.out_dim != int(c["context_dim"]):
            raise ConfigError(f"the text model in {folder} has hidden size {text_encoder.out_dim}, HART's "
                              f"config.json context_dim={c['context_dim']}: use the text model HART was trained "
                              "with (Qwen2-VL-1.5B-Instruct)")
    log.info("loaded HART generator from %s (%.1f M transformer + %.1f M diffusion-head parameters; text encoder "
             "%s); not reproduced: %s", weights, counts["transformer"] / 1e6, counts["diffusion_head"] / 1e6,
             folder or type(text_encoder).__name__, "; ".join(c_.split(":")[0] for c_ in HART_CAVEATS))
    return HARTGenerator(model, text_encoder, TokenSpec.from_tokenizer(tokenizer), source=str(weights)).eval()
