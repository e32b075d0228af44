"""PyTorch view of a built dataset: tensors in [-1, 1] and a collate function."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset


def pil_to_tensor(img) -> torch.Tensor:
    """PIL RGB -> float tensor 3 x H x W in [-1, 1]."""
    a = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class ImageTensorDataset(TorchDataset):
    """Map-style dataset over a `datasets.Dataset` built by build_dataset.

    Item i: dict(image=float tensor 3 x H x W in [-1, 1], prompt=str, category=str,
    category_id=int, index=i).
    """

    def __init__(self, hf_dataset):
        self.ds = hf_dataset

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.ds[int(index)]
        return {
            "image": pil_to_tensor(row["image"]),
            "prompt": row["prompt"],
            "category": row["category"],
            "category_id": int(row["category_id"]),
            "index": int(index),
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (B x 3 x H x W); prompts/categories as lists; ids and indices as LongTensors."""
    return {
        "image": torch.stack([it["image"] for it in items]),
        "prompt": [it["prompt"] for it in items],
        "category": [it["category"] for it in items],
        "category_id": torch.tensor([it["category_id"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }
