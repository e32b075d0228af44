"""Schema of the `ar` config group (autoregressive generator)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class TextEncoderConfig:
    name: str = "learned"  # learned | clip | hf | none (class conditioning)
    max_len: int = 32
    width: int = 128
    depth: int = 2
    model: Optional[str] = None  # clip: open_clip model name; hf: model id or local path
    pretrained: Optional[str] = None


@dataclass
class DiffusionHeadConfig:
    width: int = 256
    depth: int = 3
    num_train_steps: int = 1000
    num_sample_steps: int = 8
    learn_sigma: bool = False
    latent_scale: float = 1.0
    batch_mul: int = 4
    cfg: float = 1.0


@dataclass
class ARTrainConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 4e-4  # at batch 256; scaled linearly with batch_size
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 100
    grad_clip: float = 2.0
    ema_decay: float = 0.0
    cond_drop_p: float = 0.1
    final_scale_keep: float = 0.2  # hybrid/continuous: fraction of final-scale tokens the diffusion head trains on
    checkpoint_every: int = 500
    log_every: int = 50
    grid_every: int = 0
    amp: bool = True


@dataclass
class SamplingConfig:
    cfg: float = 3.0
    top_k: int = 0
    top_p: float = 0.0
    batch_size: int = 64
    seed: int = 0


@dataclass
class ARConfig:
    name: str = "tiny"
    depth: int = 4
    width: int = 256
    heads: int = 4
    mlp_ratio: float = 4.0
    pos: str = "rope2d"  # rope2d (HART) | absolute (VAR)
    norm: str = "layernorm"  # layernorm (+GELU, VAR) | rmsnorm (+SwiGLU, HART)
    qv_bias: bool = True
    attn_l2_norm: bool = True
    drop_path: float = 0.0
    condition: str = "text"  # text | class
    num_classes: int = 10
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    diffusion: DiffusionHeadConfig = field(default_factory=DiffusionHeadConfig)
    train: ARTrainConfig = field(default_factory=ARTrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
