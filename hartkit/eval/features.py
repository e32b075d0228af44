"""Feature extractors for Fréchet distances, behind one interface.

Each extractor is named after its feature space, and only Inception-v3 is
called ``fid``:

- ``fid``: Inception-v3 (the 2015-12-05 TF weights as TorchScript) loaded by
  clean-fid's own ``InceptionV3W`` and fed with clean-fid's ``clean`` resize
  (PIL bicubic with antialias to 299 on float channels); ``eval.inception_resize=legacy_tensorflow``
  uses clean-fid's ``legacy_tensorflow`` mode instead (the network's own TensorFlow-like resize, as
  ADM's evaluator). ``class_logits`` gives the logits the Inception Score uses.
- ``fd_clip``: open_clip image tower (ViT-B-32 / ViT-L-14 ...), unnormalised
  image embeddings as clean-fid's ``clip_vit_b_32`` uses them.
- ``fd_embedded``: the embedded evaluator that ships with hartkit (no download): its 64-d image
  embedding, on a sphere of radius 10 (training uses only its direction; a free length added noise).
- ``fd_dinov2``: reserved name; not configured in this version.

All extractors take images (B, 3, H, W) as uint8 or float in [0, 1]. Float
images are first quantised to uint8 (round(255 x)), exactly as saving them as
PNG would, so scoring images in memory and scoring the same images saved to a
folder give the same numbers. No extractor downloads anything: weights come
from a local path or a documented cache, and a missing file is an error that
names it and where to put it.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hartkit.eval.embedded import get_embedded_evaluator
from hartkit.utils.hashing import file_sha256

log = logging.getLogger(__name__)

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


class FeatureExtractorError(RuntimeError):
    """A feature extractor cannot be built (missing weights, unknown name); the message says how to fix it."""


def to_uint8(images_B3HW: torch.Tensor) -> torch.Tensor:
    """Quantise images to uint8 as a PNG writer would: round(255 * clamp(x, 0, 1))."""
    if images_B3HW.ndim != 4 or images_B3HW.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images_B3HW.shape)}")
    if images_B3HW.dtype == torch.uint8:
        return images_B3HW
    x = images_B3HW.detach().float()
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or Inf")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


class FeatureExtractor:
    """Common interface: ``extractor(images_B3HW) -> (B, dim)`` float features."""

    name: str = ""  # metric family, e.g. "fid", "fd_embedded"
    model_name: str = ""  # e.g. "inception-v3 (clean-fid torchscript)"
    weights_hash: str | None = None  # sha256 of the weights file
    resize: str = ""  # how images are brought to the network's input size
    dim: int = 0

    def features(self, images_uint8_B3HW: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        return self.features(to_uint8(images_B3HW)).float().cpu()

    def describe(self) -> dict[str, str | None]:
        return {"model": self.model_name, "hash": self.weights_hash, "resize": self.resize}


# ----------------------------------------------------------------------------------------------
# fid: Inception-v3 through clean-fid


def clean_fid_cache_dir() -> Path:
    """Where clean-fid itself caches the Inception weights (hard-coded in cleanfid.features)."""
    return Path("./" if platform.system() == "Windows" else "/tmp")


def find_inception_weights(configured: str | os.PathLike | None = None) -> Path:
    """The Inception TorchScript file: ``eval.inception_weights`` (file or folder) or clean-fid's cache."""
    if configured:
        path = Path(configured).expanduser()
        candidate = path / INCEPTION_FILE if path.is_dir() else path
        if not candidate.is_file():
            raise FeatureExtractorError(
                f"eval.inception_weights={configured!s} does not contain {INCEPTION_FILE}. "
                f"Download {INCEPTION_URL} once and set eval.inception_weights to the file or its folder")
        if candidate.name != INCEPTION_FILE:
            raise FeatureExtractorError(
                f"eval.inception_weights={configured!s}: clean-fid's loader looks the weights up by the name "
                f"{INCEPTION_FILE}; rename the file (or link it) to that name")
        return candidate
    for folder in dict.fromkeys([clean_fid_cache_dir(), Path(tempfile.gettempdir())]):
        if (folder / INCEPTION_FILE).is_file():
            return folder / INCEPTION_FILE
    raise FeatureExtractorError(
        f"Inception-v3 weights {INCEPTION_FILE} not found (looked in clean-fid's cache "
        f"{clean_fid_cache_dir() / INCEPTION_FILE}). hartkit never downloads them: fetch {INCEPTION_URL} once "
        f"and put it at {clean_fid_cache_dir() / INCEPTION_FILE}, or set eval.inception_weights=/path/to/{INCEPTION_FILE}")


