"""Research probe: how much a scene's last-scale codes tell about its main object, per background kind.

For each token cache given (with the data overrides it was built from), over the first 480 training scenes of
each background kind: the entropy of the last-scale code at the main object's centre cell, that entropy given the
object's colour, their difference I(code; colour), and the entropy of the code at a background cell far from the
object (the cell mirrored through the centre). Plug-in estimates on equal sample sizes, comparable across kinds.

    python scripts/research/object_code_info.py artifacts/token_cache/<cache> "max_objects=1" \
        [artifacts/token_cache/<other> "max_objects=1 backgrounds=[noise] noise_grain=0.0" ...]
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
from omegaconf import OmegaConf
from probe_log import ROOT  # scripts/research/probe_log.py

from hartkit.ar_models.token_cache import load_cache
from hartkit.data.builder import as_data_config, render_synthscene

PER_KIND = 480


def entropy(labels) -> float:
    counts = np.array(list(Counter(labels).values()), float)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="+", help="token cache folder, then its data overrides in one string, ...")
    ap.add_argument("--side", type=int, default=8, help="side of the last scale (8 for the default tokenizer)")
    args = ap.parse_args()
    if len(args.pairs) % 2:
        raise SystemExit("give each token cache with its data overrides (\"\" for none)")
    for cache_dir, overrides in zip(args.pairs[::2], args.pairs[1::2]):
        cfg = as_data_config(OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "data" / "synthscenes.yaml"),
                                             OmegaConf.from_dotlist(overrides.split())))
        cache = load_cache(cache_dir)
        if cache is None:
            raise SystemExit(f"no token cache at {cache_dir}")
        idx = cache["tensors"]["idx"]
        side = args.side
        last = idx[:, -side * side:].view(-1, side, side)
        rows = []
        for i in range(idx.shape[0]):
            _, _, layout = render_synthscene(cfg, "train", i)
            cell = layout.resolution / side
            (cx, cy), main_obj = layout.main.center, layout.main
            col, row = int(cx // cell), int(cy // cell)
            rows.append((layout.background_kind, main_obj.color, int(last[i, row, col]),
                         int(last[i, side - 1 - row, side - 1 - col])))
        for kind in sorted({r[0] for r in rows}):
            sel = [r for r in rows if r[0] == kind][:PER_KIND]
            codes, colours = [r[2] for r in sel], [r[1] for r in sel]
            h = entropy(codes)
            h_given = sum(entropy([r[2] for r in sel if r[1] == c]) * colours.count(c) / len(sel) for c in set(colours))
            print(f"{cache_dir} [{overrides}] {kind}: n={len(sel)} H(object code)={h:.2f} H(code | colour)={h_given:.2f} "
                  f"I={h - h_given:.2f} distinct={len(set(codes))} H(far background code)="
                  f"{entropy([r[3] for r in sel]):.2f} distinct={len(set(r[3] for r in sel))}")


if __name__ == "__main__":
    main()
