"""Research probe: how much of the prompt's main object each scale of a tokenizer's codes carries.

For a discrete or hybrid tokenizer artifact, the train and test splits of a synthscenes config are encoded; for
each scale k a linear classifier (multinomial logistic regression, full batch, weight decay) is trained on the
train split to read the main object's position (9 cells), colour and shape from the *embeddings* of the codes of
scale k alone (pn_k^2 x C values: what the generator's inputs are built from). Held-out accuracy is reported per
scale next to the majority-class rate. A scale whose codes carry the object's cell lets a generator tie that
scale to the prompt; the question it answers is whether two tokenizers' codes differ there.

    python scripts/research/code_probe.py artifacts/tokenizer/discrete-<hash> 'backgrounds=[gradient]' --label ...
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from probe_log import ROOT, append_record  # scripts/research/probe_log.py

from hartkit import load_tokenizer
from hartkit.data import ImageTensorDataset, build_dataset, collate
from hartkit.data.synthscenes import parse_caption

LOG = ROOT / "results" / "research" / "code_probe.jsonl"
ATTRIBUTES = ("position", "color", "shape")


@torch.no_grad()
def encode_split(tok, data_cfg, split: str, n: int, batch_size: int = 100):
    """(per-scale code embeddings (N, pn^2 * C), prompts) of the first ``n`` images of ``split``."""
    ds = ImageTensorDataset(build_dataset(data_cfg, split))
    n = min(n, len(ds))
    feats: list[list[torch.Tensor]] = [[] for _ in tok.patch_nums]
    prompts: list[str] = []
    for i in range(0, n, batch_size):
        batch = collate([ds[j] for j in range(i, min(n, i + batch_size))])
        tokens = tok.encode(batch["image"])
        for k, idx in enumerate(tokens.indices):
            feats[k].append(tok.code_embedding(idx).flatten(1).float())
        prompts += list(batch["prompt"])
    return [torch.cat(f) for f in feats], prompts


def labels(prompts: list[str], attribute: str, vocab: list[str] | None = None):
    values = [parse_caption(p)[attribute] for p in prompts]
    vocab = vocab or sorted({v for v in values if v is not None})
    return torch.tensor([vocab.index(v) if v in vocab else -1 for v in values]), vocab


def probe_accuracy(x_tr, y_tr, x_te, y_te, classes: int, steps: int = 300, weight_decay: float = 1e-3) -> float:
    """Held-out accuracy of a multinomial logistic regression on standardised features."""
    keep_tr, keep_te = y_tr >= 0, y_te >= 0
    x_tr, y_tr, x_te, y_te = x_tr[keep_tr], y_tr[keep_tr], x_te[keep_te], y_te[keep_te]
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    torch.manual_seed(0)
    lin = torch.nn.Linear(x_tr.shape[1], classes)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(lin(x_tr), y_tr).backward()
        opt.step()
    with torch.no_grad():
        return float((lin(x_te).argmax(1) == y_te).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokenizer", help="a tokenizer artifact folder")
    ap.add_argument("overrides", nargs="*", help="data overrides, e.g. 'backgrounds=[gradient]'")
    ap.add_argument("--label", required=True)
    ap.add_argument("--data", default=str(ROOT / "conf" / "data" / "synthscenes.yaml"))
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--no-log", action="store_true")
    args = ap.parse_args()
    tok = load_tokenizer(args.tokenizer).model.eval()
    data_cfg = OmegaConf.merge(OmegaConf.load(args.data), OmegaConf.from_dotlist(args.overrides))
    x_tr, p_tr = encode_split(tok, data_cfg, "train", args.train)
    x_te, p_te = encode_split(tok, data_cfg, "test", args.test)
    rec = {"label": args.label, "tokenizer": args.tokenizer, "data_overrides": args.overrides,
           "patch_nums": list(tok.patch_nums), "n_train": len(p_tr), "n_test": len(p_te)}
    for attribute in ATTRIBUTES:
        y_tr, vocab = labels(p_tr, attribute)
        y_te, _ = labels(p_te, attribute, vocab)
        majority = float((y_te == torch.bincount(y_tr[y_tr >= 0]).argmax()).float().mean())
        accs = [round(probe_accuracy(x_tr[k], y_tr, x_te[k], y_te, len(vocab)), 4) for k in range(len(x_tr))]
        rec[attribute] = {"per_scale": accs, "majority": round(majority, 4), "classes": len(vocab)}
        print(f"{attribute:>9} (majority {majority:.3f}): " + " ".join(
            f"pn{p}={a:.3f}" for p, a in zip(tok.patch_nums, accs)))
    if not args.no_log:
        append_record(LOG, rec)


if __name__ == "__main__":
    main()
