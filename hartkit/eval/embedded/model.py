"""The embedded evaluator: a small image-text model with a per-cell scene reader, shipped inside hartkit.

Two parts, one file of weights (``weights.safetensors``, fp16, sha256 in
``weights.sha256``; loading checks the hash, so a number computed with it
always names the exact weights), architecture in ``hartkit-embedded-clip.json``:

- ``CellNet``, the image tower: a small fully convolutional CNN on 64 px
  images (stride 4), whose feature map is average-pooled onto the 3 x 3 object
  grid of synthscenes (a ``cell_window`` x ``cell_window`` patch per cell). A
  cell reader shared by all nine cells turns each patch into a cell feature and
  reads it out as shape-or-empty, colour and size logits (a tiny detector: the
  grid cell is the anchor). The 64-d image embedding is a projection of the nine
  cell features (in grid order) plus the globally pooled map (the background),
  scaled to length ``embedding_radius`` (10; unit length with ``normalize``).
- a CLIP text tower (open_clip's ``TextTransformer``: width 64, 2 layers,
  context 48, the standard 49408-token BPE vocabulary) into the same 64-d space.

It is trained by ``python -m hartkit.tools.train_embedded`` (cross-entropy on
every cell's layout + symmetric InfoNCE between the embeddings); see README.md.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from hartkit.utils.hashing import file_sha256

log = logging.getLogger(__name__)

MODEL_NAME = "hartkit-embedded-clip"
PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_PATH = PACKAGE_DIR / f"{MODEL_NAME}.json"
WEIGHTS_PATH = PACKAGE_DIR / "weights.safetensors"
SHA256_PATH = PACKAGE_DIR / "weights.sha256"
TRAIN_HINT = "python -m hartkit.tools.train_embedded (see hartkit/eval/embedded/README.md)"


class EmbeddedWeightsError(RuntimeError):
    """The embedded evaluator's weights are missing or are not the ones their sha256 names."""


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CellNet(nn.Module):
    """Image tower: conv trunk -> per-grid-cell features -> (layout logits, image embedding)."""

    def __init__(self, embed_dim: int, widths: list[int], grid: int = 3, cell_window: int = 4, cell_dim: int = 128,
                 embed_hidden: int = 256, shapes: int = 10, colors: int = 8, sizes: int = 3):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.trunk = nn.Sequential(
            _conv(3, w0), _conv(w0, w1, 2), _Residual(w1), _conv(w1, w2, 2), _Residual(w2), _conv(w2, w3),
            _Residual(w3),
        )
        self.grid, self.window = grid, cell_window
        self.cell = nn.Sequential(nn.Linear(w3 * cell_window**2, cell_dim), nn.ReLU(inplace=True),
                                  nn.Linear(cell_dim, cell_dim), nn.ReLU(inplace=True))
        # per cell: shape logits with "empty" as class 0, then colour, then size (the last two mean something
        # only where the cell is occupied)
        self.head_sizes = (shapes + 1, colors, sizes)
        self.head = nn.Linear(cell_dim, sum(self.head_sizes))
        self.embed = nn.Sequential(nn.Linear(grid * grid * cell_dim + w3, embed_hidden), nn.ReLU(inplace=True),
                                   nn.Linear(embed_hidden, embed_dim))
        self.output_dim = embed_dim

    def cells(self, x_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cell features B x cells x cell_dim in row-major grid order, pooled map B x C)."""
        f = self.trunk(x_B3HW.contiguous(memory_format=torch.channels_last))
        g, w = self.grid, self.window
        p = F.adaptive_avg_pool2d(f, g * w)  # B, C, g*w, g*w
        B, C = p.shape[:2]
        p = p.reshape(B, C, g, w, g, w).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * w * w)
        return self.cell(p), f.mean((2, 3))

    def forward(self, x_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(layout logits B x cells x sum(head_sizes), unnormalised embedding B x D)."""
        cell_BPD, pooled_BC = self.cells(x_B3HW)
        emb = self.embed(torch.cat([cell_BPD.flatten(1), pooled_BC], 1))
        return self.head(cell_BPD), emb


