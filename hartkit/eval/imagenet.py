"""ImageNet-256 class-conditional protocol (``eval=imagenet256 data=imagenet``).

    python run.py stages=[gen_eval] data=imagenet data.path=/data/imagenet eval=imagenet256 \\
        eval.reference=/data/VIRTUAL_imagenet256_labeled.npz eval.inception_weights=/models ...

What it generates: ``eval.samples_per_class`` images (default 50) of every class of ``data.path``
(class id = index of the synset in the sorted train folder, as VAR's loader), 50,000 for ImageNet-1k,
in class-interleaved order (sample i has class i mod C; ``eval.num_images`` keeps the first N, which
stays balanced). A class-conditional generator (``ar.condition=class``) gets the class ids, a
text-conditional one the prompts ``"a photo of <class name>"``.

What it scores them against (``eval.reference``):

- an ADM reference batch ``.npz`` (``VIRTUAL_imagenet256_labeled.npz`` of guided-diffusion's
  ``evaluations/``, which VAR and HART use): FID from its ``mu`` / ``sigma`` (ADM: statistics over the
  whole training set), precision / recall (and KID) from the features of its ``arr_0`` images (ADM:
  10,000 images), streamed from the zip, never loaded whole. A file with only ``mu``/``sigma`` gives FID
  and IS; precision / recall need reference images (``arr_0`` or a folder) and are then left out with a note;
- a folder of real images (any layout; ``<synset>/`` sub-folders become categories), preprocessed like
  the data (``data.mid_reso``, ``data.resize_filter``; ``data.mid_reso=1`` keeps the whole shorter side);
- nothing: the data's ``val`` split (50 images per class), preprocessed the same way.

Metrics (feature space = the first of ``eval.fd_features``, ``fid`` for this protocol): ``fid``
(+ ``kid`` when reference features exist), ``inception_score`` (+ ``inception_score_std`` over the 10
splits; ``hartkit.eval.inception_score``), ``precision`` and ``recall`` (Kynkäänniemi et al., k = 3;
``hartkit.eval.precision_recall``), each from the same Inception pool features, computed once.

Which Inception: always clean-fid's TorchScript port of TensorFlow's 2015-12-05 Inception-v3
(``inception-2015-12-05.pt``), never ADM's TensorFlow graph itself. ``eval.inception_resize``:
``legacy_tensorflow`` (this protocol's default) lets the network resize as the TensorFlow graph in ADM's
evaluator does, so that the samples' features are computed as ADM's reference statistics were;
``clean`` is clean-fid's recommended resize. The record says which, and that FID / IS / precision /
recall are only comparable between numbers of one pipeline: this one's numbers sit close to those of
ADM's evaluator (the numbers VAR and HART report) but are not guaranteed equal to them.

Sharding: under torchrun every rank scores its own batches; Fréchet statistics are summed over ranks and
per-image features gathered (as for MJHQ), and each sample's index travels with it, so the Inception
Score splits and precision / recall are computed on the samples in index order: the numbers of a sharded
run equal the unsharded ones.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hartkit.errors import ConfigError
from hartkit.eval.frechet import FrechetStats
from hartkit.eval.generation import ALL, GenerationMetrics, _gather_list
from hartkit.eval.image_checks import split_valid
from hartkit.eval.inception_score import SPLIT_SIZE, inception_score
from hartkit.eval.intervals import FrechetBootstrap, bootstrap_mean
from hartkit.eval.precision_recall import DEFAULT_K, PrecisionRecall, precision_recall
from hartkit.eval.protocols import EvaluationSet, _get
from hartkit.utils.hashing import config_hash, file_sha256

log = logging.getLogger(__name__)

PROTOCOL = "imagenet256"
ADM_REFERENCE_URL = ("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
                     "VIRTUAL_imagenet256_labeled.npz")
HOW_TO_GET_REFERENCE = (
    f"Download ADM's reference batch once on a machine with internet ({ADM_REFERENCE_URL}, ~1.9 GB; "
    f"guided-diffusion evaluations/README.md) and set eval.reference=/path/to/VIRTUAL_imagenet256_labeled.npz, "
    f"or set eval.reference to a folder of real images, or leave it unset to use the data's val split")
IS_TEXT = (f"ADM evaluator / improved-GAN: softmax of pool features x Inception's output weights (1008 logits, no "
           f"bias), consecutive splits of {SPLIT_SIZE} samples in index order, mean of exp(mean KL) over splits "
           f"(_std: over splits, ddof 0)")
PR_TEXT = ("Kynkaanniemi et al. 2019 as ADM's ManifoldEstimator: k={k} nearest-neighbour balls of squared Euclidean "
           "distances (float32); precision = samples inside the reference manifold, recall = reference inside "
           "the samples' manifold")


def metric_names(space: str) -> tuple[str, str, str]:
    """(inception score, precision, recall) names of a feature space: fid -> inception_score, precision, recall;
    fd_x -> is_x, precision_x, recall_x (a metric carries its feature space, as kid / kid_x)."""
    suffix = "" if space == "fid" else space[2:]
    return ("inception_score" if space == "fid" else "is" + suffix), "precision" + suffix, "recall" + suffix


# ---------------------------------------------------------------------- ADM reference batch (.npz)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def npz_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def _npy_member(path: Path, name: str):
    """(file object positioned at the array data, shape, dtype) of ``name`` inside an .npz, or None if the
    member cannot be streamed (Fortran order, object dtype, an unknown format version)."""
    with zipfile.ZipFile(path) as zf:
        member = f"{name}.npy"
        if member not in zf.namelist():
            yield None
            return
        with zf.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                yield None
                return
            yield None if fortran or dtype.hasobject else (fh, tuple(shape), dtype)


def _read_exactly(fh, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        block = fh.read(size - got)
        if not block:
            raise ValueError(f"the npz member ended after {got} of {size} bytes (truncated file?)")
        chunks.append(block)
        got += len(block)
    return b"".join(chunks)


@dataclass
class ReferenceBatch:
    """An ADM-style reference batch: ``mu`` / ``sigma`` (Inception pool statistics) and/or ``arr_0`` images."""

    path: Path
    sha256: str
    keys: list[str]
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    images_shape: tuple[int, ...] | None = None  # arr_0: (N, H, W, 3) uint8

    @property
    def has_stats(self) -> bool:
        return self.mu is not None

    @property
    def num_images(self) -> int:
        return int(self.images_shape[0]) if self.images_shape else 0

    @classmethod
    def open(cls, path: str | Path) -> ReferenceBatch:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"reference batch {p} (set by config key eval.reference) does not exist. "
                                    f"{HOW_TO_GET_REFERENCE}")
        if not zipfile.is_zipfile(p):
            raise ConfigError(f"eval.reference={p} is neither a folder of images nor an .npz file (a zip of "
                              f"arrays: mu, sigma, arr_0). {HOW_TO_GET_REFERENCE}")
        with np.load(p) as data:
            keys = list(data.files)
            mu = np.asarray(data["mu"], dtype=np.float64) if "mu" in keys else None
            sigma = np.asarray(data["sigma"], dtype=np.float64) if "sigma" in keys else None
        if (mu is None) != (sigma is None):
            raise ConfigError(f"{p} (eval.reference) holds {'mu' if sigma is None else 'sigma'} without "
                              f"{'sigma' if sigma is None else 'mu'}; an ADM reference batch holds both")
        if mu is not None and (mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0])):
            raise ConfigError(f"{p} (eval.reference): mu {mu.shape} and sigma {sigma.shape} are not a mean vector "
                              f"and its square covariance")
        shape = None
        if "arr_0" in keys:
            with _npy_member(p, "arr_0") as member:
                if member is None:
                    raise ConfigError(f"{p}: arr_0 is not a plain C-order array; rewrite it with np.savez(arr_0=...)")
                _, shape, dtype = member
            if len(shape) != 4 or shape[3] != 3 or dtype != np.uint8:
                raise ConfigError(f"{p}: arr_0 has shape {shape} and dtype {dtype}; reference images must be "
                                  f"uint8 (N, H, W, 3) as in ADM's reference batches")
        if mu is None and shape is None:
            raise ConfigError(f"{p} (eval.reference) holds neither mu/sigma nor arr_0 images (it has {keys}). "
                              f"{HOW_TO_GET_REFERENCE}")
        return cls(path=p, sha256=npz_sha256(p), keys=keys, mu=mu, sigma=sigma, images_shape=shape)

    def iter_images(self, batch_size: int) -> Iterator[np.ndarray]:
        """arr_0 in batches of uint8 (b, H, W, 3), read from the zip member as a stream."""
        if not self.images_shape:
            return
        with _npy_member(self.path, "arr_0") as member:
            fh, shape, dtype = member
            row = int(np.prod(shape[1:])) * dtype.itemsize
            for s in range(0, shape[0], batch_size):
                b = min(batch_size, shape[0] - s)
                yield np.frombuffer(_read_exactly(fh, b * row), dtype=dtype).reshape(b, *shape[1:])

    def describe(self) -> str:
        parts = []
        if self.has_stats:
            parts.append(f"mu/sigma ({self.mu.shape[0]}-d)")
        if self.images_shape:
            parts.append(f"arr_0 ({self.num_images} images, {self.images_shape[1]} px)")
        return f"npz {self.path.name} sha256:{self.sha256[:12]}: " + " + ".join(parts)


class FixedGaussian(FrechetStats):
    """Reference statistics given as a mean and covariance (an npz's mu / sigma) instead of running sums."""

    UNKNOWN = np.iinfo(np.int32).max  # the npz does not say how many images its mu / sigma came from

    def __init__(self, mu: np.ndarray, sigma: np.ndarray, count: int | None = None):
        super().__init__(mu.shape[0])
        self.mu, self.sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        self.count_known = count is not None
        self.count = int(count) if count is not None else self.UNKNOWN

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mu, self.sigma

    def update(self, feats_BD):
        raise TypeError("fixed reference statistics (npz mu/sigma) cannot take more features")

    def merge(self, other):
        raise TypeError("fixed reference statistics (npz mu/sigma) cannot be merged")

    def all_reduce(self) -> FixedGaussian:
        return self  # every rank read the same file


# ---------------------------------------------------------------------- metrics


class ImageNetMetrics(GenerationMetrics):
    """GenerationMetrics + Inception Score + precision / recall, with each sample's global index kept."""

    needs_indices = True  # gen_eval passes indices= (the sample's position in the protocol's order)
    is_split_size = SPLIT_SIZE  # Inception Score splits: consecutive runs of this many samples in index order

    def __init__(self, eval_cfg=None, device: torch.device | str = "cpu", distributed: bool | None = None):
        super().__init__(eval_cfg, device, distributed)
        get = (lambda k, d: _get(eval_cfg, k, d)) if eval_cfg is not None else (lambda k, d: d)
        self.want_is = bool(get("inception_score", False))
        self.want_pr = bool(get("precision_recall", False))
        self.pr_k = int(get("precision_recall_k", DEFAULT_K))
        self.space = next(iter(self.extractors), None)
        if (self.want_is or self.want_pr) and self.space is None:
            raise ConfigError("eval.inception_score / eval.precision_recall need Inception features: set eval.fd_features=[fid]")
        if self.want_is and not hasattr(self.extractors[self.space], "class_logits"):
            raise ConfigError(f"eval.inception_score needs Inception's classifier layer, but the first feature space in "
                              f"eval.fd_features is {self.space}: put fid first, or set eval.inception_score=false")
        if self.want_pr and self.pr_k < 1:
            raise ConfigError(f"eval.precision_recall_k must be at least 1, got {self.pr_k}")
        self.gen_indices: list[int] = []
        self.reference_info: dict[str, str] = {}
        self.pr: PrecisionRecall | None = None

    @torch.no_grad()
    def update(self, images, prompts=None, categories=None, names=None, indices=None) -> None:
        """As GenerationMetrics.update; ``indices``: each image's position in the protocol (default: arrival order)."""
        n = len(images)
        indices = list(range(self._seen, self._seen + n)) if indices is None else [int(i) for i in indices]
        if len(indices) != n:
            raise ValueError(f"{n} images but {len(indices)} indices")
        super().update(images, prompts, categories, names)
        valid, _ = split_valid(images, [""] * n, self.resolution)  # the ones super() scored
        self.gen_indices += [indices[i] for i in valid]

    def sync(self) -> None:
        if not self.distributed or getattr(self, "_synced", False):
            return
        super().sync()
        self.gen_indices = _gather_list(self.gen_indices)  # rank order, as the gathered features

    def set_reference_gaussian(self, mu: np.ndarray, sigma: np.ndarray, count: int | None, source: str) -> None:
        """Use ``mu`` / ``sigma`` (e.g. an ADM npz) as the first feature space's overall reference statistics."""
        ext = self.extractors[self.space]
        if mu.shape[0] != ext.dim:
            raise ConfigError(f"{source} holds {mu.shape[0]}-d statistics but {self.space} ({ext.model_name}) has "
                              f"{ext.dim}-d features: the npz belongs to another feature space")
        images = self.ref_stats[self.space].get(ALL)
        self.ref_stats[self.space][ALL] = FixedGaussian(mu, sigma, images.count if images is not None else count)

    def _sorted_features(self) -> np.ndarray:
        feats = self._features(self.gen_feats, self.space)
        if len(feats) != len(self.gen_indices):
            raise RuntimeError(f"{len(feats)} features but {len(self.gen_indices)} sample indices")
        return feats[np.argsort(np.asarray(self.gen_indices, dtype=np.int64), kind="stable")]

    def compute(self) -> dict[str, float]:
        metrics = super().compute()
        if self.space is None:
            return metrics
        ref = self.ref_stats[self.space].get(ALL)
        if isinstance(ref, FixedGaussian) and not ref.count_known:
            metrics.pop("num_reference", None)
        is_name, p_name, r_name = metric_names(self.space)
        feats = self._sorted_features() if (self.want_is or self.want_pr) else None
        if self.want_is:
            logits = self.extractors[self.space].class_logits(torch.from_numpy(feats))
            metrics[is_name], metrics[is_name + "_std"] = inception_score(logits, self.is_split_size)
        self.pr = None
        if self.want_pr:
            ref_f = self._features(self.ref_feats, self.space)
            if len(ref_f) <= self.pr_k or len(feats) <= self.pr_k:
                self.notes.append(f"{p_name} / {r_name} left out: they need more than k={self.pr_k} reference and "
                                  f"generated feature vectors (reference images: arr_0 in the npz, an image folder "
                                  f"as eval.reference, or the val split); the reference has {len(ref_f)}")
            else:
                self.pr = precision_recall(ref_f, feats, self.pr_k, self.device)
                metrics[p_name], metrics[r_name] = self.pr.precision, self.pr.recall
        return metrics

    def intervals(self, resamples: int = 1000, fd_resamples: int = 200, seed: int = 0) -> dict[str, list[float]]:
        """The base intervals + precision's (bootstrap over samples, the reference manifold fixed), and the FD's
        when the reference is only an npz's mu/sigma (the base needs reference features for it)."""
        out = super().intervals(resamples, fd_resamples, seed)
        ref = self.ref_stats[self.space].get(ALL) if self.space else None
        if isinstance(ref, FixedGaussian) and self.space not in out and fd_resamples > 0:
            gen_f = self._features(self.gen_feats, self.space)
            if len(gen_f) >= 2:
                lo, hi = FrechetBootstrap(None, ref.mu, ref.sigma).interval(gen_f, fd_resamples, seed)
                if np.isfinite([lo, hi]).all():
                    out[self.space] = [float(lo), float(hi)]
        if self.pr is not None and resamples > 0:
            lo, hi = bootstrap_mean(self.pr.gen_in_reference.astype(np.float64), resamples, seed)
            if np.isfinite([lo, hi]).all():
                out[metric_names(self.space)[1]] = [float(lo), float(hi)]
        return out

    def protocol_fields(self) -> dict:
        fields = super().protocol_fields()
        extra = fields["extra"]
        if self.space is not None:
            ref = self.ref_stats[self.space].get(ALL)
            if isinstance(ref, FixedGaussian):
                images = len(self._features(self.ref_feats, self.space))
                extra["reference_images"] = images if images else "none (npz mu/sigma only)"
            extra.update(feature_pipeline(self.extractors[self.space], self.space, isinstance(ref, FixedGaussian)))
        if self.want_is:
            extra["inception_score"] = IS_TEXT
        if self.want_pr:
            extra["precision_recall"] = PR_TEXT.format(k=self.pr_k)
        extra.update(self.reference_info)
        return fields


def feature_pipeline(ext, space: str, reference_from_npz_stats: bool) -> dict[str, str]:
    """The record's statement of which Inception computed the numbers and what they compare with."""
    if space != "fid":
        return {"feature_pipeline": f"{space}: {ext.model_name}; {ext.resize}; not Inception: not comparable with any FID"}
    mode = getattr(ext, "mode", "clean")
    text = (f"clean-fid's TorchScript Inception-v3 (inception-2015-12-05.pt, sha256 {(ext.weights_hash or '?')[:12]}), "
            f"{mode} resize; not ADM's TensorFlow evaluator (classify_image_graph_def.pb)")
    if reference_from_npz_stats and mode == "legacy_tensorflow":
        comparable = ("FID uses reference mu/sigma computed by the program that wrote the npz (ADM's TensorFlow "
                      "evaluator for VIRTUAL_imagenet256_labeled.npz) and sample features from the same network with "
                      "its TensorFlow-style resize: close to ADM-evaluator numbers (VAR, HART papers), not guaranteed "
                      "equal; numbers are only comparable within one pipeline")
    elif reference_from_npz_stats:
        comparable = ("FID mixes two pipelines: npz mu/sigma from the program that wrote it (ADM's TensorFlow evaluator "
                      "for VIRTUAL_imagenet256_labeled.npz) against sample features with the clean resize; comparable "
                      "only with numbers of this exact setting (eval.inception_resize=legacy_tensorflow matches ADM's)")
    else:
        comparable = (f"reference and samples through the same extractor ({mode} resize): comparable with numbers of "
                      f"this pipeline only, not with ADM-evaluator numbers (VAR, HART papers)")
    return {"feature_pipeline": text, "comparable_with": comparable}


# ---------------------------------------------------------------------- evaluation set


@dataclass
class ImageNetEvaluationSet(EvaluationSet):
    """Class-conditional samples (class ids + prompts) and the reference of ``eval=imagenet256``."""

    synsets: list[str] = field(default_factory=list)  # all classes, in class-id order
    ids: list[int] = field(default_factory=list)  # class id of each sample
    samples_per_class: int = 50
    reference_kind: str = "data"  # npz | folder | data (the data's val split)
    reference_path: Path | None = None
    npz: ReferenceBatch | None = None
    transform: object = None  # ImageNetTransform of folder / val references
    strict: bool = False

    def category_ids(self) -> list[int]:
        return list(self.ids)

    @property
    def cache_key(self) -> str:
        if self.reference_kind == "npz":
            ref = f"npz sha256={self.npz.sha256}"
        elif self.reference_kind == "folder":
            ref = f"folder {self.reference_path}|{_folder_stamp(self.reference_path)}"
        else:
            from hartkit.data.imagenet import split_folders

            val = split_folders(self.data_cfg.get("path"))["test"]
            ref = f"val|data={config_hash(self.data_cfg)}|{_folder_stamp(val)}"  # changed files: new statistics
        how = "" if self.reference_kind == "npz" else f"|{self.transform.describe()}"
        return f"{PROTOCOL}|{ref}|{self.resolution}px{how}"

    def make_metrics(self, eval_cfg, device, distributed: bool | None = None) -> ImageNetMetrics:
        m = ImageNetMetrics(eval_cfg, device, distributed)
        m.resolution = self.resolution
        return m

    def reference_batches(self) -> Iterator[tuple[torch.Tensor, list[str] | None]]:
        if self.reference_kind == "npz":
            for arr in self.npz.iter_images(self.batch_size):
                yield torch.from_numpy(arr.copy()).permute(0, 3, 1, 2).contiguous(), None
        elif self.reference_kind == "folder":
            yield from self._folder_batches()
        else:
            if self.dataset is None:
                from hartkit.data import build_dataset

                self.dataset = build_dataset(self.data_cfg, "test")
            yield from super().reference_batches()

    def _folder_batches(self):
        from hartkit.data.files import ImageStore
        from hartkit.data.images import CorruptImageError

        store = ImageStore(self.reference_path)
        names = store.list_images()
        if not names:
            raise FileNotFoundError(f"no image files under {self.reference_path} (eval.reference)")
        skipped = 0
        for s in range(0, len(names), self.batch_size):
            arrays, cats = [], []
            for name in names[s:s + self.batch_size]:
                try:
                    img = self.transform(_decode(store, name))
                except CorruptImageError as exc:
                    if self.strict:
                        raise
                    skipped += 1
                    log.warning("reference folder: skipping unreadable %s", exc)
                    continue
                arrays.append(np.asarray(img))
                cats.append(name.split("/", 1)[0] if "/" in name else None)
            if arrays:
                yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), cats
        if skipped:
            log.warning("reference folder %s: %d unreadable images skipped", self.reference_path, skipped)

    def load_reference(self, metrics: ImageNetMetrics) -> bool:
        hit = False
        if self.reference_kind != "npz" or self.npz.images_shape:
            hit = metrics.reference_from_cache_or(self.cache_key, self.reference_batches)
        if self.reference_kind == "npz" and self.npz.has_stats:
            if not self.npz.images_shape and len(metrics.extractors) > 1:
                raise ConfigError(f"{self.npz.path} has no arr_0 images, so its mu/sigma serve only the first of "
                                  f"eval.fd_features ({metrics.space}); remove the others or give reference images")
            metrics.set_reference_gaussian(self.npz.mu, self.npz.sigma, None, str(self.npz.path))
        metrics.reference_info = {"reference": self.describe_reference()}
        return hit

    def describe_reference(self) -> str:
        if self.reference_kind == "npz":
            uses = []
            if self.npz.has_stats:
                uses.append("FID from its mu/sigma")
            if self.npz.images_shape:
                uses.append("KID and precision/recall from its arr_0 images" +
                            ("" if self.npz.has_stats else ", FID too"))
            return f"{self.npz.describe()}; " + ", ".join(uses)
        where = f"folder {self.reference_path.name}" if self.reference_kind == "folder" else "data val split"
        return f"{where}: {self.transform.describe()}"

    def protocol(self, task: str, metrics_obj):
        proto = super().protocol(task, metrics_obj)
        proto.extra["samples"] = (f"{self.samples_per_class} per class x {len(set(self.ids))} classes (class id = "
                                  f"sorted synset order), class-interleaved (sample i: class i mod C)")
        return proto


