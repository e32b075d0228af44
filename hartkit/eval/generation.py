"""Generation metrics: Fréchet distances, CLIP scores and prompt accuracy over a stream of samples.

Usage (the gen_eval stage, or any script)::

    m = GenerationMetrics(cfg.eval, device)
    m.reference_from_cache_or(key, lambda: reference_batches(...))   # or m.add_reference(images, categories)
    for images, prompts, categories in samples:                      # images (B, 3, H, W) in [0, 1]
        m.update(images, prompts, categories)
    metrics = m.compute()          # {"fd_embedded": ..., "fd_embedded/star": ..., "clip_score_embedded": ..., ...}
    fields = m.protocol_fields()   # feature extractors, their hashes, implementation -> the record's Protocol
    m.failures                     # [(image name, why it was excluded), ...]

Metric names carry their feature space (``fid`` only for Inception-v3) and
per-category numbers are ``<metric>/<category>``. Under torchrun every rank
scores its own slice; ``compute`` sums the statistics over ranks exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging

import torch

from hartkit.eval.clip_score import build_clip_scorer, clip_score_from_sum
from hartkit.eval.features import build_feature_extractor
from hartkit.eval.frechet import FrechetStats, compute_fd, load_stats, save_stats, stats_cache_path
from hartkit.eval.image_checks import log_failures, split_valid, stack_valid
from hartkit.utils import distributed as dist_utils
from hartkit.utils.io import atomic_write_json

log = logging.getLogger(__name__)

ALL = ""  # category key of the overall statistics
IMPLEMENTATION = "hartkit streaming FD (float64 sums, scipy sqrtm as clean-fid); uint8-quantised inputs"


def _cfg(eval_cfg, key, default=None):
    if eval_cfg is None:
        return default
    value = eval_cfg.get(key, default) if hasattr(eval_cfg, "get") else getattr(eval_cfg, key, default)
    return default if value is None else value


def combined_hash(hashes: list[str | None]) -> str | None:
    """One hash naming a set of extractors' weights (the Protocol has one field for it)."""
    known = [h for h in hashes if h]
    if not known:
        return None
    if len(set(known)) == 1:
        return known[0]
    return hashlib.sha256("|".join(known).encode()).hexdigest()


