"""Schema of the `tokenizer` config group.

Sizes come from two nested groups so they can be swapped independently:
``tokenizer/autoencoder=small|var`` and ``tokenizer/quantizer=small|var``
(conf/tokenizer/autoencoder/*.yaml, conf/tokenizer/quantizer/*.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hartkit.engine.config import TrainConfig
from hartkit.utils.identity import setting


@dataclass
class AutoencoderConfig:
    ch: int = 16
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])  # len(ch_mult) - 1 stride-2 downsamplings
    num_res_blocks: int = 1  # encoder res blocks per level (VAR: 2)
    dec_res_blocks: int = 1  # decoder res blocks per level (VAR: 3)
    attn_levels: list[int] = field(default_factory=list)  # level indices with attention after each block (-1: last)
    mid_attn: bool = False  # attention in the middle block
    z_channels: int = 16  # Cvae
    dropout: float = 0.0
    norm_groups: int = 8  # GroupNorm groups (VAR: 32); narrower layers use the largest divisor
    patch_shortcut: bool = False  # linear patch path around encoder and decoder (autoencoder.py; not in VAR)


@dataclass
class QuantizerConfig:
    vocab_size: int = 1024
    patch_nums: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 6, 8])  # last = latent side
    num_phi: int = 4  # 0: one Phi per scale, 1: shared, K: partially shared (VAR: 4)
    phi_ratio: float = 0.5
    using_znorm: bool = False  # cosine nearest-code search
    beta: float = 0.25
    # Phi at the last scale. None: by kind, discrete true (VAR), hybrid false (HART: its
    # f_to_idxBl_and_frest and its sampler skip Phi there, so each residual token depends only on its own code)
    phi_on_last_scale: Optional[bool] = None
    dead_code_reinit: bool = True
    dead_code_every: int = 25  # training steps between re-initialisations
    dead_code_threshold: float = 0.01  # EMA hits per step (summed over scales) below which a code is dead
    chunk_size: int = 4096  # rows of the distance matrix computed at once


@dataclass
class TokenizerTrainConfig(TrainConfig):
    # default embedded run: 2000 steps at batch 8 (16k images): 4x the updates of batch 32 at the same images
    # (+0.6 dB, results/research_log.md); the tokenizer stage took 5.8 min on 2 idle CPU cores (hybrid).
    # steps, batch, optimizer, schedule, clipping, EMA, intervals: hartkit.engine.config.TrainConfig's defaults
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    lpips_weight: float = 0.0  # needs local LPIPS weights (lpips_weights)
    lpips_weights: Optional[str] = None  # local torchmetrics/lpips-compatible backbone+linear weights
    gan_weight: float = 0.0  # PatchGAN discriminator, hinge loss, adaptive weight
    gan_start_step: int = 0
    disc_ch: int = 32
    disc_layers: int = 2
    disc_lr: Optional[float] = None  # None: lr
    grid_images: int = setting(default=8)
    cpu_amp: Any = "auto"  # bf16 autocast on CPU: true | false | auto (on where the CPU has native bf16)


@dataclass
class TokenizerConfig:
    name: str = "hybrid"
    kind: str = "hybrid"  # discrete | continuous | hybrid
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    kl_weight: float = 1e-6  # continuous kind
    residual_drop_p: float = 0.5  # hybrid: probability of decoding without the residual in a training step
    init_from: Optional[str] = None  # hybrid: start from a trained discrete tokenizer (artifact dir or checkpoint)
    freeze_quantizer_path: bool = False  # freeze encoder, quant_conv and quantizer (HART)
    checkpoint: Optional[str] = None  # pretrained weights to load instead of training (var_pretrained / hart_pretrained)
    checkpoint_format: str = "hartkit"  # hartkit | var | hart
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
