"""CLIP score: how well images match their prompts, through open_clip.

Scaling follows torchmetrics' ``CLIPScore``: the mean over images of
``100 * cos(E_image, E_text)``, clamped at 0 (torchmetrics clamps the mean,
``max(100 * mean cos, 0)``). ``clip_score`` uses a real CLIP (default
ViT-L-14 with OpenAI weights, from a local checkpoint); ``clip_score_embedded``
uses hartkit's shipped tiny CLIP. Model, weights hash and scaling go into the
protocol with every number, because CLIP-score conventions differ between
papers (ViT-B/32 raw cosine vs ViT-L/14 x 100).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from hartkit.eval.embedded import get_embedded_evaluator
from hartkit.eval.features import load_open_clip, to_uint8

SCALING = "100*max(mean cos,0) (torchmetrics)"


def clip_score_from_sum(sum_cos: float, count: int) -> float:
    if count == 0:
        raise ValueError("no image-prompt pairs were scored")
    return max(100.0 * sum_cos / count, 0.0)


class CLIPScorer:
    """``scorer.cosines(images, prompts) -> (B,)`` cosine similarity of each image with its prompt."""

    name: str = ""
    model_name: str = ""
    weights_hash: str | None = None
    scaling: str = SCALING

    def image_embeddings(self, images_uint8_B3HW: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def cosines(self, images_B3HW: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if len(prompts) != images_B3HW.shape[0]:
            raise ValueError(f"{images_B3HW.shape[0]} images but {len(prompts)} prompts")
        img = F.normalize(self.image_embeddings(to_uint8(images_B3HW)).float(), dim=-1)
        txt = F.normalize(self.text_embeddings(list(prompts)).float(), dim=-1)
        return (img * txt).sum(-1).cpu()

    def score(self, images_B3HW: torch.Tensor, prompts: list[str]) -> float:
        cos = self.cosines(images_B3HW, prompts)
        return clip_score_from_sum(float(cos.sum()), cos.numel())

    def describe(self) -> dict[str, str | None]:
        return {"model": self.model_name, "hash": self.weights_hash, "scaling": self.scaling}


class OpenCLIPScorer(CLIPScorer):
    name = "clip_score"

    def __init__(self, model_name: str = "ViT-L-14", pretrained: str | None = None,
                 device: torch.device | str = "cpu"):
        import open_clip  # heavy (seconds to import): only when this scorer is built

        self.device = torch.device(device)
        self.model, self.weights_hash = load_open_clip(model_name, pretrained, "eval.clip_pretrained", self.device)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        cfg = self.model.visual.preprocess_cfg
        size = cfg["size"]
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)
        self.model_name = f"open_clip {model_name}"

    def image_embeddings(self, images_uint8_B3HW: torch.Tensor) -> torch.Tensor:
        x = images_uint8_B3HW.to(self.device, torch.float32) / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True,
                              align_corners=False).clamp(0, 1)
        return self.model.encode_image((x - self._mean) / self._std)

    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(prompts).to(self.device))


class EmbeddedCLIPScorer(CLIPScorer):
    name = "clip_score_embedded"
    model_name = "hartkit embedded-clip"

    def __init__(self, weights: str | os.PathLike | None = None, device: torch.device | str = "cpu"):
        self.evaluator = get_embedded_evaluator(weights, device)
        self.weights_hash = self.evaluator.weights_hash

    def image_embeddings(self, images_uint8_B3HW: torch.Tensor) -> torch.Tensor:
        return self.evaluator.image_features(images_uint8_B3HW.float() / 255.0)

    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        return self.evaluator.text_features(prompts)


def _cfg(eval_cfg, key):
    if eval_cfg is None:
        return None
    return eval_cfg.get(key) if isinstance(eval_cfg, dict) else getattr(eval_cfg, key, None)


@functools.lru_cache(maxsize=4)
def _cached_scorer(name: str, settings: tuple, device: str) -> CLIPScorer:
    s = dict(settings)
    if name == "clip_score":
        return OpenCLIPScorer(s["clip_model"] or "ViT-L-14", s["clip_pretrained"], device)
    return EmbeddedCLIPScorer(s["embedded_weights"], device)


def build_clip_scorer(name: str, eval_cfg=None, device: torch.device | str = "cpu") -> CLIPScorer:
    if name not in ("clip_score", "clip_score_embedded"):
        raise ValueError(f"unknown CLIP score {name!r} in eval.clip_score; known: clip_score, clip_score_embedded")
    settings = tuple((k, _cfg(eval_cfg, k)) for k in ("clip_model", "clip_pretrained", "embedded_weights"))
    return _cached_scorer(name, settings, str(torch.device(device)))
