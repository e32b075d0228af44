"""HART's prompt encoder: a local ``transformers`` folder (HART: Qwen2-VL-1.5B-Instruct) read as HART reads it.

``HARTTextEncoder(folder, max_len=300)(prompts)`` returns ``(context, context_mask, context_position_ids)``, the
three inputs ``HARTTransformer.sample`` takes. What it does, with the facts of mit-han-lab/hart (commit e28a41f)
it rests on:

- loading (sample.py ``main``): ``AutoTokenizer.from_pretrained(text_model_path)`` and
  ``AutoModel.from_pretrained(text_model_path)``, eval mode; here with ``local_files_only=True`` (nothing is
  downloaded) and the weights cast to float32, the dtype ``from_pretrained`` gave under HART's pinned
  transformers 4.42.2 (sample.py then runs it under float16 autocast, app.py loads it in float16: not done here);
- tokens (hart/utils/tools.py ``tokenize_fn``): every prompt alone through the tokenizer with
  ``padding="max_length", max_length=max_token_length, truncation=True`` (sample.py ``--max_token_length``
  300), stacked; the tokenizer's own padding side and special tokens apply;
- mask and positions (``encode_prompts``): ``context_mask = tokens != pad_token_id`` (not the tokenizer's
  attention mask) and ``context_position_ids = cumsum(context_mask, 1) - 1``;
- system prompt (``encode_prompts`` with ``use_llm_system_prompt``, sample.py default True; the text is
  ``llm_system_prompt`` of hart/utils/constants.py, ``HART_SYSTEM_PROMPT`` below): tokenized alone with
  ``padding="longest"`` and the same max length / truncation, repeated over the batch, put before the prompt
  tokens with an all-true mask, run through the model together, and only the prompt tokens' outputs kept;
- features: ``text_model(tokens, attention_mask=mask, output_hidden_states=True).hidden_states[-1]``
  (the model is called without position ids: the library's own), then ``.float()``.

Not reproduced: float16 autocast, and whatever a transformers version other than 4.42.2 computes differently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hartkit.errors import ConfigError

HART_TEXT_MODEL = "Qwen2-VL-1.5B-Instruct"
HART_TEXT_MODEL_SOURCE = "https://huggingface.co/mit-han-lab/Qwen2-VL-1.5B-Instruct"  # HART's README
HART_MAX_TOKEN_LENGTH = 300  # sample.py --max_token_length
# hart/utils/constants.py llm_system_prompt (the literal ends in an escaped newline after "User Prompt:")
HART_SYSTEM_PROMPT = "\n".join([
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for '
    "image generation.",
    "",
    "Examples:",
    "- User Prompt: A cat sleeping -> A small, fluffy white cat curled up in a round shape, sleeping peacefully on "
    "a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> A bustling city street scene at dusk, featuring glowing street lamps, a "
    "diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.",
    "",
    "Please generate only the enhanced description for the prompt below and DO NOT include any additional "
    'sentences. Start your response with "Enhanced Prompt:".',
    "",
    "User Prompt:",
    "",
])


def text_model_help(folder: Any) -> str:
    return (f"HART's text encoder is read from a local transformers folder (got {str(folder)!r}): download "
            f"{HART_TEXT_MODEL} ({HART_TEXT_MODEL_SOURCE}, as HART's README says; nothing is downloaded for you), "
            "e.g. to checkpoints/Qwen2-VL-1.5B-Instruct, and pass "
            "ar.text_encoder.pretrained=checkpoints/Qwen2-VL-1.5B-Instruct. The folder must hold config.json, the "
            "tokenizer files (tokenizer.json / tokenizer_config.json, or vocab.json + merges.txt) and the weights "
            "(*.safetensors or pytorch_model*.bin)")


def check_text_model_folder(folder: str | os.PathLike | None) -> Path:
    """The folder, or FileNotFoundError saying what to put where."""
    if folder is None or str(folder) in ("", "???", "None"):
        raise FileNotFoundError(text_model_help(folder))
    p = Path(folder).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is not a folder. " + text_model_help(folder))
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {p}. " + text_model_help(folder))
    return p


class HARTTextEncoder(nn.Module):
    """Frozen prompt encoder of HART (module docstring). ``forward(prompts)`` -> (context (B, max_len, D) float32,
    context_mask (B, max_len) bool, context_position_ids (B, max_len) int64)."""

    trainable = False

    def __init__(self, folder: str | os.PathLike | None, max_len: int = HART_MAX_TOKEN_LENGTH,
                 use_system_prompt: bool = True, system_prompt: str = HART_SYSTEM_PROMPT):
        super().__init__()
        path = check_text_model_folder(folder)
        try:
            import transformers  # the optional hf extra
        except ImportError as exc:
            raise ImportError("HART's text encoder needs transformers: pip install 'hartkit[hf]'") from exc
        self.folder = path
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if self.tokenizer.pad_token_id is None:
            raise ConfigError(f"the tokenizer in {path} has no pad token; HART pads the prompts to max_length "
                              "and masks the pad tokens (Qwen2's: <|endoftext|>)")
        self.model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).to(torch.float32)
        self.max_len, self.use_system_prompt, self.system_prompt = int(max_len), bool(use_system_prompt), system_prompt
        cfg = self.model.config
        cfg = getattr(cfg, "text_config", None) or cfg  # a vision-language config keeps its LLM's sizes there
        self.out_dim = int(cfg.hidden_size)
        self.requires_grad_(False).eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _ids(self, texts: list[str], padding: str) -> torch.Tensor:
        """``tokenize_fn``: one tokenizer call per text, the rows stacked."""
        rows = [self.tokenizer(t, return_tensors="pt", padding=padding, max_length=self.max_len,
                               truncation=True).input_ids[0] for t in texts]
        return torch.stack(rows)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens (B, max_len), mask = tokens != pad, positions = cumsum(mask) - 1), as ``encode_prompts``."""
        ids = self._ids(list(prompts), "max_length")
        if ids.shape[1] != self.max_len:
            raise ConfigError(f"the tokenizer in {self.folder} gave {ids.shape[1]} tokens with "
                              f"padding='max_length', max_length={self.max_len}")
        mask = ids != self.tokenizer.pad_token_id
        return ids, mask, torch.cumsum(mask, dim=1) - 1

    def system_tokens(self) -> torch.Tensor:
        """(S,) tokens of the system prompt (``padding="longest"``, truncated to max_len)."""
        return self._ids([self.system_prompt], "longest")[0]

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = self.device
        ids, mask, pos = (t.to(device) for t in self.tokenize(prompts))
        if not self.use_system_prompt:
            h = self.model(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        else:
            sys_ids = self.system_tokens().to(device)[None].repeat(ids.shape[0], 1)
            sys_mask = torch.ones_like(mask)[:, : sys_ids.shape[1]]
            out = self.model(torch.cat([sys_ids, ids], dim=1), attention_mask=torch.cat([sys_mask, mask], dim=1),
                             output_hidden_states=True)
            h = out.hidden_states[-1][:, sys_ids.shape[1]:]
        return h.float(), mask, pos
