"""The shipped embedded evaluator: hash-checked weights, CLIP score and prompt accuracy that mean something."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from hartkit.eval.clip_score import build_clip_scorer
from hartkit.eval.embedded import (
    SHA256_PATH,
    WEIGHTS_PATH,
    EmbeddedEvaluator,
    EmbeddedWeightsError,
    verify_weights,
)
from hartkit.eval.embedded.model import expected_sha256
from hartkit.eval.embedded.prompt_accuracy import PromptAccuracy, counterfactuals
from hartkit.utils.hashing import file_sha256

SHAPE_FLOOR = 0.10  # chance (1 in 10); the shipped weights reach about 0.25 (README)


@pytest.fixture(scope="module")
def scenes():
    from hartkit.data.synthscenes import render_scene

    images, prompts = [], []
    for i in range(1000, 1060):  # test split, the first images beyond those the README quality numbers use
        img, caption, _ = render_scene(0, "test", i, 64)
        images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        prompts.append(caption)
    return torch.stack(images).float() / 255, prompts


def test_shipped_weights_match_their_sha256_and_size_budget():
    assert WEIGHTS_PATH.exists() and SHA256_PATH.exists()
    assert file_sha256(WEIGHTS_PATH) == expected_sha256()
    assert WEIGHTS_PATH.stat().st_size <= 10 * 1024 * 1024
    assert EmbeddedEvaluator().weights_hash == expected_sha256()


def test_tampered_or_missing_weights_are_refused(tmp_path):
    copy = tmp_path / "weights.safetensors"
    shutil.copy(WEIGHTS_PATH, copy)
    (tmp_path / "weights.sha256").write_text("0" * 64 + "  weights.safetensors\n")
    with pytest.raises(EmbeddedWeightsError, match="sha256"):
        verify_weights(copy)
    with pytest.raises(EmbeddedWeightsError, match="train_embedded"):
        verify_weights(tmp_path / "absent.safetensors")


def test_clip_score_of_matching_captions_beats_shuffled_captions(scenes):
    images, prompts = scenes
    scorer = build_clip_scorer("clip_score_embedded")
    matching = scorer.score(images, prompts)
    shuffled = scorer.score(images, prompts[7:] + prompts[:7])
    assert matching > shuffled + 1.0


def test_prompt_accuracy_on_real_scenes_is_well_above_chance(scenes):
    images, prompts = scenes
    acc = PromptAccuracy(EmbeddedEvaluator())
    acc.update(images, prompts)
    acc.update(images[:2], ["a photo of a cat", "an oil painting"])  # outside the grammar: skipped, not wrong
    out = acc.compute()
    assert acc.count == 60 and acc.skipped == 2
    # colour (1 in 8 by chance) and shape (1 in 10) are both recognised well above chance on real scenes
    assert out["prompt_accuracy/color"] > 3 * 0.125
    assert out["prompt_accuracy/shape"] > SHAPE_FLOOR
    assert out["prompt_accuracy"] <= min(out["prompt_accuracy/shape"], out["prompt_accuracy/color"]) + 1e-9
    # the same images with a wrong colour named in the prompt score lower
    from hartkit.data.synthscenes import COLORS, parse_caption

    colors = list(COLORS)
    wrong = []
    for p in prompts:
        named = parse_caption(p)
        other = colors[(colors.index(named["color"]) + 1) % len(colors)]
        wrong.append(p.replace(f"{named['color']} {named['shape']}", f"{other} {named['shape']}", 1))
    acc.reset()
    acc.update(images, wrong)
    assert acc.compute()["prompt_accuracy/color"] < out["prompt_accuracy/color"]


def test_counterfactual_candidates_change_only_the_main_object():
    prompt = "a large red star at the top left and a small red circle at the center, on a brick wall"
    shapes, colors = counterfactuals(prompt)
    assert len(shapes) == 10 and len(colors) == 8 and prompt in shapes and prompt in colors
    assert "a large red heart at the top left and a small red circle at the center, on a brick wall" in shapes
    assert "a large blue star at the top left and a small red circle at the center, on a brick wall" in colors
    assert counterfactuals("a photo of a cat") is None


def test_evaluator_names_its_resize_protocol():
    ev = EmbeddedEvaluator()
    assert ev.resize.endswith(f"to {ev.image_size} px")
    assert ev.preprocess(torch.rand(2, 3, 64, 64)).shape[-1] == ev.image_size


def test_layout_labels_and_readout_loss():
    from hartkit.data.synthscenes import COLORS, POSITIONS, SHAPES
    from hartkit.eval.train_embedded import LayoutHeads, layout_labels

    labels = layout_labels("a large red star at the top left and a small blue circle at the center, on a brick wall")
    assert labels.shape == (len(POSITIONS), 3)
    assert labels[0].tolist() == [SHAPES.index("star") + 1, list(COLORS).index("red") + 1, 3]
    assert labels[4].tolist() == [SHAPES.index("circle") + 1, list(COLORS).index("blue") + 1, 1]
    assert int((labels.sum(1) > 0).sum()) == 2  # the other seven cells are empty
    assert layout_labels("a photo of a cat") is None
    torch.manual_seed(0)
    heads = LayoutHeads(16)
    f = torch.randn(4, 16)
    lab = labels.expand(4, -1, -1)
    loss, acc = heads(f, lab)
    opt = torch.optim.Adam(heads.parameters(), lr=0.05)
    for _ in range(50):  # the read-out can fit its labels: the loss is well-formed and differentiable
        opt.zero_grad()
        heads(f, lab)[0].backward()
        opt.step()
    later, later_acc = heads(f, lab)
    assert later < loss / 4 and later_acc == 1.0


@pytest.mark.slow
def test_training_is_deterministic_and_writes_its_files(tmp_path):
    import json

    from hartkit.eval.train_embedded import build_parser, train

    args = ["--steps", "2", "--warmup", "1", "--batch-size", "8", "--train-size", "16", "--photos", "4",
            "--test-size", "10"]
    first = train(build_parser().parse_args([*args, "--out", str(tmp_path / "a")]))
    second = train(build_parser().parse_args([*args, "--out", str(tmp_path / "b")]))
    assert first["sha256"] == second["sha256"]
    for name in ("weights.safetensors", "weights.sha256", "quality.json"):
        assert (tmp_path / "a" / name).exists()
    assert verify_weights(tmp_path / "a" / "weights.safetensors") == first["sha256"]
    quality = json.loads((tmp_path / "a" / "quality.json").read_text())["quality"]
    assert 0 <= quality["real_prompt_accuracy_shape"] <= 1 and quality["retrieval_candidates"] == 10
