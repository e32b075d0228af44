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

Besides each FD, ``kid_<space>`` (``kid`` for Inception) is the unbiased KID of
the same features (``hartkit.eval.intervals``). A per-category FD is reported
only when both sets of the category hold at least as many images as the
features have dimensions (below that the covariance is singular and the FD is
dominated by its bias); otherwise it is left out, the per-category KID is
kept, and ``notes`` says so. ``intervals()`` gives 95% bootstrap intervals over
generated images for every overall number; ``noise_floor(heldout)`` the
real-vs-real distances of another real set against the reference.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import torch

from hartkit.eval.clip_score import build_clip_scorer, clip_score_from_sum
from hartkit.eval.embedded import get_embedded_evaluator
from hartkit.eval.embedded.prompt_accuracy import PromptAccuracy
from hartkit.eval.features import build_feature_extractor
from hartkit.eval.frechet import FrechetStats, compute_fd, load_stats, save_stats, stats_cache_path
from hartkit.eval.image_checks import log_failures, split_valid, stack_valid
from hartkit.eval.intervals import (
    DEFAULT_FD_RESAMPLES,
    DEFAULT_RESAMPLES,
    KID,
    FrechetBootstrap,
    bootstrap_mean,
    clip_score_transform,
)
from hartkit.utils import distributed as dist_utils
from hartkit.utils.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

ALL = ""  # category key of the overall statistics
IMPLEMENTATION = ("hartkit streaming FD (float64 sums, scipy sqrtm, relative imaginary-part rule); "
                  "unbiased KID (cubic kernel); uint8-quantised inputs")


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


