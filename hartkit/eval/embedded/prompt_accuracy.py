"""Prompt accuracy: does a generated image show the main object its prompt names?

A zero-shot, GenEval-like check with the embedded evaluator, by counterfactual
prompts. For each image the candidates are its own prompt with only the main
object's shape changed (10 texts, one per shape) and with only its colour
changed (8 texts, one per colour); the image "shows the shape" when its own
prompt scores highest among the shape variants, likewise for colour, and
"joint" when both hold. Why this form:

- the candidates are complete captions in the grammar the evaluator was
  trained on (size, position, the other objects and the background included),
  so they are in-distribution, unlike bare words ("star") or object phrases;
- exactly one attribute differs between candidates, so only the main object's
  shape (or colour) can decide, not the background or the secondary objects;
- separate shape and colour tests cost 17 texts per image instead of 80 for
  the full product, and give the two attribute accuracies directly.

Prompts that do not follow the synthscenes grammar (e.g. MJHQ prompts) are
counted as ``skipped``, never as wrong.
"""

from __future__ import annotations

import torch

from hartkit.data.synthscenes import COLORS, SHAPES, parse_caption


def _phrase(named: dict, color: str, shape: str) -> str:
    return f"a {named['size']} {color} {shape} at the {named['position']}"


def counterfactuals(prompt: str, named: dict | None = None) -> tuple[list[str], list[str]] | None:
    """(prompt with each shape, prompt with each colour) for the main object, or None outside the grammar."""
    named = named or parse_caption(prompt)
    if named.get("shape") is None:
        return None
    own = _phrase(named, named["color"], named["shape"])
    start = prompt.index(own)  # the main object is named first

    def swap(color: str, shape: str) -> str:
        return prompt[:start] + _phrase(named, color, shape) + prompt[start + len(own):]

    return [swap(named["color"], s) for s in SHAPES], [swap(c, named["shape"]) for c in COLORS]


class PromptAccuracy:
    """Accumulates shape / colour / joint hits of the main object over batches."""

    def __init__(self, evaluator):
        self.evaluator = evaluator
        self.colors = list(COLORS)
        self.shapes = list(SHAPES)
        self.reset()

    def reset(self) -> None:
        self.shape_hits = 0
        self.color_hits = 0
        self.joint_hits = 0
        self.count = 0
        self.skipped = 0

    @torch.no_grad()
    def predict(self, images_B3HW_01: torch.Tensor, prompts: list[str]) -> list[dict | None]:
        """Per image: predicted and named shape and colour, or None for a prompt outside the grammar."""
        named = [parse_caption(p) for p in prompts]
        cands = [counterfactuals(p, n) for p, n in zip(prompts, named)]
        keep = [i for i, c in enumerate(cands) if c is not None]
        out: list[dict | None] = [None] * len(prompts)
        if not keep:
            return out
        img = self.evaluator.image_features(images_B3HW_01[keep], normalize=True)  # (K, D)
        texts = [t for i in keep for t in cands[i][0] + cands[i][1]]  # all candidates in one text batch
        per = len(self.shapes) + len(self.colors)
        txt = self.evaluator.text_features(texts, normalize=True).view(len(keep), per, -1)
        sims = torch.einsum("kd,kcd->kc", img, txt)
        for row, i in enumerate(keep):
            out[i] = {
                "shape": self.shapes[int(sims[row, : len(self.shapes)].argmax())],
                "color": self.colors[int(sims[row, len(self.shapes) :].argmax())],
                "named_shape": named[i]["shape"],
                "named_color": named[i]["color"],
            }
        return out

    def update(self, images_B3HW_01: torch.Tensor, prompts: list[str]) -> None:
        for pred in self.predict(images_B3HW_01, prompts):
            if pred is None:
                self.skipped += 1
                continue
            self.count += 1
            shape_ok = pred["shape"] == pred["named_shape"]
            color_ok = pred["color"] == pred["named_color"]
            self.shape_hits += shape_ok
            self.color_hits += color_ok
            self.joint_hits += shape_ok and color_ok

    def state(self) -> torch.Tensor:
        return torch.tensor([self.shape_hits, self.color_hits, self.joint_hits, self.count, self.skipped],
                            dtype=torch.float64)

    def load_state(self, t: torch.Tensor) -> None:
        self.shape_hits, self.color_hits, self.joint_hits, self.count, self.skipped = (int(round(v)) for v in t.tolist())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {}
        return {
            "prompt_accuracy": self.joint_hits / self.count,
            "prompt_accuracy/shape": self.shape_hits / self.count,
            "prompt_accuracy/color": self.color_hits / self.count,
        }
