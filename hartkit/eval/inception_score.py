"""Inception Score (Salimans et al. 2016) as ADM's evaluator computes it.

``IS = mean over splits of exp(mean_x KL(p(y|x) || p(y)))``, where ``p(y|x)`` is the softmax of the
1008 Inception logits of an image without the output bias (``pool_3 @ W``; see
``InceptionFID.class_logits``), ``p(y)`` the mean of ``p(y|x)`` over the split, and the splits are
consecutive runs of ``split_size`` (5000) images in sample order, the last one possibly shorter:
ADM's ``Evaluator.compute_inception_score`` (guided-diffusion ``evaluations/evaluator.py``), itself a
copy of improved-GAN's ``inception_score/model.py``. With 50,000 samples that is 10 splits of 5000.

Two choices to know when comparing numbers:

- the order matters: a split of 5000 images holds only the classes in it, and with 50 images per
  class written class after class its IS cannot exceed about 100. hartkit's ImageNet protocol orders
  its samples class-interleaved (sample i has class i mod C), so every split holds every class equally;
- torchmetrics' ``InceptionScore`` computes the same per-split score but shuffles the images first
  (unseeded) and reports the standard deviation with ddof 1; here the std over splits uses ddof 0
  (improved-GAN's ``np.std``). On one split both give the same score (tested).

``log p`` comes from ``log_softmax`` and ``log p(y)`` from a log-sum-exp, in float64: a class whose probability
underflows to 0 in every image of a split adds 0, where ADM's ``np.log`` of the softmax would give NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SPLIT_SIZE = 5000  # ADM evaluator: compute_inception_score(split_size=5000)


def split_scores(logits_NC, split_size: int = SPLIT_SIZE) -> np.ndarray:
    """exp(mean KL) of each consecutive split of ``split_size`` images (the last one may be shorter)."""
    x = torch.as_tensor(np.asarray(logits_NC) if not isinstance(logits_NC, torch.Tensor) else logits_NC)
    x = x.detach().to("cpu", torch.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"logits must have shape (N >= 1, classes), got {tuple(x.shape)}")
    if split_size < 1:
        raise ValueError(f"split_size must be positive, got {split_size}")
    if not torch.isfinite(x).all():
        raise ValueError("logits contain NaN or Inf")
    scores = []
    for s in range(0, x.shape[0], split_size):
        log_p = torch.log_softmax(x[s:s + split_size], dim=1)
        log_marginal = torch.logsumexp(log_p, dim=0, keepdim=True) - math.log(log_p.shape[0])  # log mean p
        kl = (log_p.exp() * (log_p - log_marginal)).sum(1).mean()
        scores.append(float(torch.exp(kl)))
    return np.asarray(scores)


def inception_score(logits_NC, split_size: int = SPLIT_SIZE) -> tuple[float, float]:
    """(mean, std) over the splits of :func:`split_scores`; ADM reports the mean."""
    scores = split_scores(logits_NC, split_size)
    return float(scores.mean()), float(scores.std())