def _decode(store, name: str):
    from hartkit.data.images import decode_image

    return decode_image(store.read(name), store.describe(name))


def _folder_stamp(folder: Path) -> str:
    """Names a reference folder's content cheaply: number of image files, total size, newest mtime."""
    from hartkit.data.files import ImageStore

    store = ImageStore(folder)
    names = store.list_images()
    if store.is_zip:
        st = folder.stat()
        return f"zip {st.st_size} {st.st_mtime_ns}"
    stats = [(folder / n).stat() for n in names]
    return f"{len(names)} files {sum(s.st_size for s in stats)} B newest {max((s.st_mtime_ns for s in stats), default=0)}"


def imagenet_evaluation_set(data: dict, eval_cfg) -> ImageNetEvaluationSet:
    """The samples to generate and the reference of ``eval=imagenet256`` for ``data=imagenet``."""
    from hartkit.data import imagenet

    if data.get("name") != "imagenet":
        raise ConfigError(f"eval=imagenet256 is class-conditional ImageNet: also set data=imagenet "
                          f"data.path=/path/to/imagenet (train/<synset>/ and val/<synset>/; the class ids come from "
                          f"it), not data={data.get('name')}")
    if _get(eval_cfg, "baselines", False):
        raise ConfigError("eval=imagenet256 has no baseline rows (its reference is a set of statistics, not prompts "
                          "with images); set eval.baselines=false. The record's noise_floor holds the real-vs-real "
                          "distance of the reference's two halves when reference images exist")
    synsets = imagenet.class_list(data.get("path"))
    chosen = synsets
    if data.get("categories"):
        missing = sorted(set(data["categories"]) - set(synsets))
        if missing:
            raise ConfigError(f"data.categories names {missing}, which are not synset folders of {data.get('path')}")
        chosen = [s for s in synsets if s in set(data["categories"])]
    spc = int(_get(eval_cfg, "samples_per_class", 50))
    if spc < 1:
        raise ConfigError(f"eval.samples_per_class must be at least 1, got {spc}")
    n = min(int(_get(eval_cfg, "num_images", spc * len(chosen))), spc * len(chosen))
    if n < 2:
        raise ConfigError(f"eval.num_images must be at least 2, got {n}")
    names = imagenet.synset_names(data.get("path"), data.get("captions"))
    index = {s: i for i, s in enumerate(synsets)}
    cats = [chosen[i % len(chosen)] for i in range(n)]  # class-interleaved: every prefix is balanced
    resolution = int(_get(eval_cfg, "resolution", data.get("resolution", 256)))
    data = {**data, "resolution": resolution}
    filter_name = str(data.get("resize_filter", "lanczos"))
    transform = imagenet.ImageNetTransform(None, resolution, filter_name,
                                           float(data.get("mid_reso") or imagenet.DEFAULT_MID_RESO))
    reference = _get(eval_cfg, "reference")
    kind, path, npz, split = "data", None, None, "val"
    if not reference and "test" not in imagenet.split_folders(data.get("path")):
        raise ConfigError(f"eval.reference is unset, so the reference is the val split, but {data.get('path')} "
                          f"(data.path) has no val/ folder. {HOW_TO_GET_REFERENCE}")
    if reference:
        path = Path(str(reference)).expanduser()
        if path.is_dir():
            kind, split = "folder", "reference folder"
        else:
            npz = ReferenceBatch.open(path)
            kind, split = "npz", "ADM reference batch"
            if npz.images_shape and npz.images_shape[1:3] != (resolution, resolution):
                raise ConfigError(f"{path} (eval.reference) holds {npz.images_shape[2]}x{npz.images_shape[1]} images "
                                  f"but the protocol compares at {resolution} px (eval.resolution / data.resolution); "
                                  f"use the reference batch of that resolution")
            if not npz.images_shape:
                log.info("%s has no arr_0 images: FID and IS only (precision / recall need reference images)", path)
    content = {k: v for k, v in data.items() if k not in ("num_workers", "cache_dir", "strict")}
    return ImageNetEvaluationSet(
        protocol_name=PROTOCOL, dataset_name="imagenet", split=split, resolution=resolution,
        resize_filter=filter_name, data_cfg=content, prompts=[imagenet.class_prompt(c, names) for c in cats],
        categories=cats, batch_size=int(_get(eval_cfg, "batch_size", 64)), synsets=synsets,
        ids=[index[c] for c in cats], samples_per_class=spc, reference_kind=kind, reference_path=path, npz=npz,
        transform=transform, strict=bool(data.get("strict", False)))