INCEPTION_RESIZES = {
    "clean": "clean-fid clean: PIL bicubic antialias to 299 on float channels",
    "legacy_tensorflow": ("clean-fid legacy_tensorflow: the TorchScript's own bilinear resize to 299 inside the network, "
                          "which emulates TensorFlow's graph (as in ADM's evaluator)"),
}


class InceptionFID(FeatureExtractor):
    """Inception-v3 pool features (2048-d), resized to 299 the way ``mode`` says (``eval.inception_resize``).

    ``clean`` (default): clean-fid's ``clean`` mode (PIL bicubic antialias outside the network).
    ``legacy_tensorflow``: clean-fid's ``legacy_tensorflow`` mode, the images go into the network at
    their own size and its TorchScript forward resizes them as TensorFlow's Inception graph does, which
    is what ADM's evaluator (and so VAR's and HART's ImageNet numbers) runs. Both modes use the same
    weights; their numbers differ slightly and are only comparable within one mode.
    """

    name = "fid"
    model_name = "inception-v3 (clean-fid torchscript)"
    dim = 2048

    def __init__(self, weights: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                 mode: str = "clean"):
        # heavy and only for fid: clean-fid is imported when this extractor is built
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer

        if mode not in INCEPTION_RESIZES:
            raise FeatureExtractorError(f"eval.inception_resize={mode!r} is unknown; use one of {sorted(INCEPTION_RESIZES)}")
        path = find_inception_weights(weights)
        self.device = torch.device(device)
        self.mode = mode
        self.resize = INCEPTION_RESIZES[mode]
        self.weights_hash = file_sha256(path)
        # clean-fid's own loader; download=False so that a missing file can never trigger a fetch
        self.model = InceptionV3W(str(path.parent), download=False,
                                  resize_inside=mode == "legacy_tensorflow").to(self.device).eval()
        self._resize = build_resizer("clean")

    def features(self, images_uint8_B3HW: torch.Tensor) -> torch.Tensor:
        if self.mode == "legacy_tensorflow":  # float [0, 255] at the image's own size, as clean-fid feeds it
            return self.model(images_uint8_B3HW.to(self.device, torch.float32))
        arrays = images_uint8_B3HW.permute(0, 2, 3, 1).cpu().numpy()
        resized = np.stack([self._resize(a) for a in arrays])  # (B, 299, 299, 3) float32 in [0, 255]
        x = torch.from_numpy(resized).permute(0, 3, 1, 2).contiguous().to(self.device)
        return self.model(x)

    @torch.no_grad()
    def class_logits(self, feats_BD: torch.Tensor) -> torch.Tensor:
        """The 1008 ImageNet logits of pool features without the output bias (the Inception Score's input:
        improved-GAN's and ADM's ``pool_3 @ softmax/logits`` weights, StyleGAN's ``no_output_bias=True``)."""
        output = getattr(self.model.base, "output", None)
        if output is None:
            raise FeatureExtractorError(f"the Inception weights (sha256 {self.weights_hash[:12]}) have no 'output' "
                                        f"classifier layer; the Inception Score needs the full {INCEPTION_FILE}")
        weight = output.weight.detach().to(self.device, torch.float64)  # 50,000 x 2048 x 1008: on the GPU if any
        return (feats_BD.to(self.device, torch.float64) @ weight.T).cpu()


# ----------------------------------------------------------------------------------------------
# open_clip image towers


def load_open_clip(model_name: str, pretrained: str | None, config_key: str, device: torch.device):
    """An open_clip model from a local checkpoint (or an explicitly configured open_clip tag)."""
    import open_clip  # heavy (seconds to import): only when a CLIP model is loaded

    if not pretrained:
        raise FeatureExtractorError(
            f"{model_name} needs weights and hartkit never downloads them by default: set {config_key}="
            f"/path/to/open_clip_{model_name}.bin (a local checkpoint file); setting it to an open_clip tag such as "
            f"'openai' lets open_clip use its own cache/download")
    if pretrained in open_clip.list_pretrained_tags_by_model(model_name):
        weights_hash = f"open_clip:{model_name}/{pretrained}"
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FeatureExtractorError(f"{config_key}={pretrained}: no such file, and not an open_clip tag of {model_name} "
                                        f"({open_clip.list_pretrained_tags_by_model(model_name)})")
        weights_hash = file_sha256(path)
        pretrained = str(path)
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, require_pretrained=True)
    except RuntimeError as exc:
        raise FeatureExtractorError(f"could not load open_clip {model_name} weights {pretrained!r} ({exc}); offline, "
                                    f"set {config_key}=/path/to/a/local/checkpoint") from exc
    return model.eval().to(device), weights_hash


