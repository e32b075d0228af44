"""Schema of the `eval` config group (protocols, feature extractors, local weights).

Every number is stored with its protocol (see hartkit/eval/protocols.py); only
Inception-v3 Fréchet distances are called ``fid`` (``rfid`` for
reconstructions), any other feature space names itself (``fd_embedded``,
``fd_clip``; ``rfd_embedded`` ...). Nothing here downloads: weights come from
local paths (or clean-fid's cache for Inception), the embedded evaluator ships
in the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class EvalConfig:
    protocol: str = "embedded"  # embedded | mjhq30k | imagenet256 (hartkit.eval.protocols)
    num_images: int = 500  # images scored per protocol (generation: prompts, one image each)
    batch_size: int = 64
    resolution: Optional[int] = None  # comparison resolution; None: the data resolution
    resize_filter: str = "bicubic"  # PIL filter that brings reference images to `resolution`
    # Fréchet-distance feature spaces: fd_embedded | fid (Inception-v3, clean-fid) | fd_clip | fd_dinov2 (reserved)
    fd_features: list[str] = field(default_factory=lambda: ["fd_embedded"])
    clip_score: list[str] = field(default_factory=lambda: ["clip_score_embedded"])  # clip_score_embedded | clip_score
    prompt_accuracy: bool = True  # zero-shot main-object shape/colour check (synthscenes-grammar prompts)
    inception_weights: Optional[str] = None  # inception-2015-12-05.pt (file or folder); None: clean-fid's cache (/tmp)
    inception_resize: str = "clean"  # fid: clean (clean-fid clean mode) | legacy_tensorflow (as ADM's evaluator)
    clip_model: str = "ViT-L-14"  # open_clip model of `clip_score`
    clip_pretrained: Optional[str] = None  # local checkpoint file; an open_clip tag ('openai') lets open_clip download
    fd_clip_model: str = "ViT-B-32"
    fd_clip_pretrained: Optional[str] = None  # local checkpoint file (or an open_clip tag, as above)
    embedded_weights: Optional[str] = None  # None: the weights shipped in hartkit (sha256-checked)
    stats_cache: str = "artifacts/fd_stats"  # cached reference statistics (npz, one per protocol + extractor)
    per_category: bool = True  # also <metric>/<category> numbers (FD only where n >= feature dims; KID always)
    baselines: bool = True  # also score floor / ceiling / matched-budget baselines on the same images or prompts
    bootstrap: int = 1000  # bootstrap resamples for the 95% intervals over images (0: no intervals)
    bootstrap_fd: int = 200  # resamples for Fréchet-distance intervals (one eigendecomposition each)
    # imagenet256 (hartkit/eval/imagenet.py): class-conditional samples against a reference
    reference: Optional[str] = None  # ADM reference batch .npz (mu/sigma, arr_0) or an image folder; None: data's val
    samples_per_class: int = 50  # generated images per class (VAR / ADM: 50 x 1000 = 50,000)
    inception_score: bool = False  # Inception Score of the samples (needs fid: Inception's classifier layer)
    precision_recall: bool = False  # Kynkaanniemi et al. precision / recall of the first fd_features space
    precision_recall_k: int = 3  # k of the k-NN manifold radii (ADM: 3)
