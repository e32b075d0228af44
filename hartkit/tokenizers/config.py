"""Schema of the `tokenizer` config group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class AutoencoderConfig:
    ch: int = 16
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 1  # encoder res blocks per level (decoder gets dec_res_blocks)
    dec_res_blocks: int = 1
    attn_resolutions: list[int] = field(default_factory=list)  # latent-side sizes that get attention
    mid_attn: bool = False
    z_channels: int = 16  # Cvae
    dropout: float = 0.0


@dataclass
class QuantizerConfig:
    vocab_size: int = 1024
    patch_nums: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 6, 8])
    num_phi: int = 4  # 0: one Phi per scale, 1: shared, K: partially shared (VAR: 4)
    phi_ratio: float = 0.5
    using_znorm: bool = False  # cosine nearest-code search
    beta: float = 0.25
    phi_on_last_scale: bool = True
    dead_code_reinit: bool = True
    chunk_size: int = 4096  # rows of the distance matrix computed at once on CPU


@dataclass
class TokenizerTrainConfig:
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 50
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # 0 disables weight EMA
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    lpips_weight: float = 0.0  # needs local LPIPS weights
    lpips_weights: Optional[str] = None
    gan_weight: float = 0.0  # PatchGAN discriminator, hinge loss
    gan_start_step: int = 0
    checkpoint_every: int = 200
    log_every: int = 20
    grid_every: int = 0  # 0: only at the end
    amp: bool = True  # autocast on GPU only


@dataclass
class TokenizerConfig:
    name: str = "hybrid"
    kind: str = "hybrid"  # discrete | continuous | hybrid
    preset: str = "small"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    kl_weight: float = 1e-6  # continuous kind
    residual_drop_p: float = 0.5  # hybrid: probability of decoding without the residual
    init_from: Optional[str] = None  # hybrid: start from a trained discrete tokenizer checkpoint
    freeze_quantizer_path: bool = False  # freeze encoder, quant_conv and quantizer (HART)
    checkpoint: Optional[str] = None  # pretrained weights to load (var_pretrained / hart_pretrained)
    checkpoint_format: str = "hartkit"  # hartkit | var | hart
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
