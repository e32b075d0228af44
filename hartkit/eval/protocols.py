"""Evaluation protocols: which images are the reference, which prompts are generated, how it is recorded.

- ``eval=embedded`` (default): the data's test split (synthscenes by default),
  the first ``eval.num_images`` images at ``eval.resolution`` (default: the
  data resolution), scored with the shipped embedded evaluator.
- ``eval=mjhq30k``: MJHQ-30K (``data=mjhq30k data.path=...``), one generated
  image per prompt for ``eval.num_images`` prompts (all 30K, or a
  category-balanced subset), reference images centre-cropped and resized to
  ``eval.resolution`` (256 / 512 / 1024) with ``eval.resize_filter``, overall
  and per-category FID and CLIP score. Reference statistics are computed once
  and cached under ``eval.stats_cache``.
- ``eval=imagenet256``: class-conditional ImageNet (``data=imagenet data.path=...``),
  ``eval.samples_per_class`` samples of every class against a reference (an ADM
  reference batch npz, an image folder, or the val split): FID, Inception Score,
  precision / recall (``hartkit.eval.imagenet``).

The stages use it like this::

    es = evaluation_set(cfg.data, cfg.eval)
    metrics = es.make_metrics(cfg.eval, device)            # GenerationMetrics (or the protocol's subclass)
    es.load_reference(metrics)                             # cached reference statistics / features
    for s in range(0, len(es.prompts), bs):   # generate one image per prompt
        metrics.update(generate(es.prompts[s:s+bs]), es.prompts[s:s+bs], es.categories[s:s+bs])
    record_protocol = es.protocol("generation", metrics)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from hartkit.data import build_dataset
from hartkit.data.config import DataConfig
from hartkit.eval.generation import GenerationMetrics
from hartkit.records import Protocol
from hartkit.utils.hashing import config_hash

log = logging.getLogger(__name__)

PROTOCOLS = ("embedded", "mjhq30k", "imagenet256")


def _get(cfg, key, default=None):
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def _plain(cfg) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return dict(cfg)


@dataclass
class EvaluationSet:
    """The reference images and the prompts of one protocol run."""

    protocol_name: str
    dataset_name: str
    split: str
    resolution: int
    resize_filter: str
    data_cfg: dict[str, Any]
    prompts: list[str]
    categories: list[str]
    batch_size: int = 64
    dataset: Any = dataclasses.field(default=None, repr=False)  # the reference datasets.Dataset

    @property
    def num_images(self) -> int:
        return len(self.prompts)

    @property
    def cache_key(self) -> str:
        """Names the reference set: dataset content config, split, size, resolution, filter."""
        return (f"{self.protocol_name}|{self.dataset_name}|{self.split}|n{self.num_images}|{self.resolution}px|"
                f"{self.resize_filter}|data={config_hash(self.data_cfg)}")

    def reference_batches(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        """(uint8 images B x 3 x R x R, categories) of the reference set, in order."""
        ds = self.dataset
        for s in tqdm(range(0, len(ds), self.batch_size), desc=f"reference {self.dataset_name}", leave=False):
            rows = ds[s : s + self.batch_size]
            arrays = np.stack([np.asarray(im.convert("RGB")) for im in rows["image"]])
            yield torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous(), list(rows["category"])

    def category_ids(self) -> list[int]:
        """The class id of each prompt (what a class-conditional generator gets)."""
        return list(self.dataset["category_id"])

    def make_metrics(self, eval_cfg, device, distributed: bool | None = None):
        """The metrics object this protocol scores with."""
        return GenerationMetrics(eval_cfg, device, distributed)

    def load_reference(self, metrics) -> bool:
        """Reference statistics into ``metrics`` (cached under ``eval.stats_cache``); True on a cache hit."""
        return metrics.reference_from_cache_or(self.cache_key, self.reference_batches)

    def protocol(self, task: str, metrics_obj) -> Protocol:
        """The record's Protocol: this set + the metric object's feature extractors and implementation."""
        fields = dict(metrics_obj.protocol_fields())
        extra = dict(fields.pop("extra", {}) or {})
        extra["eval_protocol"] = self.protocol_name
        return Protocol(task=task, dataset=self.dataset_name, split=self.split, num_images=self.num_images,
                        resolution=self.resolution, resize_filter=self.resize_filter, extra=extra, **fields)


def heldout_set(es: EvaluationSet):
    """Real images of the same protocol that are not in the reference: (uint8 B x 3 x R x R, prompts, how drawn).

    Generated datasets (synthscenes, photos) are a pure function of (seed, split, index), so the held-out
    images are test images n .. 2n-1, rendered exactly like the reference. Other datasets return None
    (callers then split the reference in halves, at n/2).
    """
    data = dict(es.data_cfg)
    if data.get("name") not in ("synthscenes", "photos"):
        return None
    n = es.num_images
    data["test_size"] = 2 * n
    ds = build_dataset(data, "test").select(range(n, 2 * n))
    arrays = np.stack([np.asarray(im.convert("RGB")) for im in ds["image"]])
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    return images, list(ds["prompt"]), f"test images [{n}, {2 * n}) vs the reference [0, {n})"


# settings of the generated datasets that change which test images are drawn
_SCENE_KEYS = ("seed", "max_objects", "backgrounds", "supersample", "noise_grain", "crop_scale")


def dataset_variant(data: dict) -> str:
    """The dataset's name in a record's protocol: ``synthscenes``, or ``synthscenes[backgrounds=gradient]`` when
    a generated dataset is drawn with other settings than its defaults (rows scored on other images must not
    share a leaderboard table); the default name for default settings, so existing records keep theirs."""
    name = str(data.get("name"))
    if name not in ("synthscenes", "photos"):
        return name
    defaults = DataConfig()
    changed = []
    for key in _SCENE_KEYS:
        value, default = data.get(key, getattr(defaults, key)), getattr(defaults, key)
        if isinstance(default, list):
            value = list(value)  # a list or an OmegaConf ListConfig
        if value != default:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            changed.append(f"{key}={shown}")
    return f"{name}[{';'.join(changed)}]" if changed else name


def evaluation_set(data_cfg, eval_cfg) -> EvaluationSet:
    """Reference dataset and prompts of ``eval.protocol`` for the configured data."""
    name = _get(eval_cfg, "protocol", "embedded")
    if name not in PROTOCOLS:
        raise ValueError(f"eval.protocol={name!r} is unknown; use one of {list(PROTOCOLS)}")
    data = _plain(data_cfg)
    if name == "imagenet256":
        # inside: hartkit.eval.imagenet imports this module (a cycle at the top)
        from hartkit.eval.imagenet import imagenet_evaluation_set

        return imagenet_evaluation_set(data, eval_cfg)
    if name == "mjhq30k" and data.get("name") != "mjhq30k":
        raise ValueError("eval=mjhq30k scores against MJHQ-30K images: also set data=mjhq30k "
                         "data.path=/path/to/mjhq30k_imgs.zip (or the unpacked folder)")
    n = int(_get(eval_cfg, "num_images", 500))
    resolution = int(_get(eval_cfg, "resolution", data.get("resolution", 64)))
    resize_filter = _get(eval_cfg, "resize_filter", data.get("resize_filter", "bicubic"))
    data.update(resolution=resolution, resize_filter=resize_filter)
    if data.get("name") in ("synthscenes", "photos"):
        data["test_size"] = n  # scenes are a pure function of (seed, split, index): the first n test scenes
    else:
        data["subset"] = min(n, data["subset"]) if data.get("subset") else n  # category-balanced first n
    ds = build_dataset(data, "test")
    if len(ds) < n:
        log.warning("%s has only %d test images; eval.num_images=%d is capped", data.get("name"), len(ds), n)
    rows = ds.select_columns(["prompt", "category"])[:]
    content = {k: v for k, v in data.items() if k not in ("num_workers", "cache_dir", "strict")}
    return EvaluationSet(protocol_name=name, dataset_name=dataset_variant(data), split="test",
                         resolution=resolution, resize_filter=str(resize_filter), data_cfg=content,
                         prompts=list(rows["prompt"]), categories=list(rows["category"]),
                         batch_size=int(_get(eval_cfg, "batch_size", 64)), dataset=ds)
