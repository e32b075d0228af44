"""Generation metrics: KID, intervals, per-category FD only where n >= dims, noise floor, gen_eval baselines."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from eval_fakes import install
from omegaconf import OmegaConf

from hartkit.eval import generation
from hartkit.eval.intervals import kid


class FakeCLIP:
    """cosine = mean pixel value - 0.3 if the prompt says 'bright', else 0.3 - mean (depends on the pairing)."""

    name, model_name, weights_hash, scaling = "clip_score_embedded", "fake", "0" * 64, "100*max(mean cos,0)"

    def cosines(self, x, prompts):
        m = x.float().mean(dim=(1, 2, 3))
        sign = torch.tensor([1.0 if "bright" in p else -1.0 for p in prompts])
        return (sign * (m - 0.3)).double()


class FakePromptAccuracy:
    """New-style scorer: keeps its own per-image scores (hit when a 'bright' prompt has a bright image)."""

    protocol = "fake: bright prompt and mean > 0.5"

    def __init__(self):
        self.rows, self.skipped = [], 0

    def update(self, x, prompts):
        m = x.float().mean(dim=(1, 2, 3))
        self.rows += [float(("bright" in p) == bool(v > 0.5)) for p, v in zip(prompts, m)]

    def per_image(self):
        return {"prompt_accuracy": np.asarray(self.rows)}


def _images(n, seed, bright):
    g = torch.Generator().manual_seed(seed)
    level = torch.where(torch.tensor(bright).view(-1, 1, 1, 1), 0.75, 0.25)
    return (level + 0.2 * torch.rand(n, 3, 16, 16, generator=g)).clamp(0, 1)


@pytest.fixture
def setup(monkeypatch):
    install(monkeypatch)
    monkeypatch.setattr(generation, "build_clip_scorer", lambda name, cfg, device: FakeCLIP())
    n = 48
    bright = [i % 2 == 0 for i in range(n)]
    prompts = ["a bright scene" if b else "a dark scene" for b in bright]
    cats = ["a", "b", "c", "d"] * (n // 4)
    cfg = OmegaConf.create({"fd_features": ["fd_test"], "clip_score": ["clip_score_embedded"],
                            "prompt_accuracy": False, "per_category": True, "stats_cache": "/nonexistent"})

    def make(distributed=None):
        m = generation.GenerationMetrics(cfg, "cpu", distributed=distributed)
        m.prompt_accuracy = FakePromptAccuracy()
        return m

    ref = _images(n, 0, bright)
    return SimpleNamespace(make=make, ref=ref, prompts=prompts, cats=cats, bright=bright, n=n, cfg=cfg)


def test_kid_intervals_and_per_category_fd_rule(setup):
    m = setup.make()
    m.add_reference(setup.ref, setup.cats)
    gen = _images(setup.n, 1, setup.bright)
    m.update(gen, setup.prompts, setup.cats)
    out = m.compute()
    ref_f, gen_f = m._features(m.ref_feats, "fd_test"), m._features(m.gen_feats, "fd_test")
    assert out["kid_test"] == pytest.approx(kid(gen_f, ref_f), rel=1e-12)
    # 12 images per category < 16 feature dimensions: no per-category FD, per-category KID instead, and a note
    assert not any(k.startswith("fd_test/") for k in out)
    assert {f"kid_test/{c}" for c in "abcd"} <= set(out)
    assert any("per-category fd_test left out" in n for n in m.notes)
    assert out["prompt_accuracy"] == 1.0 and out["clip_score_embedded"] > 0
    ci = m.intervals(resamples=300, fd_resamples=60)
    for key in ("fd_test", "kid_test", "clip_score_embedded"):
        assert ci[key][0] <= out[key] <= ci[key][1], key
    assert ci["prompt_accuracy"] == [1.0, 1.0]
    assert m.protocol_fields()["extra"]["prompt_accuracy"] == "fake: bright prompt and mean > 0.5"


def test_per_category_fd_kept_when_enough_images(setup):
    m = setup.make()
    cats = ["a"] * setup.n
    m.add_reference(setup.ref, cats)
    m.update(_images(setup.n, 1, setup.bright), setup.prompts, cats)
    out = m.compute()
    assert "fd_test/a" in out and not any("left out" in n for n in m.notes)


def test_noise_floor_is_the_fd_of_another_real_set(setup):
    m = setup.make()
    m.add_reference(setup.ref, setup.cats)
    other = _images(setup.n, 7, setup.bright)
    nf = m.noise_floor(other, "other")
    check = setup.make()
    check.add_reference(setup.ref, setup.cats)
    check.update(other)
    assert nf["fd_test"] == pytest.approx(check.compute()["fd_test"], rel=1e-9)
    assert nf["num_images"] == setup.n and nf["sets"] == "other" and "kid_test" in nf
    halves = m.noise_floor_halves()
    assert halves["num_images"] == setup.n // 2 and "n/2" in halves["sets"]


def test_gen_eval_baselines_floor_ceiling_and_shuffled_prompts(setup, monkeypatch):
    from hartkit.stages import gen_eval

    m = setup.make()
    ref_u8 = (setup.ref * 255).round().to(torch.uint8)
    m.add_reference(ref_u8, setup.cats)
    # the baseline scorers are built by gen_eval; give them the fake prompt scorer too
    real_init = generation.GenerationMetrics.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        self.prompt_accuracy = FakePromptAccuracy()

    monkeypatch.setattr(generation.GenerationMetrics, "__init__", init)
    es = SimpleNamespace(reference_batches=lambda: iter([(ref_u8[:20], setup.cats[:20]), (ref_u8[20:], setup.cats[20:])]),
                         prompts=setup.prompts, categories=setup.cats)
    held = ((_images(setup.n, 9, setup.bright) * 255).round().to(torch.uint8), setup.prompts, "held-out")
    cfg = SimpleNamespace(eval=setup.cfg)
    rows = {r[0]: r for r in gen_eval.generation_baselines(cfg, "cpu", es, m, held, 200, 40)}
    floor, ceiling = rows["baseline: mean colour"], rows["baseline: real images"]
    shuffled = rows["baseline: real images, shuffled prompts"]
    assert floor[1] == "floor" and ceiling[1] == "ceiling" and shuffled[1] == "floor"
    # real images are much closer to the reference than flat images; the ceiling's FD is the noise floor
    assert ceiling[2]["fd_test"] < floor[2]["fd_test"]
    assert ceiling[2]["fd_test"] == pytest.approx(m.noise_floor(held[0], "")["fd_test"], rel=1e-9)
    # prompt metrics: own prompts perfect, shuffled prompts near chance, no distances in the shuffled row
    assert ceiling[2]["prompt_accuracy"] == 1.0
    assert 0.2 < shuffled[2]["prompt_accuracy"] < 0.8
    assert not any(k.startswith(("fd_", "kid")) for k in shuffled[2])
    for _, _, metrics, ci, _, _ in rows.values():
        for k, (lo, hi) in ci.items():
            assert lo <= metrics[k] <= hi, k
    from hartkit.eval.tables import format_generation_rows

    text = format_generation_rows([(r[0], r[1], r[2], r[3]) for r in rows.values()], {"fd_test": 1.0})
    assert "[ceiling]" in text and "noise floor" in text
