"""Generation metrics with the embedded evaluator: per-category numbers, bad images, reference cache, MJHQ layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hartkit.eval.config import EvalConfig
from hartkit.eval.embedded.model import expected_sha256
from hartkit.eval.folder import score_folder
from hartkit.eval.generation import GenerationMetrics
from hartkit.eval.intervals import kid


def _scenes(start: int, n: int, resolution: int = 64):
    from hartkit.data.synthscenes import render_scene

    images, prompts, cats = [], [], []
    for i in range(start, start + n):
        img, caption, layout = render_scene(0, "test", i, resolution)
        images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        prompts.append(caption)
        cats.append(layout.main.shape)
    return torch.stack(images).float() / 255, prompts, cats


def _cfg(tmp_path, **kw):
    base = dict(fd_features=["fd_embedded"], clip_score=["clip_score_embedded"], prompt_accuracy=True,
                stats_cache=str(tmp_path / "stats"))
    base.update(kw)
    return EvalConfig(**base)


@pytest.fixture(scope="module")
def real():
    return _scenes(0, 40), _scenes(40, 40)


def test_overall_and_per_category_metrics(tmp_path, real):
    (ref, _, ref_cats), (gen, prompts, cats) = real
    m = GenerationMetrics(_cfg(tmp_path))
    m.add_reference(ref, ref_cats)
    m.update(gen, prompts, cats)
    out = m.compute()
    assert out["num_images"] == 40 and out["num_failed"] == 0 and out["num_reference"] == 40
    for cat in set(cats):  # a few images per category < 64 feature dimensions: KID, not FD, per category
        assert f"kid_embedded/{cat}" in out and f"clip_score_embedded/{cat}" in out
        assert f"fd_embedded/{cat}" not in out
    assert any("per-category fd_embedded left out" in note for note in m.notes)
    assert out["kid_embedded"] == pytest.approx(
        kid(m._features(m.gen_feats, "fd_embedded"), m._features(m.ref_feats, "fd_embedded")), rel=1e-12)
    assert 0 <= out["prompt_accuracy"] <= out["prompt_accuracy/shape"] <= 1
    assert 0 <= out["prompt_accuracy/color"] <= 1
    assert out["clip_score_embedded"] >= 0
    assert not any(k.startswith("fid") for k in out)  # only Inception numbers are called fid

    noise = GenerationMetrics(_cfg(tmp_path))
    noise.add_reference(ref, ref_cats)
    noise.update(torch.rand_like(gen, generator=None), prompts, cats)
    assert noise.compute()["fd_embedded"] > out["fd_embedded"]

    fields = m.protocol_fields()
    assert "fd_embedded=hartkit embedded-clip" in fields["feature_extractor"]
    assert fields["extractor_hash"] == expected_sha256()
    assert "100*max(mean cos,0)" in fields["extra"]["clip_score_embedded"]


def test_fd_grows_monotonically_with_image_noise(tmp_path, real):
    (ref, _, _), _ = real
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(ref.shape, generator=g)
    values = []
    for sigma in (0.0, 0.05, 0.15, 0.4):  # the same images, increasingly noisy
        m = GenerationMetrics(_cfg(tmp_path, clip_score=[], prompt_accuracy=False, per_category=False))
        m.add_reference(ref)
        m.update((ref + sigma * noise).clamp(0, 1))
        values.append(m.compute()["fd_embedded"])
    assert values[0] == pytest.approx(0.0, abs=1e-4)  # 40 images, 64-d: sqrtm of a near-singular product
    assert values == sorted(values) and values[1] > 1e-3, values


def test_bad_generated_images_are_reported_by_name_and_excluded(tmp_path, real):
    (ref, _, ref_cats), (gen, prompts, cats) = real
    images = list(gen[:10])
    images[2] = images[2].clone()
    images[2][0, 0, 0] = float("nan")
    images[5] = torch.rand(3, 32, 32)  # wrong size
    images[7] = images[7] * 2 - 1  # [-1, 1] passed by mistake
    names = [f"sample_{i}.png" for i in range(10)]
    m = GenerationMetrics(_cfg(tmp_path))
    m.add_reference(ref, ref_cats)
    m.update(images, prompts[:10], cats[:10], names=names)
    out = m.compute()
    assert [n for n, _ in m.failures] == ["sample_2.png", "sample_5.png", "sample_7.png"]
    assert "NaN" in m.failures[0][1] and "32x32" in m.failures[1][1] and "[0, 1]" in m.failures[2][1]
    assert out["num_failed"] == 3 and out["num_images"] == 7

    keep = [i for i in range(10) if i not in (2, 5, 7)]
    clean = GenerationMetrics(_cfg(tmp_path))
    clean.add_reference(ref, ref_cats)
    clean.update(gen[keep], [prompts[i] for i in keep], [cats[i] for i in keep])
    assert out["fd_embedded"] == pytest.approx(clean.compute()["fd_embedded"], rel=1e-9)


def test_all_images_bad_is_an_error_not_a_number(tmp_path, real):
    (ref, _, _), _ = real
    m = GenerationMetrics(_cfg(tmp_path, clip_score=[], prompt_accuracy=False))
    m.add_reference(ref)
    m.update(torch.full((2, 3, 64, 64), float("nan")))
    with pytest.raises(ValueError, match="no valid generated images"):
        m.compute()


def test_reference_statistics_are_cached(tmp_path, real):
    (ref, _, ref_cats), (gen, prompts, cats) = real
    calls = []

    def batches():
        calls.append(1)
        yield ref, ref_cats

    results = []
    for expect_hit in (False, True):
        m = GenerationMetrics(_cfg(tmp_path))
        assert m.reference_from_cache_or("test-protocol", batches) is expect_hit
        m.update(gen, prompts, cats)
        results.append(m.compute())
    assert len(calls) == 1
    assert results[0]["fd_embedded"] == pytest.approx(results[1]["fd_embedded"], rel=1e-12)
    assert results[0]["kid_embedded/star"] == pytest.approx(results[1]["kid_embedded/star"], rel=1e-12)


def _write_mjhq_layout(root, images, prompts, cats, size, start=0):
    """MJHQ-30K's layout: <root>/<category>/<hash>.jpg + meta_data.json {hash: {category, prompt}}."""
    meta = {}
    for i, (img, prompt, cat) in enumerate(zip(images, prompts, cats)):
        key = f"{start + i:08x}"
        (root / cat).mkdir(parents=True, exist_ok=True)
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).resize((size, size), Image.BICUBIC).save(root / cat / f"{key}.png")
        meta[key] = {"category": cat, "prompt": prompt}
    (root / "meta_data.json").write_text(json.dumps(meta))
    return meta


