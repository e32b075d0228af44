"""Prompt accuracy: does an image show every object its prompt names, with the named attributes?

A GenEval-like check: GenEval runs an object detector on the generated image
and compares what it finds with what the prompt asks for; here the detector is
the embedded evaluator's cell reader (``EmbeddedEvaluator.layout``): for each
of the 3 x 3 grid cells, the probability that an object is there, and the
probabilities of its shape, colour and size (softmax per attribute).

For every object the prompt names, with shape s, colour c, size z, cell p:

- ``shape`` is right when cell p is read as occupied (probability > 0.5) and
  the most probable shape there is s; ``color`` and ``size`` likewise (each is
  its own argmax; nothing is a joint softmax over attribute combinations);
- ``position`` is right when, of all nine cells, the one that most looks like
  "a c s" (largest P(occupied) * P(shape s) * P(colour c)) is p, or another
  cell the prompt gives an object of the same shape and colour;
- the object is right when all four are.

Per image, each attribute's score is the fraction of the prompt's objects it
gets right; ``prompt_accuracy`` (joint) is 1 when every named object is right
in all four attributes, else 0; ``main_*`` judge the first-named (main) object
only; ``count`` is 1 when the number of cells read as occupied equals the
number of objects named; ``class_accuracy`` is 1 when some cell read as
occupied shows the main object's shape (the image's category), wherever it is:
the score of the class-conditional protocol (``ar.condition=class``, as VAR's
ImageNet protocol), where the model is given only the category. Each reported
number is the mean of its per-image score over the images (``per_image``
gives those scores, for intervals).
Prompts that do not follow the synthscenes grammar (e.g. MJHQ prompts) are
counted as ``skipped``, never as wrong.
"""

from __future__ import annotations

import numpy as np
import torch

from hartkit.data.synthscenes import COLORS, POSITIONS, SHAPES, SIZES, parse_caption

# per-image scores, in this order in state()
SCORES: tuple[str, ...] = (
    "joint", "shape", "color", "size", "position", "count",
    "main_shape", "main_color", "main_size", "main_position", "class",
)  # fmt: skip

PROTOCOL = ("embedded cell reader (per 3x3 grid cell: occupied, shape, colour, size, each an argmax of its own "
            "softmax); per named object: shape/color/size right if its cell is occupied (p > 0.5) and the argmax "
            "matches; position right if the cell most like the named colour+shape is the named cell; per image: "
            "fraction of named objects right per attribute, joint = all named objects right in all four; "
            "main_* = first-named object only; count = occupied cells == objects named; class_accuracy = some "
            "occupied cell shows the main object's shape; mean over images")


def _metric_name(score: str) -> str:
    if score == "class":
        return "class_accuracy"
    return "prompt_accuracy" if score == "joint" else f"prompt_accuracy/{score}"


class PromptAccuracy:
    """Accumulates per-image scores (see the module docstring) over batches."""

    protocol = PROTOCOL

    def __init__(self, evaluator):
        self.evaluator = evaluator
        self.shapes, self.colors, self.sizes = list(SHAPES), list(COLORS), list(SIZES)
        self.reset()

    def reset(self) -> None:
        self.count = 0  # images judged
        self.skipped = 0  # prompts outside the grammar
        self._sums = np.zeros(len(SCORES), dtype=np.float64)
        self._rows: list[np.ndarray] = []  # per judged image: its SCORES (this process's images only)

    @torch.no_grad()
    def judge(self, images_B3HW_01: torch.Tensor, prompts: list[str]) -> list[dict | None]:
        """Per image: {score name: value in [0, 1]} plus ``objects`` (what was read per named object),
        or None for a prompt outside the grammar."""
        named = [parse_caption(p)["objects"] for p in prompts]
        keep = [i for i, objs in enumerate(named) if objs]
        out: list[dict | None] = [None] * len(prompts)
        if not keep:
            return out
        read = self.evaluator.layout(images_B3HW_01[keep])
        occupied = read["occupied"].cpu()
        shape_p, color_p, size_p = read["shape"].cpu(), read["color"].cpu(), read["size"].cpu()
        for row, i in enumerate(keep):
            objs = named[i]
            cells = [POSITIONS.index(o["position"]) for o in objs]
            judged = []
            for o, cell in zip(objs, cells):
                s, c = self.shapes.index(o["shape"]), self.colors.index(o["color"])
                here = bool(occupied[row, cell] > 0.5)
                likeness = occupied[row] * shape_p[row, :, s] * color_p[row, :, c]  # per cell
                same = {cell2 for o2, cell2 in zip(objs, cells) if (o2["shape"], o2["color"]) == (o["shape"], o["color"])}
                judged.append({
                    "shape": here and int(shape_p[row, cell].argmax()) == s,
                    "color": here and int(color_p[row, cell].argmax()) == c,
                    "size": here and self.sizes[int(size_p[row, cell].argmax())] == o["size"],
                    "position": int(likeness.argmax()) in same,
                    "read_shape": self.shapes[int(shape_p[row, cell].argmax())] if here else None,
                    "read_color": self.colors[int(color_p[row, cell].argmax())] if here else None,
                    "read_size": self.sizes[int(size_p[row, cell].argmax())] if here else None,
                })
            attrs = ("shape", "color", "size", "position")
            scores = {a: float(np.mean([j[a] for j in judged])) for a in attrs}
            scores["joint"] = float(all(j[a] for j in judged for a in attrs))
            scores["count"] = float(int((occupied[row] > 0.5).sum()) == len(objs))
            scores.update({f"main_{a}": float(judged[0][a]) for a in attrs})
            main_shape = self.shapes.index(objs[0]["shape"])
            read_shapes = shape_p[row].argmax(dim=-1)  # per cell
            scores["class"] = float(bool(((occupied[row] > 0.5) & (read_shapes == main_shape)).any()))
            out[i] = {**scores, "objects": judged}
        return out

    def update(self, images_B3HW_01: torch.Tensor, prompts: list[str]) -> None:
        for res in self.judge(images_B3HW_01, prompts):
            if res is None:
                self.skipped += 1
                continue
            row = np.array([res[k] for k in SCORES], dtype=np.float64)
            self.count += 1
            self._sums += row
            self._rows.append(row)

    def per_image(self) -> dict[str, np.ndarray]:
        """Per judged image (this process's, in update order), each score's value; the metric is its mean."""
        rows = np.stack(self._rows) if self._rows else np.zeros((0, len(SCORES)))
        return {_metric_name(k): rows[:, j].copy() for j, k in enumerate(SCORES)}

    def state(self) -> torch.Tensor:
        """Sums that add up across processes: [count, skipped, sum of each score in SCORES order]."""
        return torch.tensor([self.count, self.skipped, *self._sums.tolist()], dtype=torch.float64)

    def load_state(self, t: torch.Tensor) -> None:
        """Take summed state (e.g. all-reduced over ranks); per_image() keeps this process's images only."""
        values = t.tolist()
        self.count, self.skipped = int(round(values[0])), int(round(values[1]))
        self._sums = np.array(values[2:], dtype=np.float64)

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {}
        return {_metric_name(k): float(v / self.count) for k, v in zip(SCORES, self._sums)}