def kid_name(fd_name: str) -> str:
    """fid -> kid, fd_embedded -> kid_embedded."""
    return "kid" if fd_name == "fid" else "kid" + fd_name[2:]


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-image tensor over ranks in rank order (identity in one process)."""
    if not dist_utils.is_dist():
        return t
    parts = [None] * dist_utils.world_size()
    torch.distributed.all_gather_object(parts, t.cpu())
    return torch.cat([p for p in parts if p is not None and p.numel()] or [t[:0]])


def _gather_list(items: list) -> list:
    if not dist_utils.is_dist():
        return items
    parts = [None] * dist_utils.world_size()
    torch.distributed.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def prompt_hits(scorer, images_B3HW_01: torch.Tensor, prompts: list[str]) -> list[dict[str, float] | None]:
    """Per image {metric name: 1.0 hit / 0.0 miss} of a prompt-accuracy scorer, None outside its grammar.

    For scorers without ``per_image()``: adapts the per-image predictions of ``predict()`` (main
    object's shape and colour, two separate argmaxes; ``prompt_accuracy`` = both right).
    """
    out: list[dict[str, float] | None] = []
    for pred in scorer.predict(images_B3HW_01, prompts):
        if pred is None:
            out.append(None)
            continue
        shape_ok = float(pred["shape"] == pred["named_shape"])
        color_ok = float(pred["color"] == pred["named_color"])
        out.append({"prompt_accuracy": shape_ok * color_ok, "prompt_accuracy/shape": shape_ok,
                    "prompt_accuracy/color": color_ok})
    return out


PROMPT_ACCURACY_TEXT = ("embedded-clip zero-shot on the main object: shape = argmax over the prompt with each "
                        "shape swapped in, colour = argmax over the prompt with each colour swapped in (two "
                        "separate argmaxes); prompt_accuracy = both right")


class GenerationMetrics:
    """FD per feature space (overall + per category), CLIP score(s) and prompt accuracy."""

    def __init__(self, eval_cfg=None, device: torch.device | str = "cpu", distributed: bool | None = None):
        self.cfg = eval_cfg
        # False: this object scores a set of its own on one rank (baselines), never reduces over ranks
        self.distributed = dist_utils.is_dist() if distributed is None else bool(distributed)
        self.device = torch.device(device)
        self.resolution: int | None = _cfg(eval_cfg, "resolution")
        self.per_category = bool(_cfg(eval_cfg, "per_category", True))
        self.extractors = {n: build_feature_extractor(n, eval_cfg, self.device)
                           for n in _cfg(eval_cfg, "fd_features", ["fd_embedded"])}
        self.clip_scorers = {n: build_clip_scorer(n, eval_cfg, self.device)
                             for n in _cfg(eval_cfg, "clip_score", ["clip_score_embedded"])}
        self.prompt_accuracy = None
        if _cfg(eval_cfg, "prompt_accuracy", True):
            self.prompt_accuracy = PromptAccuracy(get_embedded_evaluator(_cfg(eval_cfg, "embedded_weights"), self.device))
        self.gen_stats: dict[str, dict[str, FrechetStats]] = {n: {} for n in self.extractors}
        self.ref_stats: dict[str, dict[str, FrechetStats]] = {n: {} for n in self.extractors}
        self.clip_sums: dict[str, dict[str, list[float]]] = {n: {} for n in self.clip_scorers}  # [sum cos, count]
        self.gen_feats: dict[str, list[torch.Tensor]] = {n: [] for n in self.extractors}
        self.ref_feats: dict[str, list[torch.Tensor]] = {n: [] for n in self.extractors}
        self.gen_categories: list[str | None] = []
        self.ref_categories: list[str | None] = []
        self.clip_cosines: dict[str, list[torch.Tensor]] = {n: [] for n in self.clip_scorers}
        self.prompt_hits: list[dict[str, float] | None] = []
        self.notes: list[str] = []
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
        self.ref_categories += cats if cats is not None else [None] * len(valid)
        for name, extractor in self.extractors.items():
            feats = extractor(x)
            self._accumulate(self.ref_stats, name, feats, cats)
            self.ref_feats[name].append(feats.float().cpu())

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
        feats = {}
        for name in self.extractors:  # per-image reference features (KID, bootstrap)
            path = stats_cache_path(cache_dir, f"{self._cache_key(key, name)}|features")
            try:
                with np.load(path) as data:
                    if str(data["key"]) != f"{self._cache_key(key, name)}|features":
                        return False
                    feats[name] = torch.from_numpy(data["features"].astype(np.float32))
                    cats = [None if c == "" else str(c) for c in data["categories"].tolist()]
            except (OSError, ValueError, KeyError):
                return False
        self.ref_stats = loaded
        self.ref_feats = {n: [f] for n, f in feats.items()}
        self.ref_categories = cats if feats else []
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
            feats = torch.cat(self.ref_feats[name]).numpy() if self.ref_feats[name] else np.zeros((0, 0), np.float32)
            cats = np.asarray(["" if c is None else c for c in self.ref_categories])
            fkey = f"{full}|features"

            def _write(tmp, feats=feats, cats=cats, fkey=fkey):
                with open(tmp, "wb") as fh:
                    np.savez(fh, key=np.asarray(fkey), features=feats, categories=cats)

            atomic_write(stats_cache_path(cache_dir, fkey), _write)
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
        if self.distributed:
            self._reduce_tables(self.ref_stats)
            self.ref_feats = {n: [gather_rows(torch.cat(f) if f else torch.zeros(0, self.extractors[n].dim))]
                              for n, f in self.ref_feats.items()}
            self.ref_categories = _gather_list(self.ref_categories)

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
        self.gen_categories += cats if cats is not None else [None] * len(valid)
        for name, extractor in self.extractors.items():
            feats = extractor(x)
            self._accumulate(self.gen_stats, name, feats, cats)
            self.gen_feats[name].append(feats.float().cpu())
        if prompts is None:
            return
        kept_prompts = [prompts[i] for i in valid]
        for name, scorer in self.clip_scorers.items():
            cos = scorer.cosines(x, kept_prompts)
            self.clip_cosines[name].append(cos.double().cpu())
            groups = [(ALL, cos)]
            if self.per_category and cats is not None:
                groups += [(c, cos[[i for i, k in enumerate(cats) if k == c]]) for c in sorted(set(cats))]
            for cat, values in groups:
                acc = self.clip_sums[name].setdefault(cat, [0.0, 0])
                acc[0] += float(values.double().sum())
                acc[1] += values.numel()
        if self.prompt_accuracy is not None:
            if hasattr(self.prompt_accuracy, "per_image"):  # keeps its own per-image scores
                self.prompt_accuracy.update(x, kept_prompts)
            else:
                self.prompt_hits += prompt_hits(self.prompt_accuracy, x, kept_prompts)

    # ------------------------------------------------------------------ results

    def _reduce_tables(self, table: dict[str, dict[str, FrechetStats]]) -> None:
        for name, per in table.items():
            cats = _all_gather_union(sorted(per))
            dim = self.extractors[name].dim
            for cat in cats:
                per.setdefault(cat, FrechetStats(dim)).all_reduce()

    def sync(self) -> None:
        """Sum every statistic over ranks and gather the per-image values (no-op in one process)."""
        if not self.distributed or getattr(self, "_synced", False):
            return
        self._synced = True
        self._reduce_tables(self.gen_stats)
        for per in self.clip_sums.values():
            for cat in _all_gather_union(sorted(per)):
                acc = per.setdefault(cat, [0.0, 0])
                t = _reduce_tensor(torch.tensor(acc, dtype=torch.float64))
                per[cat] = [float(t[0]), int(round(float(t[1])))]
        for name in self.extractors:
            local = torch.cat(self.gen_feats[name]) if self.gen_feats[name] else torch.zeros(0, self.extractors[name].dim)
            self.gen_feats[name] = [gather_rows(local)]
        for name in self.clip_scorers:
            local = torch.cat(self.clip_cosines[name]) if self.clip_cosines[name] else torch.zeros(0, dtype=torch.float64)
            self.clip_cosines[name] = [gather_rows(local)]
        self.gen_categories = _gather_list(self.gen_categories)
        self.prompt_hits = _gather_list(self.prompt_hits)
        self.num_images = int(_reduce_tensor(torch.tensor([float(self.num_images)], dtype=torch.float64))[0])
        gathered = [None] * dist_utils.world_size()
        torch.distributed.all_gather_object(gathered, self.failures)
        self.failures = [f for part in gathered for f in part]

    def _features(self, table: dict[str, list[torch.Tensor]], name: str) -> np.ndarray:
        parts = table[name]
        return torch.cat(parts).numpy() if parts else np.zeros((0, self.extractors[name].dim), np.float32)

    def compute(self) -> dict[str, float]:
        self.sync()
        if self.num_images == 0:
            first = f"; first failure: {self.failures[0][0]}: {self.failures[0][1]}" if self.failures else ""
            raise ValueError(f"no valid generated images to score ({len(self.failures)} excluded{first})")
        metrics: dict[str, float] = {"num_images": float(self.num_images), "num_failed": float(len(self.failures))}
        self.notes = []
        for name in self.extractors:
            gen, ref = self.gen_stats[name], self.ref_stats[name]
            if ALL not in ref or ref[ALL].count < 2:
                raise ValueError(f"{name}: no reference statistics; call add_reference() or reference_from_cache_or() first")
            metrics["num_reference"] = float(ref[ALL].count)
            if gen[ALL].count < 2:
                raise ValueError(f"{name}: at least 2 valid generated images are needed, got {gen[ALL].count}")
            metrics[name] = compute_fd(gen[ALL], ref[ALL])
            dim = self.extractors[name].dim
            if min(gen[ALL].count, ref[ALL].count) < dim:
                self.notes.append(f"{name} on {min(gen[ALL].count, ref[ALL].count)} images < {dim} feature "
                                  f"dimensions: singular covariances, strongly biased; compare {kid_name(name)}")
            gen_f, ref_f = self._features(self.gen_feats, name), self._features(self.ref_feats, name)
            have_feats = len(gen_f) == gen[ALL].count and len(ref_f) == ref[ALL].count
            if have_feats:
                metrics[kid_name(name)] = KID(ref_f)(gen_f)
            dropped = []
            for cat in sorted(c for c in gen if c):
                if cat not in ref or gen[cat].count < 2 or ref[cat].count < 2:
                    continue
                if min(gen[cat].count, ref[cat].count) >= dim:
                    metrics[f"{name}/{cat}"] = compute_fd(gen[cat], ref[cat])
                else:
                    dropped.append(cat)
                if have_feats:
                    gi = [i for i, c in enumerate(self.gen_categories) if c == cat]
                    ri = [i for i, c in enumerate(self.ref_categories) if c == cat]
                    if len(gi) >= 2 and len(ri) >= 2:
                        metrics[f"{kid_name(name)}/{cat}"] = KID(ref_f[ri])(gen_f[gi])
            if dropped:
                self.notes.append(f"per-category {name} left out for {len(dropped)} categories with fewer images "
                                  f"than its {dim} feature dimensions ({', '.join(dropped[:5])}"
                                  f"{', ...' if len(dropped) > 5 else ''}); per-category {kid_name(name)} kept")
        for name, per in self.clip_sums.items():
            for cat, (total, count) in sorted(per.items()):
                if count:
                    metrics[name if cat == ALL else f"{name}/{cat}"] = clip_score_from_sum(total, count)
        if self.prompt_accuracy is not None:
            metrics.update(self._prompt_means())
            skipped = getattr(self.prompt_accuracy, "skipped", 0) or sum(h is None for h in self.prompt_hits)
            if skipped:
                log.info("prompt accuracy: %d prompts outside the synthscenes grammar were skipped", skipped)
        for note in self.notes:
            log.debug("note: %s", note)
        if self.failures:
            log.warning("%d generated images were excluded from every metric (see .failures)", len(self.failures))
        return metrics

    def _prompt_values(self) -> dict[str, np.ndarray]:
        """Per scored image, each prompt-accuracy number's value (all ranks); the metric is the mean."""
        if self.prompt_accuracy is not None and hasattr(self.prompt_accuracy, "per_image"):
            per = self.prompt_accuracy.per_image()
            if self.distributed:
                per = {k: gather_rows(torch.as_tensor(np.asarray(v, dtype=np.float64))).numpy()
                       for k, v in sorted(per.items())}
            return {k: np.asarray(v, dtype=np.float64) for k, v in per.items()}
        scored = [h for h in self.prompt_hits if h is not None]
        keys = sorted({k for h in scored for k in h})
        return {k: np.asarray([h[k] for h in scored if k in h], dtype=np.float64) for k in keys}

    def _prompt_means(self) -> dict[str, float]:
        return {k: float(v.mean()) for k, v in self._prompt_values().items() if v.size}

    def intervals(self, resamples: int = DEFAULT_RESAMPLES, fd_resamples: int = DEFAULT_FD_RESAMPLES,
                  seed: int = 0) -> dict[str, list[float]]:
        """95% percentile-bootstrap intervals over the generated images of every overall number."""
        self.sync()
        out: dict[str, tuple[float, float]] = {}
        for name in self.extractors:
            gen_f, ref_f = self._features(self.gen_feats, name), self._features(self.ref_feats, name)
            if len(gen_f) < 2 or len(ref_f) < 2:
                continue
            if fd_resamples > 0:
                mu, sigma = self.ref_stats[name][ALL].mean_cov()
                out[name] = FrechetBootstrap(None, mu, sigma).interval(gen_f, fd_resamples, seed)
            out[kid_name(name)] = KID(ref_f).interval(gen_f, resamples, seed)
        for name, parts in self.clip_cosines.items():
            if parts:
                out[name] = bootstrap_mean(torch.cat(parts).numpy(), resamples, seed, transform=clip_score_transform)
        for key, values in self._prompt_values().items():
            out[key] = bootstrap_mean(values, resamples, seed)
        return {k: [float(a), float(b)] for k, (a, b) in out.items() if np.isfinite([a, b]).all()}

    @torch.no_grad()
    def noise_floor(self, heldout_images, description: str = "") -> dict:
        """Real-vs-real distances: features of another real set (same protocol) against the reference."""
        x = heldout_images
        if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
            x = x.float() / 255.0
        out: dict = {"num_images": int(len(x)), "sets": description}
        for name, extractor in self.extractors.items():
            feats = torch.cat([extractor(x[i:i + 256]) for i in range(0, len(x), 256)]).numpy()
            ref = self.ref_stats[name].get(ALL)
            if ref is None or ref.count < 2 or len(feats) < 2:
                continue
            out[name] = compute_fd(FrechetStats.from_features(feats), ref)
            ref_f = self._features(self.ref_feats, name)
            if len(ref_f) >= 2:
                out[kid_name(name)] = KID(ref_f)(feats)
        return out

    def noise_floor_halves(self) -> dict:
        """Real-vs-real distances of the reference's two halves (n/2 vs n/2) when no other real set exists."""
        out: dict = {}
        for name in self.extractors:
            ref_f = self._features(self.ref_feats, name)
            half = len(ref_f) // 2
            if half < 2:
                continue
            a, b = ref_f[:half], ref_f[half:2 * half]
            out[name] = compute_fd(FrechetStats.from_features(a), FrechetStats.from_features(b))
            out[kid_name(name)] = KID(b)(a)
            out.update(num_images=half, sets=f"reference split in halves ({half} vs {half}): n/2, not n")
        return out

    def copy_reference_from(self, other: GenerationMetrics) -> None:
        """Share another scorer's reference set (baselines are scored against the same reference)."""
        self.ref_stats = other.ref_stats
        self.ref_feats = other.ref_feats
        self.ref_categories = other.ref_categories
        self.resolution = other.resolution

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
            text = getattr(self.prompt_accuracy, "protocol", None)
            extra["prompt_accuracy"] = text if isinstance(text, str) else PROMPT_ACCURACY_TEXT
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