class OpenCLIPImageFeatures(FeatureExtractor):
    """Unnormalised open_clip image embeddings (as clean-fid's CLIP features)."""

    name = "fd_clip"

    def __init__(self, model_name: str, pretrained: str | None, device: torch.device | str = "cpu",
                 config_key: str = "eval.fd_clip_pretrained"):
        self.device = torch.device(device)
        self.model, self.weights_hash = load_open_clip(model_name, pretrained, config_key, self.device)
        cfg = self.model.visual.preprocess_cfg
        self.image_size = int(cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"])
        self._mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)
        self.model_name = f"open_clip {model_name}"
        self.resize = f"torch bicubic antialias to {self.image_size} px (square input, no crop)"
        self.dim = int(self.model.visual.output_dim)

    def preprocess(self, images_uint8_B3HW: torch.Tensor) -> torch.Tensor:
        x = images_uint8_B3HW.to(self.device, torch.float32) / 255.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True,
                              align_corners=False).clamp(0, 1)
        return (x - self._mean) / self._std

    def features(self, images_uint8_B3HW: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images_uint8_B3HW))


class EmbeddedImageFeatures(FeatureExtractor):
    """Unnormalised image embeddings (64-d) of hartkit's shipped embedded evaluator."""

    name = "fd_embedded"
    model_name = "hartkit embedded-clip"

    def __init__(self, weights: str | os.PathLike | None = None, device: torch.device | str = "cpu"):
        self.evaluator = get_embedded_evaluator(weights, device)
        self.weights_hash = self.evaluator.weights_hash
        self.resize = self.evaluator.resize
        self.dim = int(self.evaluator.model.visual.output_dim)

    def features(self, images_uint8_B3HW: torch.Tensor) -> torch.Tensor:
        return self.evaluator.image_features(images_uint8_B3HW.float() / 255.0)


def _not_configured_dinov2(eval_cfg, device):
    raise FeatureExtractorError(
        "fd_dinov2 is a reserved feature space that this version of hartkit does not configure yet "
        "(it would need local DINOv2 weights); use fd_embedded, fd_clip or fid in eval.fd_features")


def _cfg(eval_cfg, key, default=None):
    if eval_cfg is None:
        return default
    return getattr(eval_cfg, key, default) if not isinstance(eval_cfg, dict) else eval_cfg.get(key, default)


EXTRACTORS = {
    "fid": lambda cfg, device: InceptionFID(_cfg(cfg, "inception_weights"), device,
                                            _cfg(cfg, "inception_resize") or "clean"),
    "fd_clip": lambda cfg, device: OpenCLIPImageFeatures(_cfg(cfg, "fd_clip_model") or "ViT-B-32",
                                                          _cfg(cfg, "fd_clip_pretrained"), device),
    "fd_embedded": lambda cfg, device: EmbeddedImageFeatures(_cfg(cfg, "embedded_weights"), device),
    "fd_dinov2": _not_configured_dinov2,
}


@functools.lru_cache(maxsize=8)
def _cached_extractor(name: str, settings: tuple, device: str) -> FeatureExtractor:
    return EXTRACTORS[name](dict(settings), torch.device(device))


def build_feature_extractor(name: str, eval_cfg=None, device: torch.device | str = "cpu") -> FeatureExtractor:
    """The extractor registered as ``name``; one instance per (name, weights settings, device)."""
    if name not in EXTRACTORS:
        raise FeatureExtractorError(f"unknown feature space {name!r} in eval.fd_features; known: {sorted(EXTRACTORS)}")
    keys = ("inception_weights", "inception_resize", "fd_clip_model", "fd_clip_pretrained", "embedded_weights")
    settings = tuple((k, _cfg(eval_cfg, k)) for k in keys)
    return _cached_extractor(name, settings, str(torch.device(device)))


def clear_extractor_cache() -> None:
    """Forget built extractors (e.g. after replacing a weights file)."""
    _cached_extractor.cache_clear()
