"""Score a folder (or zip) of generated images against a reference folder, and print the metrics as JSON:

    python -m hartkit.tools.score_folder samples/ --reference mjhq30k_imgs/ --fd fid --clip clip_score \\
        --set inception_weights=/models/inception-2015-12-05.pt clip_pretrained=/models/vit_l_14.bin
    (or: hartkit-score-folder ...)

The layout and the scoring rules are ``hartkit.eval.folder.score_folder``'s.
"""

from __future__ import annotations

import argparse
import json

from omegaconf import OmegaConf

from hartkit.eval.config import EvalConfig
from hartkit.eval.folder import META_FILE, score_folder
from hartkit.utils.logging import setup_logging


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hartkit.tools.score_folder",
                                description="Score a folder of generated images against a reference folder.")
    p.add_argument("generated", help="folder or zip of generated images (<category>/<id>.png)")
    p.add_argument("--reference", required=True, help="folder or zip of real images in the same layout")
    p.add_argument("--meta", help=f"{META_FILE} of the generated images (default: in/beside the folder)")
    p.add_argument("--fd", nargs="*", default=None, help="feature spaces (default: eval config's fd_features)")
    p.add_argument("--clip", nargs="*", default=None, help="CLIP scores (default: eval config's clip_score)")
    p.add_argument("--set", nargs="*", default=[], help="eval config overrides key=value, e.g. resolution=256")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    setup_logging()
    cfg = OmegaConf.merge(OmegaConf.structured(EvalConfig), OmegaConf.from_dotlist(args.set))
    if args.fd is not None:
        cfg.fd_features = args.fd
    if args.clip is not None:
        cfg.clip_score = args.clip
    out = score_folder(args.generated, cfg, args.device, reference=args.reference, meta=args.meta)
    print(json.dumps({"metrics": out.metrics, "intervals_95": out.intervals, "notes": out.notes,
                      "excluded": out.failures, "protocol": out.protocol_fields}, indent=2))



if __name__ == "__main__":
    main()
