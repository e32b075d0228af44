"""Text encoders: prompts -> per-token features (B, T, D) + a validity mask (B, T).

- ``learned``: a small transformer over open_clip's BPE tokens (the vocabulary
  ships in the open_clip wheel), trained together with the generator. The
  embedded default: no weights to download.
- ``clip``: a frozen open_clip text tower loaded from a local weights file.
- ``hf``: a frozen Hugging Face ``transformers`` model (HART uses Qwen2-1.5B),
  last hidden state; needs the optional ``hf`` extra.

Frozen encoders are kept outside the generator's module tree, so their
weights are neither trained nor written into the generator's checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hartkit.ar_models.config import TextEncoderConfig
from hartkit.errors import ConfigError

TEXT_ENCODERS = ("learned", "clip", "hf")


def bpe_valid_mask(ids_BT: torch.Tensor) -> torch.Tensor:
    """True up to and including the end-of-text token (the largest id); padding after it is 0 (also a real id)."""
    eot = ids_BT.argmax(dim=1, keepdim=True)
    return torch.arange(ids_BT.shape[1], device=ids_BT.device)[None] <= eot


class LearnedTextEncoder(nn.Module):
    trainable = True

    def __init__(self, width: int, depth: int, heads: int, max_len: int, vocab_buckets: int = 8192):
        super().__init__()
        import open_clip  # heavy (seconds to import): only once this encoder is built

        self.tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=max_len)
        vocab = len(self.tokenizer.encoder) if hasattr(self.tokenizer, "encoder") else 49408
        self.num_rows = vocab_buckets if vocab_buckets > 0 else vocab
        self.out_dim = width
        self.tok_embed = nn.Embedding(self.num_rows, width)
        self.pos_embed = nn.Parameter(torch.randn(max_len, width) * 0.01)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.tok_embed.weight, std=0.02)

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(prompts))

    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.token_ids(prompts).to(self.pos_embed.device)
        valid = bpe_valid_mask(ids)
        x = self.tok_embed(ids % self.num_rows) + self.pos_embed[: ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=~valid)
        return self.norm(x), valid


class ClipTextEncoder(nn.Module):
    """Per-token features of a frozen open_clip text tower (before its pooling and projection)."""

    trainable = False

    def __init__(self, model_name: str | None, pretrained: str | None, max_len: int):
        super().__init__()
        import open_clip  # heavy (seconds to import): only once this encoder is built

        if not pretrained:
            raise ConfigError(
                "ar/text_encoder=clip needs local open_clip weights: set ar.text_encoder.pretrained=/path/to/weights "
                "(and ar.text_encoder.model, e.g. ViT-B-32). hartkit never downloads them."
            )
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"ar.text_encoder.pretrained={pretrained!r} is not a file")
        model = open_clip.create_model(model_name or "ViT-B-32", pretrained=pretrained)
        if not hasattr(model, "token_embedding"):
            raise ConfigError(f"open_clip model {model_name!r} has a custom text tower; use a CLIP-style model")
        self.tokenizer = open_clip.get_tokenizer(model_name or "ViT-B-32")
        self.max_len = max_len
        self.token_embedding, self.positional_embedding = model.token_embedding, model.positional_embedding
        self.transformer, self.ln_final = model.transformer, model.ln_final
        self.register_buffer("attn_mask", model.attn_mask, persistent=False)
        self.out_dim = model.transformer.width
        self.requires_grad_(False).eval()

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(list(prompts)).to(self.token_embedding.weight.device)
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        # CLIP's text attention is causal, so the first max_len outputs do not depend on later tokens
        return x[:, : self.max_len], bpe_valid_mask(ids)[:, : self.max_len]


class HFTextEncoder(nn.Module):
    """Last hidden state of a frozen ``transformers`` model over ``max_len`` padded tokens (HART: Qwen2, 300)."""

    trainable = False

    def __init__(self, model: str | None, pretrained: str | None, max_len: int):
        super().__init__()
        try:
            import transformers  # optional (the hf extra) and heavy
        except ImportError as exc:
            raise ImportError("ar/text_encoder=hf needs transformers: pip install 'hartkit[hf]'") from exc
        path = pretrained or model
        if not path:
            raise ConfigError("ar/text_encoder=hf needs ar.text_encoder.pretrained=/local/model/folder (or .model=<hub id>)")
        local = Path(path).exists()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=local)
        self.model = transformers.AutoModel.from_pretrained(path, local_files_only=local)
        self.max_len = max_len
        self.out_dim = self.model.config.hidden_size
        self.requires_grad_(False).eval()

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_len, truncation=True,
                             return_tensors="pt").to(self.model.device)
        out = self.model(**enc).last_hidden_state
        return out, enc["attention_mask"].bool()


def build_text_encoder(cfg: TextEncoderConfig) -> nn.Module:
    if cfg.name == "learned":
        return LearnedTextEncoder(cfg.width, cfg.depth, cfg.heads, cfg.max_len, cfg.vocab_buckets)
    if cfg.name == "clip":
        return ClipTextEncoder(cfg.model, cfg.pretrained, cfg.max_len)
    if cfg.name == "hf":
        return HFTextEncoder(cfg.model, cfg.pretrained, cfg.max_len)
    raise ConfigError(f"ar.text_encoder.name={cfg.name!r} is unknown; choose one of {TEXT_ENCODERS}")