class GenerationMetrics:
    """FD per feature space (overall + per category), CLIP score(s) and prompt accuracy."""

    def __init__(self, eval_cfg=None, device: torch.device | str = "cpu"):
        self.cfg = eval_cfg
        self.device = torch.device(device)
        self.resolution: int | None = _cfg(eval_cfg, "resolution")
        self.per_category = bool(_cfg(eval_cfg, "per_category", True))
        self.extractors = {n: build_feature_extractor(n, eval_cfg, self.device)
                           for n in _cfg(eval_cfg, "fd_features", ["fd_embedded"])}
        self.clip_scorers = {n: build_clip_scorer(n, eval_cfg, self.device)
                             for n in _cfg(eval_cfg, "clip_score", ["clip_score_embedded"])}
        self.prompt_accuracy = None
        if _cfg(eval_cfg, "prompt_accuracy", True):
            from hartkit.eval.embedded import get_embedded_evaluator
            from hartkit.eval.embedded.prompt_accuracy import PromptAccuracy

            self.prompt_accuracy = PromptAccuracy(get_embedded_evaluator(_cfg(eval_cfg, "embedded_weights"), self.device))
        self.gen_stats: dict[str, dict[str, FrechetStats]] = {n: {} for n in self.extractors}
        self.ref_stats: dict[str, dict[str, FrechetStats]] = {n: {} for n in self.extractors}
        self.clip_sums: dict[str, dict[str, list[float]]] = {n: {} for n in self.clip_scorers}  # [sum cos, count]
        self.failures: list[tuple[str, str]] = []
        self.reference_failures: list[tuple[str, str]] = []
        self.num_images = 0
        self._seen = 0
        self._ref_seen = 0
        self.reference_from_cache = False

    # ------------------------------------------------------------------ reference set

    def _accumulate(self, table: dict[str, dict[str, FrechetStats]], name: str, feats_BD: torch.Tensor,
                    categories: list[str] | None) -> None:
        per = table[name]
        per.setdefault(ALL, FrechetStats(feats_BD.shape[1])).update(feats_BD)
        if self.per_category and categories is not None:
            for cat in sorted(set(categories)):
                idx = [i for i, c in enumerate(categories) if c == cat]
                per.setdefault(cat, FrechetStats(feats_BD.shape[1])).update(feats_BD[idx])

    @torch.no_grad()
    def add_reference(self, images, categories: list[str] | None = None, names: list[str] | None = None) -> None:
        """Add real images (B, 3, H, W) in [0, 1] (or uint8) to the reference statistics."""
        n = len(images)
        names = names or [f"reference image {self._ref_seen + i}" for i in range(n)]
        self._ref_seen += n
        if self.resolution is None and n:
            self.resolution = int(images[0].shape[-1])
        valid, failures = split_valid(images, names, self.resolution)
        self.reference_failures += failures
        log_failures(failures, "reference")
        if not valid:
            return
        x = stack_valid(images, valid)
        cats = [categories[i] for i in valid] if categories is not None else None
        for name, extractor in self.extractors.items():
            self._accumulate(self.ref_stats, name, extractor(x), cats)

    def _cache_key(self, key: str, name: str) -> str:
        ext = self.extractors[name]
        return f"{key}|{name}|{ext.weights_hash}|{ext.resize}|per_category={self.per_category}"

    def load_reference_cache(self, key: str) -> bool:
        """Load every extractor's reference statistics cached under ``key``; False if any is missing."""
        cache_dir = _cfg(self.cfg, "stats_cache", "artifacts/fd_stats")
        loaded = {}
        for name in self.extractors:
            full = self._cache_key(key, name)
            index = _read_index(cache_dir, full)
            if index is None:
                return False
            cats = [ALL] + sorted(index)
            per = {}
            for cat in cats:
                stats = load_stats(stats_cache_path(cache_dir, f"{full}|{cat}"), f"{full}|{cat}")
                if stats is None:
                    return False
                per[cat] = stats
            loaded[name] = per
        self.ref_stats = loaded
        self.reference_from_cache = True
        return True

    def save_reference_cache(self, key: str) -> None:
        if not dist_utils.is_main():
            return
        cache_dir = _cfg(self.cfg, "stats_cache", "artifacts/fd_stats")
        for name, per in self.ref_stats.items():
            full = self._cache_key(key, name)
            for cat, stats in per.items():
                save_stats(stats_cache_path(cache_dir, f"{full}|{cat}"), stats, f"{full}|{cat}")
            # the index lists the categories; written last, so a complete index means a complete cache
            atomic_write_json(_index_path(cache_dir, full), {"key": full, "categories": sorted(c for c in per if c)})

    def reference_from_cache_or(self, key: str, batches_fn) -> bool:
        """Reference statistics from the cache for ``key``, else from ``batches_fn()``'s (images, categories) batches.

        The reference of a protocol is computed once and cached (eval.stats_cache); returns True on a cache hit.
        """
        if self.load_reference_cache(key):
            log.info("reference statistics for %s loaded from cache", key)
            return True
        rank, world = dist_utils.rank(), dist_utils.world_size()
        for i, (images, categories) in enumerate(batches_fn()):
            if i % world == rank:  # under torchrun each rank takes every world-th batch; sync sums them exactly
                self.add_reference(images, categories)
        self.sync_reference()
        self.save_reference_cache(key)
        return False

    def sync_reference(self) -> None:
        """Sum reference statistics over ranks (when each rank added a slice of the reference set)."""
        if dist_utils.is_dist():
            self._reduce_tables(self.ref_stats)

    # ------------------------------------------------------------------ generated samples

    @torch.no_grad()
    def update(self, images, prompts: list[str] | None = None, categories: list[str] | None = None,
               names: list[str] | None = None) -> None:
        """Score generated images (B, 3, H, W) in [0, 1] (or a list of (3, H, W)) with their prompts."""
        n = len(images)
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"{n} images but {len(prompts)} prompts")
        if categories is not None and len(categories) != n:
            raise ValueError(f"{n} images but {len(categories)} categories")
        names = names or [f"generated image {self._seen + i}" + (f" ({prompts[i][:40]!r})" if prompts else "")
                          for i in range(n)]
        self._seen += n
        if self.resolution is None and n and isinstance(images[0], torch.Tensor) and images[0].ndim == 3:
            self.resolution = int(images[0].shape[-1])
        valid, failures = split_valid(images, names, self.resolution)
        self.failures += failures
        log_failures(failures, "generated")
        if not valid:
            return
        x = stack_valid(images, valid)
        cats = [categories[i] for i in valid] if categories is not None else None
        self.num_images += len(valid)
        for name, extractor in self.extractors.items():
            self._accumulate(self.gen_stats, name, extractor(x), cats)
        if prompts is None:
            return
        kept_prompts = [prompts[i] for i in valid]
        for name, scorer in self.clip_scorers.items():
            cos = scorer.cosines(x, kept_prompts)
            groups = [(ALL, cos)]
            if self.per_category and cats is not None:
                groups += [(c, cos[[i for i, k in enumerate(cats) if k == c]]) for c in sorted(set(cats))]
            for cat, values in groups:
                acc = self.clip_sums[name].setdefault(cat, [0.0, 0])
                acc[0] += float(values.double().sum())
                acc[1] += values.numel()
        if self.prompt_accuracy is not None:
            self.prompt_accuracy.update(x, kept_prompts)

    # ------------------------------------------------------------------ results

    def _reduce_tables(self, table: dict[str, dict[str, FrechetStats]]) -> None:
        for name, per in table.items():
            cats = _all_gather_union(sorted(per))
            dim = self.extractors[name].dim
            for cat in cats:
                per.setdefault(cat, FrechetStats(dim)).all_reduce()

    def sync(self) -> None:
        """Sum every statistic over ranks (no-op in one process)."""
        if not dist_utils.is_dist():
            return
        self._reduce_tables(self.gen_stats)
        for per in self.clip_sums.values():
            for cat in _all_gather_union(sorted(per)):
                acc = per.setdefault(cat, [0.0, 0])
                t = _reduce_tensor(torch.tensor(acc, dtype=torch.float64))
                per[cat] = [float(t[0]), int(round(float(t[1])))]
        if self.prompt_accuracy is not None:
            self.prompt_accuracy.load_state(_reduce_tensor(self.prompt_accuracy.state()))
        self.num_images = int(_reduce_tensor(torch.tensor([float(self.num_images)], dtype=torch.float64))[0])
        gathered = [None] * dist_utils.world_size()
        torch.distributed.all_gather_object(gathered, self.failures)
        self.failures = [f for part in gathered for f in part]

    def compute(self) -> dict[str, float]:
        self.sync()
        if self.num_images == 0:
            first = f"; first failure: {self.failures[0][0]}: {self.failures[0][1]}" if self.failures else ""
            raise ValueError(f"no valid generated images to score ({len(self.failures)} excluded{first})")
        metrics: dict[str, float] = {"num_images": float(self.num_images), "num_failed": float(len(self.failures))}
        for name in self.extractors:
            gen, ref = self.gen_stats[name], self.ref_stats[name]
            if ALL not in ref or ref[ALL].count < 2:
                raise ValueError(f"{name}: no reference statistics; call add_reference() or reference_from_cache_or() first")
            metrics["num_reference"] = float(ref[ALL].count)
            if gen[ALL].count < 2:
                raise ValueError(f"{name}: at least 2 valid generated images are needed, got {gen[ALL].count}")
            metrics[name] = compute_fd(gen[ALL], ref[ALL])
            for cat in sorted(c for c in gen if c):
                if cat in ref and gen[cat].count >= 2 and ref[cat].count >= 2:
                    metrics[f"{name}/{cat}"] = compute_fd(gen[cat], ref[cat])
        for name, per in self.clip_sums.items():
            for cat, (total, count) in sorted(per.items()):
                if count:
                    metrics[name if cat == ALL else f"{name}/{cat}"] = clip_score_from_sum(total, count)
        if self.prompt_accuracy is not None:
            metrics.update(self.prompt_accuracy.compute())
            if self.prompt_accuracy.skipped:
                log.info("prompt accuracy: %d prompts outside the synthscenes grammar were skipped",
                         self.prompt_accuracy.skipped)
        if self.failures:
            log.warning("%d generated images were excluded from every metric (see .failures)", len(self.failures))
        return metrics

    def protocol_fields(self) -> dict:
        """What the record's Protocol needs: feature extractors, their weights' hash, implementation, extras."""
        parts, hashes, extra = [], [], {}
        for name, ext in self.extractors.items():
            parts.append(f"{name}={ext.model_name}")
            hashes.append(ext.weights_hash)
            extra[name] = f"{ext.model_name}@{(ext.weights_hash or '?')[:12]}; {ext.resize}"
        for name, scorer in self.clip_scorers.items():
            parts.append(f"{name}={scorer.model_name}")
            hashes.append(scorer.weights_hash)
            extra[name] = f"{scorer.model_name}@{(scorer.weights_hash or '?')[:12]}; {scorer.scaling}"
        if self.prompt_accuracy is not None:
            extra["prompt_accuracy"] = "embedded-clip zero-shot, joint softmax over colour x shape of the main object"
        if any(per.get(ALL) for per in self.ref_stats.values()):
            extra["reference_images"] = max(per[ALL].count for per in self.ref_stats.values() if ALL in per)
        return {
            "feature_extractor": ", ".join(parts),
            "extractor_hash": combined_hash(hashes),
            "implementation": IMPLEMENTATION,
            "extra": extra,
        }


# ---------------------------------------------------------------------- helpers


def _index_path(cache_dir, full_key: str):
    return stats_cache_path(cache_dir, full_key + "|index").with_suffix(".json")


def _read_index(cache_dir, full_key: str) -> list[str] | None:
    """Category names of a cached reference set; None when the cache is absent or belongs to another key."""
    path = _index_path(cache_dir, full_key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("categories") if data.get("key") == full_key else None


def _reduce_tensor(t: torch.Tensor) -> torch.Tensor:
    if dist_utils.is_dist() and torch.distributed.get_backend() == "nccl":
        return dist_utils.all_reduce_sum(t.cuda()).cpu()
    return dist_utils.all_reduce_sum(t)


def _all_gather_union(names: list[str]) -> list[str]:
    if not dist_utils.is_dist():
        return names
    gathered = [None] * dist_utils.world_size()
    torch.distributed.all_gather_object(gathered, names)
    return sorted({n for part in gathered for n in part})