def test_mjhq_protocol_on_a_fixture_in_mjhq_layout(tmp_path, real):
    (ref, ref_prompts, ref_cats), (gen, prompts, cats) = real
    ref_root, gen_root = tmp_path / "mjhq30k_imgs", tmp_path / "samples"
    _write_mjhq_layout(ref_root, ref, ref_prompts, ref_cats, size=128)  # real images: larger, resized by protocol
    _write_mjhq_layout(gen_root, gen, prompts, cats, size=64)
    (gen_root / cats[0] / "corrupt.png").write_bytes(b"\x89PNG not really")
    Image.new("RGB", (48, 48)).save(gen_root / cats[1] / "small.png")
    cfg = _cfg(tmp_path, protocol="mjhq30k", resolution=64, prompt_accuracy=False, batch_size=16)
    result = score_folder(gen_root, cfg, reference=ref_root)
    out = result.metrics
    assert {"fd_embedded", "clip_score_embedded"} <= set(out)
    per_cat = {k.split("/", 1)[1] for k in out if k.startswith("kid_embedded/")}
    assert per_cat == set(cats)
    assert {k.split("/", 1)[1] for k in out if k.startswith("clip_score_embedded/")} == set(cats)
    bad = dict(result.failures)
    assert set(bad) == {f"{cats[0]}/corrupt.png", f"{cats[1]}/small.png"}
    assert "unreadable" in bad[f"{cats[0]}/corrupt.png"] and "48x48" in bad[f"{cats[1]}/small.png"]
    assert out["num_failed"] == 2 and out["num_images"] == 40 and result.num_files == 42
    lo, hi = result.intervals["fd_embedded"]
    assert lo <= out["fd_embedded"] <= hi and "kid_embedded" in result.intervals


def test_mjhq_evaluation_set_through_the_data_module(tmp_path, real):
    from hartkit.data.config import DataConfig
    from hartkit.eval.protocols import evaluation_set

    (ref, ref_prompts, ref_cats), (gen, prompts, cats) = real
    root = tmp_path / "mjhq30k_imgs"
    _write_mjhq_layout(root, ref, ref_prompts, ref_cats, size=128)
    cfg = _cfg(tmp_path, protocol="mjhq30k", resolution=64, num_images=20, prompt_accuracy=False)
    es = evaluation_set(DataConfig(name="mjhq30k", path=str(root), resolution=128), cfg)
    assert es.num_images == 20 and len(set(es.categories)) == 10  # category-balanced subset
    m = GenerationMetrics(cfg)
    m.reference_from_cache_or(es.cache_key, es.reference_batches)
    lookup = dict(zip(ref_prompts, range(40)))
    fake = torch.stack([gen[lookup[p] % 40] for p in es.prompts])  # one "generated" image per prompt
    m.update(fake, es.prompts, es.categories)
    out = m.compute()
    assert "fd_embedded" in out and out["num_images"] == 20
    proto = es.protocol("generation", m)
    assert proto.dataset == "mjhq30k" and proto.resolution == 64 and proto.num_images == 20
    assert proto.extra["eval_protocol"] == "mjhq30k"
    with pytest.raises(ValueError, match="data=mjhq30k"):
        evaluation_set(DataConfig(name="synthscenes"), cfg)


def test_protocol_names_a_generated_dataset_drawn_with_other_settings():
    """Rows scored on other scenes (another background set, seed or object count) get another protocol, so the
    leaderboard does not put them in one table; the defaults keep the plain name existing records carry."""
    from hartkit.data.config import DataConfig
    from hartkit.eval.protocols import dataset_variant

    default = vars(DataConfig()) | {"name": "synthscenes"}
    assert dataset_variant(default) == "synthscenes"
    assert dataset_variant(default | {"backgrounds": ["gradient"]}) == "synthscenes[backgrounds=gradient]"
    assert dataset_variant(default | {"seed": 3, "max_objects": 1}) == "synthscenes[seed=3;max_objects=1]"
    assert dataset_variant(default | {"noise_grain": 0.0}) == "synthscenes[noise_grain=0.0]"
    assert dataset_variant(default | {"test_size": 100, "num_workers": 2}) == "synthscenes"  # same scenes
    assert dataset_variant({"name": "mjhq30k", "seed": 5}) == "mjhq30k"
    from omegaconf import OmegaConf  # the stages pass config nodes (lists are ListConfig)

    node = OmegaConf.create(default | {"backgrounds": ["gradient", "noise"]})
    assert dataset_variant(dict(node)) == "synthscenes[backgrounds=gradient,noise]"
