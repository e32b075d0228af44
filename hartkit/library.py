"""hartkit as a library: trained tokenizers and generators, loaded from local folders, in the Hugging Face format.

    from hartkit import load_tokenizer, load_generator
    tok = load_tokenizer("artifacts/tokenizer/hybrid-<hash>")        # a run's artifact or a save_pretrained folder
    tokens = tok.encode(images)                                      # (B, 3, H, W) in [-1, 1]; value_range= converts
    recon = tok.decode(tokens, value_range=(0, 1))
    gen = load_generator("artifacts/generator/hybrid-tiny-<hash>")   # finds its tokenizer artifact
    images = gen.sample(["a large red star at the center, on a brick wall"], seed=0)
    gen.save_pretrained("my-generator")                              # config.json + safetensors + model card
    gen.push_to_hub("me/hartkit-tiny")                               # needs `hf auth login`; nothing else uploads

``Tokenizer`` and ``Generator`` use huggingface_hub's ``PyTorchModelHubMixin``: ``save_pretrained`` writes
``config.json`` (the tokenizer config; for a generator ``{"ar": ..., "tokenizer": ...}``) and the weights as
safetensors with the same keys as hartkit's own artifacts (``model.safetensors``; a generator also
``tokenizer.safetensors``); ``from_pretrained`` reads a local folder or a Hub repository and loads strictly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from omegaconf import OmegaConf
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from hartkit.ar_models.config import ARConfig
from hartkit.ar_models.model import ScaleAR, TokenSpec
from hartkit.ar_models.sampling import generate_in_batches
from hartkit.errors import ConfigError
from hartkit.tokenizers.checkpoint import build_tokenizer, load_state_dict_checked, tokenizer_config
from hartkit.tokenizers.tokens import Tokens

WEIGHTS = constants.SAFETENSORS_SINGLE_FILE  # model.safetensors
TOKENIZER_WEIGHTS = "tokenizer.safetensors"  # a generator folder's tokenizer
HF_CONFIG = constants.CONFIG_NAME  # config.json
ARTIFACT_CONFIG = "config.yaml"
_TOLERANCE = 1e-3  # float rounding at the range ends
_HUB = dict(library_name="hartkit", license="mit")


class ValueRangeError(ConfigError):
    """Images whose values do not match the range the call assumes; the message says what to pass."""


def to_model_range(images: torch.Tensor, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """(B, 3, H, W) or (3, H, W) images -> float in [-1, 1], the range hartkit's tokenizers take.

    ``value_range=None`` expects [-1, 1] and refuses what looks like another range (uint8, all values >= 0,
    values beyond +-1) with a message naming the ``value_range`` to pass; ``value_range=(lo, hi)`` converts.
    """
    if not torch.is_tensor(images):
        raise TypeError(f"images must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}; "
                        "for PIL images use hartkit.data.pil_to_tensor (gives [-1, 1])")
    x = images[None] if images.ndim == 3 else images
    if value_range is None:
        if not x.is_floating_point():
            raise ValueRangeError(f"{x.dtype} images (0..255): hartkit tokenizers take float images in [-1, 1]; "
                                  "pass value_range=(0, 255) to convert them")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1 - _TOLERANCE or hi > 1 + _TOLERANCE:
            raise ValueRangeError(f"images span [{lo:.4g}, {hi:.4g}], outside [-1, 1]: pass their range, e.g. "
                                  "value_range=(0, 255)")
        if lo >= 0:
            raise ValueRangeError(
                f"images span [{lo:.4g}, {hi:.4g}]: that looks like [0, 1] images, but hartkit tokenizers take "
                "[-1, 1]. Pass value_range=(0, 1) to convert them, or value_range=(-1, 1) if they really are "
                "[-1, 1] images without a dark pixel")
        return x.float()
    lo_r, hi_r = (float(v) for v in value_range)
    if not hi_r > lo_r:
        raise ValueRangeError(f"value_range={tuple(value_range)} must be (low, high) with low < high")
    x = x.float()
    lo, hi = float(x.min()), float(x.max())
    slack = _TOLERANCE * (hi_r - lo_r)
    if lo < lo_r - slack or hi > hi_r + slack:
        raise ValueRangeError(f"images span [{lo:.4g}, {hi:.4g}], outside value_range={(lo_r, hi_r)}")
    return (x - lo_r) / (hi_r - lo_r) * 2 - 1


def from_model_range(images: torch.Tensor, value_range: tuple[float, float] = (-1, 1)) -> torch.Tensor:
    """Decoded images in [-1, 1] -> ``value_range`` (clamped); (0, 255) gives uint8."""
    lo_r, hi_r = (float(v) for v in value_range)
    x = (images.clamp(-1, 1) + 1) / 2 * (hi_r - lo_r) + lo_r
    if (lo_r, hi_r) == (0.0, 255.0):
        return x.round().to(torch.uint8)
    return x


def _local_or_hub_file(model_id: str, filename: str, **hub_kwargs) -> str:
    if os.path.isdir(model_id):
        path = Path(model_id) / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {model_id} is not a complete save_pretrained folder")
        return str(path)
    return hf_hub_download(repo_id=model_id, filename=filename, **hub_kwargs)


def _hub_kwargs(revision, cache_dir, force_download, local_files_only, token) -> dict[str, Any]:
    return dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
                local_files_only=local_files_only, token=token)


class Tokenizer(nn.Module, PyTorchModelHubMixin, tags=["hartkit", "image-tokenizer"], **_HUB):
    """A trained multi-scale tokenizer (discrete, continuous or hybrid) with range-checked encode / decode.

    ``config`` is the ``tokenizer`` config subtree (``conf/tokenizer/*.yaml``, resolved). ``self.model`` is the
    ``MultiScaleTokenizer`` (the object hartkit's stages and AR models use)."""

    def __init__(self, config: dict):
        super().__init__()
        self.model = build_tokenizer(config)
        self.eval()

    # --- facts -----------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.model.patch_nums

    @property
    def num_tokens(self) -> int:
        return self.model.num_tokens

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- images <-> tokens -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor, value_range: tuple[float, float] | None = None) -> Tokens:
        """Tokens of (B, 3, H, W) images in [-1, 1] (``value_range=(0, 1)`` / ``(0, 255)`` converts first)."""
        x = to_model_range(images, value_range).to(self.device)
        self.model.check_images(x)
        return self.model.encode(x)

    @torch.no_grad()
    def decode(self, tokens: Tokens, value_range: tuple[float, float] = (-1, 1),
               use_residual: bool = True) -> torch.Tensor:
        """Images of the tokens, in ``value_range`` (hybrid: ``use_residual=False`` decodes the discrete path)."""
        return from_model_range(self.model.decode(tokens, use_residual=use_residual), value_range)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, value_range: tuple[float, float] | None = None) -> torch.Tensor:
        """decode(encode(images)), returned in the range the images came in."""
        return self.decode(self.encode(images, value_range), value_range or (-1, 1))

    # --- files -------------------------------------------------------------------------------------------
    @classmethod
    def from_artifact(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> Tokenizer:
        """A tokenizer artifact of a hartkit run (``model.safetensors`` + ``config.yaml``)."""
        folder = Path(path)
        cfg_file, weights = folder / ARTIFACT_CONFIG, folder / WEIGHTS
        if not cfg_file.is_file() or not weights.is_file():
            raise FileNotFoundError(f"no tokenizer at {folder}: expected {WEIGHTS} and {ARTIFACT_CONFIG} (a hartkit "
                                    f"tokenizer artifact) or {HF_CONFIG} (a save_pretrained folder)")
        config = OmegaConf.to_container(tokenizer_config(OmegaConf.load(cfg_file)), resolve=True)
        tok = cls(config)
        load_state_dict_checked(tok.model, load_file(str(weights)), source=str(weights))
        return tok.to(device).eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        save_model(self.model, str(Path(save_directory) / WEIGHTS))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         config: dict, map_location: str = "cpu", **kwargs) -> Tokenizer:
        weights = _local_or_hub_file(model_id, WEIGHTS,
                                     **_hub_kwargs(revision, cache_dir, force_download, local_files_only, token))
        tok = cls(config)
        load_state_dict_checked(tok.model, load_file(weights), source=weights)  # strict: no partial load
        return tok.to(map_location).eval()


class Generator(nn.Module, PyTorchModelHubMixin, tags=["hartkit", "text-to-image", "autoregressive"], **_HUB):
    """A trained scale-wise AR generator together with its tokenizer: ``sample(prompts)`` gives images.

    ``config`` = ``{"ar": <ar config subtree>, "tokenizer": <tokenizer config subtree>}``."""

    def __init__(self, config: dict, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer(config["tokenizer"])
        self.ar_config = OmegaConf.merge(OmegaConf.structured(ARConfig), config["ar"])
        # the spec copies the tokenizer's codebook: build after the tokenizer's weights are in (from_pretrained)
        self.model = ScaleAR(self.ar_config, TokenSpec.from_tokenizer(self.tokenizer.model))
        self.eval()

    @property
    def condition(self) -> str:
        return str(self.ar_config.condition)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def sample(self, prompts: list[str] | list[int] | torch.Tensor, *, cfg: float | None = None,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               batch_size: int | None = None, value_range: tuple[float, float] = (-1, 1)) -> torch.Tensor:
        """One image per prompt (text generators) or category id (``ar.condition=class``), on the CPU.

        Unset settings come from the generator's ``ar.sampling`` config (the values gen_eval used); the same
        ``seed`` gives the same images."""
        s = self.ar_config.sampling
        if self.condition == "class":
            cond = torch.as_tensor(prompts, dtype=torch.long).to(self.device)
        else:
            if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
                raise TypeError("this generator is text-conditioned: pass a list of prompt strings")
            cond = list(prompts)
        images = generate_in_batches(
            self.model, self.tokenizer.model, cond, int(batch_size or s.batch_size), seed=int(s.seed if seed is None else seed),
            cfg=float(s.cfg if cfg is None else cfg), top_k=int(s.top_k if top_k is None else top_k),
            top_p=float(s.top_p if top_p is None else top_p), diffusion_steps=s.diffusion_steps)
        return from_model_range(images, value_range)

    @classmethod
    def from_artifact(cls, path: str | os.PathLike, tokenizer: str | os.PathLike | Tokenizer | None = None,
                      device: torch.device | str = "cpu") -> Generator:
        """A generator artifact of a hartkit run; its tokenizer is found from the artifact (``tokenizer_dir``)
        unless given (a Tokenizer, or a tokenizer artifact / save_pretrained folder)."""
        folder = Path(path)
        cfg_file, weights = folder / ARTIFACT_CONFIG, folder / WEIGHTS
        if not cfg_file.is_file() or not weights.is_file():
            raise FileNotFoundError(f"no generator at {folder}: expected {WEIGHTS} and {ARTIFACT_CONFIG} (a hartkit "
                                    f"generator artifact) or {HF_CONFIG} (a save_pretrained folder)")
        art_cfg = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=True)
        if tokenizer is None:
            rel = art_cfg.get("tokenizer_dir")
            if not rel:
                raise FileNotFoundError(
                    f"{cfg_file} does not name its tokenizer (an artifact written before hartkit recorded it, or a "
                    "pretrained tokenizer): pass it, load_generator(path, tokenizer='artifacts/tokenizer/<name>-<hash>')")
            tokenizer = (folder / rel).resolve()
        tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
        gen = cls({"ar": art_cfg["ar"], "tokenizer": tok._hub_mixin_config}, tokenizer=tok)
        _load_strict(gen.model, str(weights))
        return gen.to(device).eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        save_model(self.model, str(Path(save_directory) / WEIGHTS))
        save_model(self.tokenizer.model, str(Path(save_directory) / TOKENIZER_WEIGHTS))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         config: dict, map_location: str = "cpu", **kwargs) -> Generator:
        hub = _hub_kwargs(revision, cache_dir, force_download, local_files_only, token)
        tok = Tokenizer(config["tokenizer"])
        tok_weights = _local_or_hub_file(model_id, TOKENIZER_WEIGHTS, **hub)
        load_state_dict_checked(tok.model, load_file(tok_weights), source=tok_weights)
        gen = cls(config, tokenizer=tok)
        weights = _local_or_hub_file(model_id, WEIGHTS, **hub)
        _load_strict(gen.model, weights)
        return gen.to(map_location).eval()


def _load_strict(model: nn.Module, weights: str) -> None:
    missing, unexpected = load_model(model, weights, strict=False)  # as hartkit's artifacts load (shared tensors)
    if missing or unexpected:
        raise RuntimeError(f"{weights} does not match the generator built from its config (nothing usable was "
                           f"loaded): missing keys {sorted(missing)[:20]}, unexpected keys {sorted(unexpected)[:20]}")


def _is_hf_folder(path: Path) -> bool:
    return (path / HF_CONFIG).is_file()


def load_tokenizer(path: str | os.PathLike, device: torch.device | str = "cpu") -> Tokenizer:
    """A trained tokenizer from a local folder: a run's artifact (``artifacts/tokenizer/<name>-<hash>``) or a
    ``save_pretrained`` folder. (Hub repositories: ``Tokenizer.from_pretrained("user/repo")``.)"""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"no tokenizer folder at {folder}; a run writes one under "
                                "<paths.artifacts>/tokenizer/<name>-<hash>/ (stages=[tokenizer])")
    if _is_hf_folder(folder):
        return Tokenizer.from_pretrained(str(folder), map_location=str(device))
    return Tokenizer.from_artifact(folder, device)


def load_generator(path: str | os.PathLike, tokenizer: str | os.PathLike | Tokenizer | None = None,
                   device: torch.device | str = "cpu") -> Generator:
    """A trained generator (with its tokenizer) from a local folder: a run's artifact
    (``artifacts/generator/<tokenizer>-<ar>-<hash>``) or a ``save_pretrained`` folder."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"no generator folder at {folder}; a run writes one under "
                                "<paths.artifacts>/generator/<tokenizer>-<ar>-<hash>/ (stages=[...,generator])")
    if _is_hf_folder(folder):
        return Generator.from_pretrained(str(folder), map_location=str(device))
    return Generator.from_artifact(folder, tokenizer, device)