class EmbeddedModel(nn.Module):
    """``CellNet`` image tower + CLIP text tower sharing one embedding space, and a learned logit scale."""

    def __init__(self, cfg: dict):
        super().__init__()
        from open_clip.transformer import TextTransformer  # heavy (open_clip): only when the model is built

        self.cfg = cfg
        self.visual = CellNet(cfg["embed_dim"], **cfg["vision"])
        t = cfg["text"]
        self.text = TextTransformer(context_length=t["context_length"], vocab_size=t["vocab_size"], width=t["width"],
                                    heads=t["heads"], layers=t["layers"], output_dim=cfg["embed_dim"])
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def radius(self) -> float:
        return float(self.cfg.get("embedding_radius", 10.0))

    def layout_and_embedding(self, x_B3HW: torch.Tensor, normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(layout logits, embedding): unit-norm with ``normalize``, else on the sphere of radius ``radius``.

        Training only ever sees the unit-norm embedding (cosines), so the raw projection's length is an
        untrained degree of freedom; it is dropped here, so that feature statistics (``fd_embedded``) see
        only the trained direction. (At 64-d and n = 500, the raw length alone raised the real-vs-real FD
        noise floor from 3.7% to 6.5% of the mean-colour baseline's FD on the validation set.)
        """
        logits, emb = self.visual(x_B3HW)
        unit = F.normalize(emb, dim=-1)
        return logits, unit if normalize else unit * self.radius

    def encode_image(self, x_B3HW: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.layout_and_embedding(x_B3HW, normalize)[1]

    def encode_text(self, tokens_BL: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Like ``encode_image``: unit-norm with ``normalize``, else on the sphere of radius ``radius``."""
        unit = F.normalize(self.text(tokens_BL), dim=-1)
        return unit if normalize else unit * self.radius

    def layout_logits(self, x_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per cell: (shape-or-empty logits, colour logits, size logits)."""
        return self.visual(x_B3HW)[0].split(self.visual.head_sizes, dim=-1)


def load_config(config_path: str | os.PathLike = CONFIG_PATH) -> dict:
    return json.loads(Path(config_path).read_text())


def build_model(config_path: str | os.PathLike = CONFIG_PATH) -> EmbeddedModel:
    """A randomly initialised embedded model (for training, or before loading weights).

    ``config_path`` is the shipped config; another json is only for trying architectures out.
    """
    return EmbeddedModel(load_config(config_path))


@functools.lru_cache(maxsize=4)
def get_tokenizer(context_length: int | None = None):
    """open_clip's CLIP BPE tokenizer (ships in its wheel), padded / cut to the text tower's context."""
    from open_clip.tokenizer import SimpleTokenizer  # heavy (open_clip): only when prompts are tokenized

    return SimpleTokenizer(context_length=context_length or load_config()["text"]["context_length"])


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
    state = {k: v.float() for k, v in load_file(str(weights_path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EmbeddedWeightsError(f"{weights_path} does not fit {MODEL_NAME}: missing {missing[:5]}, "
                                   f"unexpected {unexpected[:5]}")
    return model


class EmbeddedEvaluator:
    """Image and text embeddings of the shipped evaluator, and its per-cell reading of a scene's layout."""

    name = "embedded-clip"

    def __init__(self, weights: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                 model: EmbeddedModel | None = None):
        """Load (and hash-check) ``weights`` (None: the shipped file), or wrap an in-memory ``model``."""
        self.device = torch.device(device)
        if model is not None:
            self.model, self.weights_hash = model, "unsaved"
        else:
            weights_path = Path(weights) if weights else WEIGHTS_PATH
            self.weights_hash = verify_weights(weights_path, SHA256_PATH if weights is None else None)
            self.model = load_weights(build_model(), weights_path)
        self.model.eval().to(self.device)
        cfg = self.model.cfg
        self.tokenizer = get_tokenizer(cfg["text"]["context_length"])
        self.image_size = int(cfg["image_size"])
        self.grid = int(cfg["vision"]["grid"])
        # resize protocol (part of every metric's identity): bicubic with antialias to the model's input size
        # (a no-op for 64 px images), then the config's mean/std
        self.resize = f"torch bicubic antialias to {self.image_size} px"
        self._mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def layout(self, images_B3HW_01: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per grid cell (row-major), softmax probabilities: ``occupied`` (B x cells), ``shape`` (B x cells x
        shapes, given occupied), ``color`` and ``size`` (B x cells x K, meaningful where a cell is occupied)."""
        shape, color, size = self.model.layout_logits(self.preprocess(images_B3HW_01))
        shape_p = shape.float().softmax(-1)
        return {
            "occupied": 1 - shape_p[..., 0],
            "shape": shape[..., 1:].float().softmax(-1),
            "color": color.float().softmax(-1),
            "size": size.float().softmax(-1),
        }

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
