"""ImageNet-256 protocol on a tiny ILSVRC-layout fixture: data, Inception Score, precision/recall, npz references,
the Inception record, sharding over two ranks and the gen_eval stage (no network, no trained model)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from eval_fakes import PooledPixels
from PIL import Image

from hartkit.errors import ConfigError
from hartkit.eval import features as features_mod

SYNSETS = ["n01440764", "n01443537", "n01484850"]  # sorted: class ids 0, 1, 2
NAMES = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n01484850": "great white shark, white shark"}
COLOURS = {"n01440764": (200, 40, 40), "n01443537": (40, 200, 40), "n01484850": (40, 40, 200)}
RES = 32
VAL_PER_CLASS = 8


def _photo(rng, synset: str, size: tuple[int, int]) -> Image.Image:
    """A non-square image whose colour says its class, with texture so that images differ."""
    w, h = size
    base = np.asarray(COLOURS[synset], dtype=np.float64)
    a = base + rng.normal(0, 35, size=(h, w, 3)) + np.linspace(-30, 30, w)[None, :, None] * rng.uniform(-1, 1)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def make_imagenet(root: Path, train_per_class: int = 4, val_per_class: int = VAL_PER_CLASS, mapping: bool = True,
                  seed: int = 0) -> Path:
    """VAR's layout: root/train/<synset>/*.JPEG, root/val/<synset>/*.JPEG (+ LOC_synset_mapping.txt)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for synset in SYNSETS:
            folder = root / split / synset
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                size = (int(rng.integers(40, 64)), int(rng.integers(40, 64)))
                _photo(rng, synset, size).save(folder / f"{synset}_{k:04d}.png")
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden: no class
    if mapping:
        (root / "LOC_synset_mapping.txt").write_text("".join(f"{s} {NAMES[s]}\n" for s in SYNSETS))
    return root


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    return make_imagenet(tmp_path_factory.mktemp("imagenet"))


def _data(root, **kw):
    from hartkit.data.config import DataConfig

    base = dict(name="imagenet", path=str(root), resolution=RES, resize_filter="lanczos", mid_reso=1.125)
    base.update(kw)
    return DataConfig(**base)


class PooledPixelsWithClasses(PooledPixels):
    """The tests' pooled-pixel features plus a fixed linear classifier (10 classes, centred on a grey image's
    features) for the Inception Score."""

    def __init__(self):
        super().__init__()
        self.head = torch.randn(self.dim, 10, generator=torch.Generator().manual_seed(1)).double() * 3
        self.grey = self(torch.full((1, 3, 4, 4), 0.5)).double()

    def class_logits(self, feats_BD: torch.Tensor) -> torch.Tensor:
        return (feats_BD.double() - self.grey) @ self.head


@pytest.fixture
def fake_features(monkeypatch):
    monkeypatch.setitem(features_mod.EXTRACTORS, "fd_test", lambda cfg, device: PooledPixelsWithClasses())
    features_mod.clear_extractor_cache()
    yield
    features_mod.clear_extractor_cache()


def _eval_cfg(tmp_path, **kw):
    from hartkit.eval.config import EvalConfig

    base = dict(protocol="imagenet256", num_images=10**6, samples_per_class=VAL_PER_CLASS, resolution=RES,
                fd_features=["fd_test"], clip_score=[], prompt_accuracy=False, per_category=False, baselines=False,
                inception_score=True, precision_recall=True, precision_recall_k=3, bootstrap=50, bootstrap_fd=10,
                stats_cache=str(tmp_path / "stats"))
    base.update(kw)
    return EvalConfig(**base)


# ---------------------------------------------------------------------- data=imagenet


def test_imagenet_data_follows_var_layout_class_order_and_transform(imagenet_root):
    from hartkit.data import build_dataset

    ds = build_dataset(_data(imagenet_root), "test")
    assert len(ds) == 3 * VAL_PER_CLASS
    assert ds.features["category_id"].names == SYNSETS  # sorted synset folders; the hidden folder is no class
    rows = ds[:]
    for cat, cid, prompt in zip(rows["category"], rows["category_id"], rows["prompt"]):
        assert SYNSETS[cid] == cat
        assert prompt == f"a photo of {NAMES[cat].split(',')[0]}"
    # VAR utils/data.py val transform, computed independently: shorter side -> round(1.125 * 32) = 36 (LANCZOS,
    # the longer side truncated as torchvision does), then the centre 32 x 32 (offsets rounded half to even)
    first = rows["image"][0]
    src = Image.open(imagenet_root / "val" / SYNSETS[0] / f"{SYNSETS[0]}_0000.png").convert("RGB")
    w, h = src.size
    short, long_ = min(w, h), max(w, h)
    new_long = int(36 * long_ / short)
    new_w, new_h = (36, new_long) if w <= h else (new_long, 36)
    resized = src.resize((new_w, new_h), Image.Resampling.LANCZOS)
    top, left = int(round((new_h - RES) / 2.0)), int(round((new_w - RES) / 2.0))
    expected = np.asarray(resized)[top:top + RES, left:left + RES]
    assert first.size == (RES, RES) and np.array_equal(np.asarray(first), expected)


def test_imagenet_layout_errors_name_the_fix(tmp_path, imagenet_root):
    from hartkit.data import build_dataset
    from hartkit.data.imagenet import class_list

    flat = tmp_path / "flat"
    make_imagenet(flat, val_per_class=1)
    Image.new("RGB", (40, 40)).save(flat / "val" / "ILSVRC2012_val_00000001.JPEG")  # the raw, unsorted val layout
    with pytest.raises(ConfigError, match="LOC_val_solution.csv"):
        build_dataset(_data(flat), "test")
    extra = tmp_path / "extra"
    make_imagenet(extra, val_per_class=1)
    (extra / "val" / "n99999999").mkdir()
    Image.new("RGB", (40, 40)).save(extra / "val" / "n99999999" / "x.png")
    with pytest.raises(ConfigError, match="n99999999"):
        build_dataset(_data(extra), "test")
    with pytest.raises(FileNotFoundError, match="data.path"):
        class_list(tmp_path / "nowhere")
    kaggle = tmp_path / "kaggle"
    make_imagenet(kaggle / "Data" / "CLS-LOC", val_per_class=1, mapping=False)
    assert class_list(kaggle) == SYNSETS  # Kaggle's ILSVRC layout: Data/CLS-LOC/{train,val}


# ---------------------------------------------------------------------- Inception Score


def _adm_inception_score(logits: np.ndarray, split_size: int) -> float:
    """guided-diffusion evaluations/evaluator.py compute_inception_score, on softmax outputs."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    preds = e / e.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def test_inception_score_matches_adm_and_torchmetrics():
    from torchmetrics.image.inception import InceptionScore

    from hartkit.eval.inception_score import inception_score, split_scores

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 7, generator=g, dtype=torch.float64) * 3
    assert inception_score(logits, 5)[0] == pytest.approx(_adm_inception_score(logits.numpy(), 5), rel=1e-12)
    assert len(split_scores(logits, 5)) == 3  # 5 + 5 + 2, the last split shorter, as ADM
    assert inception_score(torch.zeros(20, 5))[0] == pytest.approx(1.0)  # every image unsure: IS 1
    confident = torch.eye(4, dtype=torch.float64).repeat(5, 1) * 60  # sure and balanced over 4 classes: IS 4
    assert inception_score(confident)[0] == pytest.approx(4.0, rel=1e-9)
    never = torch.cat([confident, torch.full((20, 1), -1000.0, dtype=torch.float64)], 1)  # a class p(y) = 0 in float
    assert inception_score(never)[0] == pytest.approx(4.0, rel=1e-9)  # finite: the class adds 0, not NaN

    class Logits(nn.Module):  # torchmetrics' custom feature: the images are the logits
        def forward(self, x):
            return x

    tm = InceptionScore(feature=Logits(), splits=1)
    tm.update(logits)
    assert float(tm.compute()[0]) == pytest.approx(inception_score(logits, 12)[0], rel=1e-9)
    tm = InceptionScore(feature=Logits(), splits=3)  # torchmetrics shuffles first: same splits after its permutation
    tm.update(logits)
    torch.manual_seed(5)
    tm_mean = float(tm.compute()[0])
    torch.manual_seed(5)
    perm = torch.randperm(12)
    assert tm_mean == pytest.approx(inception_score(logits[perm], 4)[0], rel=1e-9)


# ---------------------------------------------------------------------- precision / recall


def _brute_force_pr(ref: np.ndarray, gen: np.ndarray, k: int) -> tuple[float, float]:
    def d2(a, b):
        return ((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1)

    r_ref = np.partition(d2(ref, ref), k, axis=1)[:, k]
    r_gen = np.partition(d2(gen, gen), k, axis=1)[:, k]
    d = d2(gen, ref)
    return float((d <= r_ref[None, :]).any(1).mean()), float((d <= r_gen[:, None]).any(0).mean())


def test_precision_recall_matches_a_brute_force_kynkaanniemi_estimate():
    from hartkit.eval.precision_recall import precision_recall

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(70, 8)).astype(np.float32)
    gen = (rng.normal(size=(50, 8)) * 1.3 + 0.4).astype(np.float32)
    pr = precision_recall(ref, gen, k=3, block=16)  # blocks smaller than the sets
    assert (pr.precision, pr.recall) == pytest.approx(_brute_force_pr(ref, gen, 3), abs=1e-12)
    assert 0 < pr.precision < 1 and 0 < pr.recall < 1
    same = precision_recall(ref, ref, k=3)
    assert same.precision == 1.0 and same.recall == 1.0
    # mode dropping: samples from one of the reference's two clusters are all realistic but cover half of it
    two = np.concatenate([rng.normal(size=(40, 8)), rng.normal(size=(40, 8)) + 20]).astype(np.float32)
    dropped = precision_recall(two, rng.normal(size=(40, 8)).astype(np.float32), k=3)
    assert dropped.precision > 0.8 and dropped.recall <= 0.5
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(ref[:3], gen, k=3)


# ---------------------------------------------------------------------- the protocol


def _reference_images(root, split: str = "test") -> tuple[np.ndarray, list[str]]:
    """A split (default: val) at the protocol's preprocessing, as uint8 (N, R, R, 3), and its synsets."""
    from hartkit.data import build_dataset

    ds = build_dataset(_data(root), split)
    rows = ds[:]
    return np.stack([np.asarray(im) for im in rows["image"]]), list(rows["category"])


def _write_npz(path: Path, images: np.ndarray | None = None, stats_of: np.ndarray | None = None) -> Path:
    """An ADM-style reference batch: mu/sigma of the fake features of ``stats_of`` and/or ``arr_0`` images."""
    arrays = {}
    if stats_of is not None:
        feats = PooledPixels()(torch.from_numpy(stats_of).permute(0, 3, 1, 2).contiguous()).double().numpy()
        arrays.update(mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    if images is not None:
        arrays["arr_0"] = images
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _score(es, eval_cfg, generate, batch: int = 5):
    """What gen_eval does: metrics, reference, class-conditional samples in batches with their indices."""
    m = es.make_metrics(eval_cfg, "cpu")
    es.load_reference(m)
    ids = es.category_ids()
    for s in range(0, es.num_images, batch):
        idx = list(range(s, min(s + batch, es.num_images)))
        m.update(generate([ids[j] for j in idx], idx), [es.prompts[j] for j in idx],
                 [es.categories[j] for j in idx], indices=idx)
    return m, m.compute()


def _real_generator(images: np.ndarray, cats: list[str]):
    """A 'generator' that returns real images of the requested class (the train split's: not the reference's)."""
    by_class = {c: [i for i, k in enumerate(cats) if k == c] for c in SYNSETS}

    def gen(class_ids, idx):
        out = [images[by_class[SYNSETS[c]][j % len(by_class[SYNSETS[c]])]] for c, j in zip(class_ids, idx)]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255
    return gen


def _noise_generator(class_ids, idx):
    g = torch.Generator().manual_seed(idx[0])
    return torch.rand(len(class_ids), 3, RES, RES, generator=g)


def test_imagenet256_evaluation_set_is_class_interleaved_and_balanced(imagenet_root, tmp_path, fake_features):
    from hartkit.eval.protocols import evaluation_set

    es = evaluation_set(_data(imagenet_root), _eval_cfg(tmp_path, samples_per_class=4))
    assert es.num_images == 12 and es.category_ids() == [0, 1, 2] * 4
    assert es.categories[:3] == SYNSETS and es.prompts[1] == "a photo of goldfish"
    first = evaluation_set(_data(imagenet_root), _eval_cfg(tmp_path, samples_per_class=4, num_images=5))
    assert first.category_ids() == [0, 1, 2, 0, 1]  # the first N stay balanced
    subset = evaluation_set(_data(imagenet_root, categories=[SYNSETS[2]]), _eval_cfg(tmp_path, samples_per_class=2))
    assert subset.category_ids() == [2, 2]  # a class subset keeps the ids of the full sorted synset list
    with pytest.raises(ConfigError, match="data=imagenet"):
        evaluation_set(_data(imagenet_root, name="synthscenes"), _eval_cfg(tmp_path))
    with pytest.raises(ConfigError, match="eval.baselines=false"):
        evaluation_set(_data(imagenet_root), _eval_cfg(tmp_path, baselines=True))


def test_npz_reference_gives_the_numbers_of_the_same_images_as_a_folder(imagenet_root, tmp_path, fake_features):
    from hartkit.eval.protocols import evaluation_set

    images, cats = _reference_images(imagenet_root)
    npz = _write_npz(tmp_path / "VIRTUAL_tiny.npz", images=images, stats_of=images)
    gen = _real_generator(*_reference_images(imagenet_root, "train"))
    es_val = evaluation_set(_data(imagenet_root), _eval_cfg(tmp_path))
    es_npz = evaluation_set(_data(imagenet_root), _eval_cfg(tmp_path, reference=str(npz)))
    m_val, val = _score(es_val, _eval_cfg(tmp_path), gen)
    m_npz, out = _score(es_npz, _eval_cfg(tmp_path, reference=str(npz)), gen)
    assert out["num_images"] == 3 * VAL_PER_CLASS and out["num_reference"] == len(images)
    for key in ("fd_test", "kid_test", "is_test", "is_test_std", "precision_test", "recall_test"):
        assert out[key] == pytest.approx(val[key], rel=1e-6, abs=1e-9), key  # mu/sigma == statistics of arr_0
    _, noise = _score(es_npz, _eval_cfg(tmp_path, reference=str(npz)), _noise_generator)
    assert noise["fd_test"] > 5 * out["fd_test"] and noise["precision_test"] < out["precision_test"]
    assert 1.0 < out["is_test"] <= 10.0 and 1.0 < noise["is_test"] <= 10.0  # at most the head's 10 classes
    ci = m_npz.intervals(50, 10)
    assert {"fd_test", "kid_test", "precision_test"} <= set(ci)
    assert ci["precision_test"][0] <= out["precision_test"] <= ci["precision_test"][1]
    proto = es_npz.protocol("generation", m_npz)
    assert proto.extra["eval_protocol"] == "imagenet256" and proto.dataset == "imagenet"
    assert "mu/sigma" in proto.extra["reference"] and "arr_0" in proto.extra["reference"]
    assert "sha256:" in proto.extra["reference"] and "precision_recall" in proto.extra
    assert "not Inception" in proto.extra["feature_pipeline"]  # a stand-in feature space never claims to be FID
    assert es_npz.cache_key != es_val.cache_key and "npz sha256=" in es_npz.cache_key

    folder = tmp_path / "refs"  # a folder of the same real images (already at the protocol's size)
    for i, (img, cat) in enumerate(zip(images, cats)):
        (folder / cat).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / cat / f"{i}.png")
    es_dir = evaluation_set(_data(imagenet_root, mid_reso=1.0), _eval_cfg(tmp_path, reference=str(folder)))
    _, from_dir = _score(es_dir, _eval_cfg(tmp_path, reference=str(folder)), gen)
    assert from_dir["fd_test"] == pytest.approx(val["fd_test"], rel=1e-6)


def test_npz_with_only_mu_sigma_gives_fid_and_is_and_says_what_precision_recall_need(imagenet_root, tmp_path,
                                                                                     fake_features):
    from hartkit.eval.protocols import evaluation_set

    images, _ = _reference_images(imagenet_root)
    npz = _write_npz(tmp_path / "stats_only.npz", stats_of=images)
    cfg = _eval_cfg(tmp_path, reference=str(npz))
    es = evaluation_set(_data(imagenet_root), cfg)
    m, out = _score(es, cfg, _real_generator(*_reference_images(imagenet_root, "train")))
    assert "fd_test" in out and "is_test" in out and "num_reference" not in out
    assert "precision_test" not in out and "kid_test" not in out
    assert any("reference images" in n and "arr_0" in n for n in m.notes)
    assert es.protocol("generation", m).extra["reference_images"] == "none (npz mu/sigma only)"
    ci = m.intervals(50, 10)
    assert ci["fd_test"][0] <= out["fd_test"] <= ci["fd_test"][1] and "kid_test" not in ci


def test_reference_file_errors_say_where_to_put_it(imagenet_root, tmp_path, fake_features):
    from hartkit.eval.protocols import evaluation_set

    with pytest.raises(FileNotFoundError, match="VIRTUAL_imagenet256_labeled.npz") as info:
        evaluation_set(_data(imagenet_root), _eval_cfg(tmp_path, reference=str(tmp_path / "missing.npz")))
    assert "eval.reference" in str(info.value)
    images, _ = _reference_images(imagenet_root)
    small = _write_npz(tmp_path / "small.npz", images=images[:, ::2, ::2])
    with pytest.raises(ConfigError, match="16x16 images"):
        evaluation_set(_data(imagenet_root), _eval_cfg(tmp_path, reference=str(small)))
    wide = tmp_path / "wide.npz"
    with open(wide, "wb") as fh:
        np.savez(fh, mu=np.zeros(2048), sigma=np.eye(2048))
    es = evaluation_set(_data(imagenet_root), _eval_cfg(tmp_path, reference=str(wide)))
    with pytest.raises(ConfigError, match="2048-d statistics"):
        es.load_reference(es.make_metrics(_eval_cfg(tmp_path, reference=str(wide)), "cpu"))
    empty = tmp_path / "empty.npz"
    with open(empty, "wb") as fh:
        np.savez(fh, labels=np.zeros(3))
    with pytest.raises(ConfigError, match="neither mu/sigma nor arr_0"):
        evaluation_set(_data(imagenet_root), _eval_cfg(tmp_path, reference=str(empty)))


# ---------------------------------------------------------------------- the fid extractor: modes, logits, record


class _TinyInceptionScript(nn.Module):
    """The interface of inception-2015-12-05.pt (``layers``, ``output``, the forward signature), tiny inside."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 16, 16, stride=16), nn.ReLU(), nn.Conv2d(16, 2048, 1),
                                    nn.AdaptiveAvgPool2d(1))
        self.output = nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        x = F.interpolate(img.to(torch.float32), size=(299, 299), mode="bilinear", align_corners=False)
        features = self.layers((x - 128.0) / 128.0).reshape(-1, 2048)
        if return_features:
            return features
        logits = F.linear(features, self.output.weight) if no_output_bias else self.output(features)
        return F.softmax(logits, 1)


@pytest.fixture(scope="module")
def tiny_inception(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_inception")
    torch.manual_seed(0)
    torch.jit.script(_TinyInceptionScript().eval()).save(str(folder / features_mod.INCEPTION_FILE))
    return folder


def test_fid_extractor_modes_and_inception_score_logits(tiny_inception):
    from cleanfid.resize import build_resizer

    features_mod.clear_extractor_cache()
    images = torch.rand(3, 3, RES, RES, generator=torch.Generator().manual_seed(0))
    u8 = (images * 255).round().to(torch.uint8)
    legacy = features_mod.build_feature_extractor("fid", {"inception_weights": str(tiny_inception),
                                                          "inception_resize": "legacy_tensorflow"})
    clean = features_mod.build_feature_extractor("fid", {"inception_weights": str(tiny_inception)})
    assert legacy.mode == "legacy_tensorflow" and clean.mode == "clean" and legacy.resize != clean.resize
    base = legacy.model.base
    with torch.no_grad():
        assert torch.allclose(legacy(images), base(u8.float(), return_features=True))  # the network's own resize
        resize = build_resizer("clean")
        x = torch.from_numpy(np.stack([resize(a) for a in u8.permute(0, 2, 3, 1).numpy()])).permute(0, 3, 1, 2)
        assert torch.allclose(clean(images), base.layers((x - 128) / 128).reshape(-1, 2048), atol=1e-5)
        assert not torch.allclose(clean(images), legacy(images))
        # the IS logits: pool features x output weights, no bias (the network's no_output_bias softmax)
        probs = torch.softmax(legacy.class_logits(legacy(images)), 1)
        assert torch.allclose(probs.float(), base(u8.float(), no_output_bias=True), atol=1e-6)
    with pytest.raises(features_mod.FeatureExtractorError, match="inception_resize"):
        features_mod.InceptionFID(tiny_inception, mode="tensorflow")
    features_mod.clear_extractor_cache()


def test_record_names_the_inception_pipeline(imagenet_root, tmp_path, tiny_inception, monkeypatch):
    import hartkit.eval.generation as generation
    from hartkit.eval.protocols import evaluation_set

    # 2048-d Fréchet distances cost a 2048 x 2048 sqrtm each (tens of seconds on one core); FD itself is tested
    # above and in test_eval_frechet.py, here only the metric names and the record's text matter
    monkeypatch.setattr(generation, "compute_fd", lambda a, b: 0.0)
    images, _ = _reference_images(imagenet_root)
    npz = tmp_path / "ref.npz"
    with open(npz, "wb") as fh:
        np.savez(fh, mu=np.zeros(2048), sigma=np.eye(2048), arr_0=images)
    features_mod.clear_extractor_cache()
    texts = {}
    for mode in ("legacy_tensorflow", "clean"):
        cfg = _eval_cfg(tmp_path, fd_features=["fid"], inception_weights=str(tiny_inception), inception_resize=mode,
                        reference=str(npz), samples_per_class=2)
        es = evaluation_set(_data(imagenet_root), cfg)
        m, out = _score(es, cfg, _real_generator(*_reference_images(imagenet_root, "train")), batch=3)
        assert {"fid", "kid", "inception_score", "inception_score_std", "precision", "recall"} <= set(out)
        assert 1.0 <= out["inception_score"] <= 1008
        extra = es.protocol("generation", m).extra
        assert f"{mode} resize" in extra["feature_pipeline"]
        assert "not ADM's TensorFlow evaluator" in extra["feature_pipeline"]
        assert "only comparable within one pipeline" in extra["comparable_with"] or "mixes two" in extra["comparable_with"]
        texts[mode] = extra["comparable_with"]
    assert "mixes two pipelines" in texts["clean"] and "close to ADM-evaluator numbers" in texts["legacy_tensorflow"]
    features_mod.clear_extractor_cache()


# ---------------------------------------------------------------------- sharding


def _shard_data():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(30, 3, 16, 16, generator=g)
    gen = (ref[torch.arange(26) % 30] + 0.2 * torch.randn(26, 3, 16, 16, generator=g)).clamp(0, 1)
    return ref, gen


def _shard_score(rank: int, world: int, distributed):
    from omegaconf import OmegaConf

    from hartkit.eval.imagenet import ImageNetMetrics

    cfg = OmegaConf.create({"fd_features": ["fd_test"], "clip_score": [], "prompt_accuracy": False,
                            "per_category": False, "stats_cache": "/nonexistent", "inception_score": True,
                            "precision_recall": True, "precision_recall_k": 3})
    ref, gen = _shard_data()
    m = ImageNetMetrics(cfg, distributed=distributed)
    m.is_split_size = 5  # several Inception Score splits: their content depends on the samples' order
    m.add_reference(ref[rank::world])
    m.sync_reference()
    batches = list(range(0, len(gen), 4))
    for s in batches[rank::world]:  # gen_eval's round-robin batches: rank r scores batches r, r + world, ...
        idx = list(range(s, min(s + 4, len(gen))))
        m.update(gen[idx], indices=idx)
    out = m.compute()
    return {"metrics": out, "intervals": m.intervals(100, 5)}


def _shard_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    features_mod.EXTRACTORS["fd_test"] = lambda cfg, device: PooledPixelsWithClasses()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out = _shard_score(rank, world, None)
        if rank == 0:
            Path(out_file).write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_give_the_single_process_numbers(tmp_path, fake_features):
    import torch.multiprocessing as mp

    out = tmp_path / "out.json"
    mp.spawn(_shard_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    sharded = json.loads(out.read_text())
    single = _shard_score(0, 1, False)
    for k, v in single["metrics"].items():
        assert sharded["metrics"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    for k in ("is_test", "is_test_std", "precision_test", "recall_test"):  # same samples in the same order: exact
        assert sharded["metrics"][k] == single["metrics"][k], k
    assert set(sharded["intervals"]) == set(single["intervals"])
    assert sharded["intervals"]["precision_test"] == single["intervals"]["precision_test"]


# ---------------------------------------------------------------------- the gen_eval stage


def test_gen_eval_stage_runs_the_protocol_with_class_ids(imagenet_root, tmp_path, fake_features, monkeypatch):
    import hartkit.ar_models.sampling as sampling
    import hartkit.stages.artifacts as artifacts
    import hartkit.stages.gen_eval as gen_eval
    from hartkit.pipeline import RunContext
    from hartkit.records import iter_records
    from tests.conftest import compose

    images, _ = _reference_images(imagenet_root)
    npz = _write_npz(tmp_path / "VIRTUAL_tiny.npz", images=images, stats_of=images)
    cfg = compose(["stages=[gen_eval]", "data=imagenet", f"data.path={imagenet_root}", f"data.resolution={RES}",
                   "eval=imagenet256", f"eval.reference={npz}", "eval.fd_features=[fd_test]", "eval.samples_per_class=4",
                   f"eval.resolution={RES}", "eval.bootstrap=20", "eval.bootstrap_fd=5",
                   f"eval.stats_cache={tmp_path}/stats", f"paths.results={tmp_path}/results",
                   f"paths.artifacts={tmp_path}/artifacts", "ar.condition=class", "ar.sampling.batch_size=5"])
    real = _real_generator(*_reference_images(imagenet_root, "train"))
    seen: list[list[int]] = []

    def fake_generate(model, tokenizer, cond, generator=None, **kw):
        ids = [int(c) for c in cond]
        seen.append(ids)
        return real(ids, list(range(len(ids)))) * 2 - 1  # [-1, 1], as the generator's decoder gives

    model = SimpleNamespace(kind="discrete", spec=SimpleNamespace(num_tokens=1, patch_nums=[1]), eval=lambda: model)
    monkeypatch.setattr(artifacts, "get_tokenizer", lambda ctx: object())
    monkeypatch.setattr(artifacts, "get_generator", lambda ctx, tok: model)
    monkeypatch.setattr(sampling, "generate_images", fake_generate)
    monkeypatch.setattr(gen_eval, "efficiency_report", lambda *a, **k: {})
    logger = SimpleNamespace(log_record=lambda r: None, log_image=lambda *a, **k: None)
    ctx = RunContext(cfg=cfg, device=torch.device("cpu"), run_id="test", logger=logger)
    gen_eval.run(ctx)
    assert [i for batch in seen for i in batch] == [0, 1, 2] * 4  # class ids in the protocol's order
    records, bad = iter_records(tmp_path / "results")
    [record] = [r for _, r in records if r.stage == "gen_eval"]
    assert not bad
    assert record.protocol.extra["eval_protocol"] == "imagenet256"
    assert {"fd_test", "is_test", "precision_test", "recall_test"} <= set(record.metrics)
    assert record.metrics["num_images"] == 12 and "precision_test" in record.intervals
    assert record.noise_floor.get("sets", "").startswith("reference split in halves")


def test_gen_eval_stage_keeps_the_embedded_protocol_path(tmp_path, fake_features, monkeypatch):
    """The stage's protocol hooks (category_ids, make_metrics, load_reference) on the default protocol."""
    import hartkit.ar_models.sampling as sampling
    import hartkit.stages.artifacts as artifacts
    import hartkit.stages.gen_eval as gen_eval
    from hartkit.eval.generation import GenerationMetrics
    from hartkit.pipeline import RunContext
    from hartkit.records import iter_records
    from tests.conftest import compose

    cfg = compose(["stages=[gen_eval]", "data.test_size=8", "eval.num_images=8", "eval.fd_features=[fd_test]",
                   "eval.clip_score=[]", "eval.prompt_accuracy=false", "eval.baselines=false", "eval.bootstrap=0",
                   f"eval.stats_cache={tmp_path}/stats", f"paths.results={tmp_path}/results",
                   f"paths.artifacts={tmp_path}/artifacts", "ar.condition=class", "ar.sampling.batch_size=4"])
    seen = []

    def fake_generate(model, tokenizer, cond, generator=None, **kw):
        seen.append([int(c) for c in cond])
        return torch.rand(len(cond), 3, 64, 64, generator=generator) * 2 - 1

    model = SimpleNamespace(kind="discrete", spec=SimpleNamespace(num_tokens=1, patch_nums=[1]), eval=lambda: model)
    monkeypatch.setattr(artifacts, "get_tokenizer", lambda ctx: object())
    monkeypatch.setattr(artifacts, "get_generator", lambda ctx, tok: model)
    monkeypatch.setattr(sampling, "generate_images", fake_generate)
    monkeypatch.setattr(gen_eval, "efficiency_report", lambda *a, **k: {})
    logger = SimpleNamespace(log_record=lambda r: None, log_image=lambda *a, **k: None)
    gen_eval.run(RunContext(cfg=cfg, device=torch.device("cpu"), run_id="test", logger=logger))
    assert [i for batch in seen for i in batch] == [i % 10 for i in range(8)]  # synthscenes: SHAPES[i % 10]
    records, _ = iter_records(tmp_path / "results")
    [record] = [r for _, r in records if r.stage == "gen_eval"]
    assert record.protocol.extra["eval_protocol"] == "embedded" and "fd_test" in record.metrics
    assert "is_test" not in record.metrics
    from hartkit.eval.protocols import evaluation_set

    assert type(evaluation_set(cfg.data, cfg.eval).make_metrics(cfg.eval, "cpu")) is GenerationMetrics
