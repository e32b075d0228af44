"""The block-causal scale mask as per-query key-prefix lengths (torch only, no Triton).

Scale ids never decrease along the sequence, so the keys a query may see are a prefix of the
key sequence. The Triton kernel works from these lengths; the benchmark uses them to count the
tiles the kernel skips.
"""

from __future__ import annotations

import math

import torch


def visible_key_lengths(scale_ids_L: torch.Tensor, q_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kv_len per query, first query per key), both int32.

    The queries are the last ``q_len`` tokens of the sequence (``q_len < L`` when decoding with
    a KV cache). ``kv_len[i]`` = number of keys with scale <= scale of query i;
    ``q_start[j]`` = index of the first query that sees key j (``q_len`` when none does).
    """
    sid = scale_ids_L.reshape(-1)
    L = sid.numel()
    if q_len > L:
        raise ValueError(f"{q_len} queries but only {L} scale ids; scale_ids must cover the keys")
    if L > 1 and bool((sid[1:] < sid[:-1]).any()):
        raise ValueError("scale_ids must be non-decreasing along the sequence (text prefix = scale 0, "
                         "then scales small to large)")
    kv_len = torch.searchsorted(sid, sid[L - q_len:], right=True)
    q_start = torch.searchsorted(kv_len, torch.arange(L, device=sid.device, dtype=kv_len.dtype), right=True)
    return kv_len.to(torch.int32), q_start.to(torch.int32)


def key_tiles_visited(scale_ids_L: torch.Tensor, block_m: int, block_n: int) -> tuple[int, int]:
    """(key tiles the forward visits, all query x key tiles) for a self-attention sequence; the
    benchmark reports the skipped fraction."""
    L = scale_ids_L.numel()
    kv_len, _ = visible_key_lengths(scale_ids_L, L)
    n_m = math.ceil(L / block_m)
    visited = 0
    for i in range(n_m):
        hi = int(kv_len[min((i + 1) * block_m, L) - 1])
        visited += math.ceil(hi / block_n)
    return visited, n_m * math.ceil(L / block_n)
