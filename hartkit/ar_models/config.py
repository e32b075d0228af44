"""Schema of the `ar` config group (autoregressive generator).

Presets live in ``conf/ar/*.yaml``; the text encoder is a nested group
``conf/ar/text_encoder/{learned,clip,hf}.yaml`` (``ar/text_encoder=clip`` on the
command line). The sizes of the token sequence (scales, vocabulary, latent
channels) are not set here: they come from the tokenizer the generator sits on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hartkit.engine.config import TrainConfig
from hartkit.utils.identity import hashed_when_set, setting


@dataclass
class TextEncoderConfig:
    name: str = "learned"  # learned | clip | hf
    max_len: int = 40  # prompt tokens (padded / truncated; synthscenes prompts: mean 26, max 42); HART: 300
    # learned: width/depth/heads of the small transformer trained with the generator.
    # clip / hf: output width of the frozen model (checked when it loads; used for meta-device sizing).
    width: int = 128
    depth: int = 2
    heads: int = 4
    # learned: BPE ids are folded into this many embedding rows (id % buckets) so a tiny model does not
    # carry open_clip's full 49408-row table; 0 keeps the full vocabulary.
    vocab_buckets: int = 8192
    model: Optional[str] = None  # clip: open_clip model name (e.g. ViT-B-32); hf: model id or local folder
    pretrained: Optional[str] = None  # clip: local weights file; hf: local folder (overrides model)


@dataclass
class DiffusionHeadConfig:
    width: int = 256
    depth: int = 3  # AdaLN residual blocks (HART: 6 x 1024)
    num_train_steps: int = 1000  # cosine schedule
    num_sample_steps: int = 8  # evenly respaced ancestral (DDPM) steps at sampling
    learn_sigma: bool = False  # also predict the variance (IDDPM hybrid loss); HART: true
    latent_scale: float = 1.0  # targets are multiplied by this before diffusion (HART: 0.6)
    batch_mul: int = 4  # each token is trained this many times per step with fresh t / noise
    cfg: Optional[float] = None  # guidance of the diffusion head; None: the same ramp as the logits


@dataclass
class ARTrainConfig(TrainConfig):
    # default embedded run: 2000 steps at batch 16 (32k sequences, 3x what the previous width-256, 300 x 32
    # default saw) of the width-128 tiny preset; the hybrid's took 11 min on 2 idle CPU cores (results/README.md).
    # The rest (steps, betas, warmup, schedule, EMA, intervals): hartkit.engine.config.TrainConfig's defaults
    batch_size: int = 16
    lr: float = 1.6e-2  # at batch 256; scaled linearly with batch_size (1e-3 at 16; VAR: 1e-4 at paper scale)
    weight_decay: float = 0.05
    grad_clip: float = 2.0
    log_every: int = setting(default=50)
    cond_drop_p: float = 0.1  # per-sample condition dropout (null class / empty prompt) for CFG
    # Which last-scale tokens a training step keeps (dropped ones leave the transformer pass and every loss).
    # One rule for every kind, drawn first from the step's generator, so discrete, hybrid and continuous
    # generators trained with the same seed see the same tokens (README "Training details"):
    #   hart: HART's token subsample (HARTForT2I.random_masking): mask rate r ~ N(1, 0.25) truncated to
    #         [0.5, 1], min(ceil(n r), n - final_scale_min_keep) of the n last-scale tokens dropped, in a
    #         random order per image; at an 8x8 last scale exactly 32 of 64 stay
    #   all: keep every token (VAR's uniform loss)
    #   fraction: keep round(final_scale_keep * n) per image (not HART's rule)
    final_scale_subset: str = "hart"
    final_scale_min_keep: int = 32  # hart: at least this many last-scale tokens stay (HART: 32)
    final_scale_keep: float = 0.2  # fraction rule only
    # hybrid: the last-scale codes the residual diffusion head is trained with.
    #   sampled: HART (HARTForT2I.forward): sampled from the model's own logits under no_grad (top-k/top-p
    #            below); target = latent before the last scale - embedding(sampled code)
    #   teacher: the ground-truth codes and residual (a departure from HART)
    residual_codes: str = "sampled"
    residual_top_k: Optional[int] = None  # None: HART's 600 of 4096 codes scaled to the vocabulary (150 of 1024)
    residual_top_p: float = 0.96  # HART: 0.96
    # hybrid: True stops the diffusion loss's gradient at the transformer's hidden states, so the transformer
    # learns from the cross-entropy alone (a research option, not HART's; None: HART, the gradient flows)
    detach_diffusion_condition: Optional[bool] = hashed_when_set(default=None)
    # Gaussian noise on the teacher-forced inputs (the coarser scales' features), std = this times the batch's
    # std of those inputs; the targets stay the real codes. A research option against exposure bias: under
    # teacher forcing a generator can copy an object's faint trace from the real coarse scales instead of
    # placing it from the prompt, a trace its own sampled coarse scales lack (research_log.md, ninth session).
    # None: off (in artifact hashes only when set)
    input_noise: Optional[float] = hashed_when_set(default=None)
    grid_size: int = setting(default=16)  # images in the sample grid


@dataclass
class SamplingConfig:
    cfg: float = 3.0  # guidance at the last scale; ramps linearly from 0 at the first (t = cfg * k / (K-1))
    top_k: int = 0  # 0: off
    top_p: float = 0.0  # 0: off
    batch_size: int = 64
    seed: int = 0
    diffusion_steps: Optional[int] = None  # None: ar.diffusion.num_sample_steps
    temperature: float = 1.0  # divides the guided logits (discrete / hybrid codes)
    diffusion_temperature: float = 1.0  # scales the noise of the diffusion head's ancestral steps (MAR)
    # efficiency report of gen_eval: latency at batch 1, throughput at the largest batch <= this that fits
    throughput_max_batch: int = 64
    measure_efficiency: bool = True


@dataclass
class ARConfig:
    name: str = "tiny"
    depth: int = 4
    width: int = 256
    heads: int = 4
    mlp_ratio: float = 4.0
    pos: str = "rope2d"  # rope2d (HART) | absolute (VAR)
    norm: str = "layernorm"  # layernorm (+GELU, VAR) | rmsnorm (+SwiGLU, HART)
    qv_bias: bool = True  # VAR: separate learned q and v biases (no k bias)
    attn_l2_norm: bool = True  # VAR: unit q/k with a learned per-head scale
    drop_path: float = 0.0
    condition: str = "text"  # text | class
    num_classes: int = 10  # class conditioning (a null class is added for CFG)
    # official VAR weights (var_d16.pth ... var_d30.pth, ar=var_d*): loaded instead of training
    # (hartkit/ar_models/var_official.py); None trains from scratch
    checkpoint: Optional[str] = hashed_when_set(default=None)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    diffusion: DiffusionHeadConfig = field(default_factory=DiffusionHeadConfig)
    train: ARTrainConfig = field(default_factory=ARTrainConfig)
    # sampling happens after training: no sampling key changes the generator's weights
    sampling: SamplingConfig = setting(default_factory=SamplingConfig)
