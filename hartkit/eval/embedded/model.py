"""The embedded evaluator: a tiny CLIP-style model that ships inside hartkit.

It is open_clip's own ``CLIP`` built from a small config that hartkit
registers with open_clip (``hartkit-embedded-clip.json`` next to this file:
embed 64, ViT width 64 / 2 layers / patch 8 on 64 px images, text width 64 /
2 layers / context 48, the standard 49408-token BPE vocabulary). It is trained
by ``python -m hartkit.eval.train_embedded`` on the embedded synthscenes
captions and the bundled photographs, and its weights ship as
``weights.safetensors`` (fp16) with their sha256 in ``weights.sha256``. Loading
checks the hash, so a number computed with it always names the exact weights.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from hartkit.utils.hashing import file_sha256

log = logging.getLogger(__name__)

MODEL_NAME = "hartkit-embedded-clip"
PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_PATH = PACKAGE_DIR / f"{MODEL_NAME}.json"
WEIGHTS_PATH = PACKAGE_DIR / "weights.safetensors"
SHA256_PATH = PACKAGE_DIR / "weights.sha256"
TRAIN_HINT = "python -m hartkit.eval.train_embedded (see hartkit/eval/embedded/README.md)"


class EmbeddedWeightsError(RuntimeError):
    """The embedded evaluator's weights are missing or are not the ones their sha256 names."""


@functools.lru_cache(maxsize=4)
def register_model_config(config_path: str | os.PathLike = CONFIG_PATH) -> str:
    """Make the config at ``config_path`` known to open_clip under its file stem (idempotent)."""
    import open_clip

    name = Path(config_path).stem
    if name not in open_clip.list_models():
        open_clip.add_model_config(Path(config_path))
    return name


def build_model(config_path: str | os.PathLike = CONFIG_PATH) -> torch.nn.Module:
    """A randomly initialised embedded CLIP (for training, or before loading weights).

    ``config_path`` is the shipped config; another open_clip json is only for trying architectures out.
    """
    import open_clip

    name = register_model_config(config_path)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns "initialised randomly", which is what we want here
    try:
        model = open_clip.create_model(name, pretrained=None)
    finally:
        root.setLevel(level)
    return model


def get_tokenizer():
    import open_clip

    register_model_config()
    return open_clip.get_tokenizer(MODEL_NAME)


def expected_sha256(sha_path: str | os.PathLike = SHA256_PATH) -> str:
    sha_path = Path(sha_path)
    if not sha_path.exists():
        raise EmbeddedWeightsError(f"{sha_path} is missing; it records the sha256 of the shipped weights. "
                                   f"Re-create weights and hash with {TRAIN_HINT}")
    return sha_path.read_text().split()[0].strip()


def verify_weights(weights_path: str | os.PathLike, sha_path: str | os.PathLike | None = None) -> str:
    """Return the weights' sha256; raise if the file is missing or does not match ``sha_path``."""
    weights_path = Path(weights_path)
    if not weights_path.exists():
        raise EmbeddedWeightsError(f"embedded evaluator weights not found at {weights_path}. "
                                   f"They ship with hartkit; re-create them with {TRAIN_HINT}, "
                                   f"or point eval.embedded_weights at a copy")
    digest = file_sha256(weights_path)
    if sha_path is None:
        sibling = weights_path.with_suffix(".sha256")
        sha_path = sibling if sibling.exists() else None
    if sha_path is not None:
        expected = expected_sha256(sha_path)
        if digest != expected:
            raise EmbeddedWeightsError(f"{weights_path} has sha256 {digest[:16]}..., but {sha_path} expects "
                                       f"{expected[:16]}...: the file is corrupt or was replaced. Reinstall hartkit "
                                       f"or re-create both files with {TRAIN_HINT}")
    return digest


def load_weights(model: torch.nn.Module, weights_path: str | os.PathLike) -> torch.nn.Module:
    """Load fp16 safetensors weights into the (fp32) model; they must fit it exactly."""
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(str(weights_path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EmbeddedWeightsError(f"{weights_path} does not fit {MODEL_NAME}: missing {missing[:5]}, "
                                   f"unexpected {unexpected[:5]}")
    return model


class EmbeddedEvaluator:
    """Image and text embeddings of the shipped tiny CLIP, plus zero-shot helpers."""

    name = "embedded-clip"

    def __init__(self, weights: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                 model: torch.nn.Module | None = None):
        """Load (and hash-check) ``weights`` (None: the shipped file), or wrap an in-memory ``model``."""
        self.device = torch.device(device)
        if model is not None:
            self.model, self.weights_hash = model, "unsaved"
        else:
            weights_path = Path(weights) if weights else WEIGHTS_PATH
            self.weights_hash = verify_weights(weights_path, SHA256_PATH if weights is None else None)
            self.model = load_weights(build_model(), weights_path)
        self.model.eval().to(self.device)
        self.tokenizer = get_tokenizer()
        cfg = self.model.visual.preprocess_cfg
        size = cfg["size"]  # open_clip gives a ViT's size as a pair, a ModifiedResNet's as one int
        self.image_size = int(size if isinstance(size, int) else size[0])
        # resize protocol (part of every metric's identity): bicubic with antialias to the model's input size,
        # then CLIP's mean/std
        self.resize = f"torch bicubic antialias to {self.image_size} px"
        self._mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images_B3HW_01: torch.Tensor) -> torch.Tensor:
        x = images_B3HW_01.to(self.device, torch.float32)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True,
                              align_corners=False).clamp(0, 1)
        return (x - self._mean) / self._std

    @torch.no_grad()
    def image_features(self, images_B3HW_01: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images_B3HW_01), normalize=normalize)

    @torch.no_grad()
    def text_features(self, prompts: list[str], normalize: bool = False) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return self.model.encode_text(tokens, normalize=normalize)


@functools.lru_cache(maxsize=4)
def _cached_evaluator(weights: str | None, device: str) -> EmbeddedEvaluator:
    return EmbeddedEvaluator(weights, device)


def get_embedded_evaluator(weights: str | os.PathLike | None = None,
                           device: torch.device | str = "cpu") -> EmbeddedEvaluator:
    """One shared evaluator per (weights, device): FD, CLIP score and prompt accuracy reuse it."""
    return _cached_evaluator(str(weights) if weights else None, str(torch.device(device)))
