"""MedMNIST+ (the ``medmnist`` package, v3): zero-shot and few-shot results on the official
splits, each metric with a stratified-bootstrap 95% interval. Notebook 08.

Files are the package's own: ``<root>/<flag>.npz`` (28 px) or ``<flag>_<size>.npz``, with
``train_images``, ``train_labels``, ``val_...`` and ``test_...``; ``root`` is
``cache_dir()/"medmnist"`` unless given (a file already in the package's ``~/.medmnist`` is
used from there). Missing files are downloaded from the URL in ``medmnist.INFO`` and checked
against its MD5. The arrays are read from the npz directly: the package's dataset classes
assert the official sample counts. Embeddings are cached per model fingerprint, file, size
and split (``<cache>/<fingerprint[:16]>/medmnist/``), so a rerun encodes nothing.
"""

import contextlib
import os
import uuid
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import medmnist
import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from mmkd_utils.config import cache_dir
from mmkd_utils.download import download_url, sha256_file
from mmkd_utils.errors import (
    ArgumentError,
    BankError,
    DatasetNotFoundError,
    DownloadError,
    ProbeError,
)
from mmkd_utils.images import pipeline
from mmkd_utils.prompts import get_task
from mmkd_utils.tasks.embeddings import cache_folder
from mmkd_utils.tasks.metrics import (
    MULTI_LABEL,
    bootstrap_ci,
    classification_metrics,
    sampling_weights,
    strata,
    stratified_sample,
)
from mmkd_utils.tasks.probe import DEFAULT_CS, DEFAULT_SEEDS, DEFAULT_SHOTS, FIT

#: The 2-D datasets whose modality the prompt banks cover (TissueMNIST's is fluorescence).
FLAGS = tuple(f for f in medmnist.INFO if not f.endswith("3d") and f != "tissuemnist")
SIZES, SPLITS = (28, 64, 128, 224), ("train", "val", "test")
#: Images read and embedded at a time (one cache part file each): bounded memory.
CHUNK = 2048
#: Columns of :meth:`BenchmarkResult.to_frame`.
COLUMNS = ("model", "dataset", "split", "size", "method", "shots", "seed", "n", "metric")
COLUMNS += ("value", "low", "high")


@dataclass(eq=False, repr=False)
class BenchmarkResult:
    """One model on one split: ``scores`` [N, C] (label order of ``medmnist.INFO``), ``labels``
    (as the file stores them), ``indices`` (rows of the split used), ``metrics`` and ``ci``
    ({name: (low, high)}, 95%), ``task``, ``class_names``; ``method`` is ``"zero-shot"`` or
    ``"linear probe"`` (with ``shots``, ``seed`` and the chosen ``C`` in ``details``).

    Example:
        >>> r = evaluate_medmnist(clip, "breastmnist", size=28, root=medmnist_root)
        >>> r.scores.shape, r.labels.shape, sorted(r.ci) == sorted(r.metrics)
        ((6, 2), (6, 1), True)
    """

    model: str
    dataset: str
    split: str
    size: int
    task: str
    class_names: tuple[str, ...]
    indices: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    weights: np.ndarray  # how many images of the split each one stands for (1: whole split)
    method: str = "zero-shot"
    details: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per metric: :data:`COLUMNS` (``shots`` and ``seed`` empty for zero-shot).

        Example:
            >>> r = evaluate_medmnist(clip, "breastmnist", size=28, root=medmnist_root)
            >>> r.to_frame()[["dataset", "metric"]].head(2).values.tolist()
            [['breastmnist', 'acc'], ['breastmnist', 'auc']]
        """
        head = [self.model, self.dataset, self.split, self.size, self.method]
        head += [self.details.get("shots"), self.details.get("seed"), len(self.labels)]
        rows = [[*head, m, v, *self.ci[m]] for m, v in self.metrics.items()]
        return pd.DataFrame(rows, columns=list(COLUMNS))

    def __repr__(self) -> str:
        shots = self.details.get("shots")
        how = self.method if shots is None else f"{shots}-shot probe, seed {self.details['seed']}"
        low, high = self.ci["auc"]
        auc = f"AUC {self.metrics['auc']:.3f} [{low:.3f}, {high:.3f}]"
        return f"BenchmarkResult({self.model} on {self.dataset} {self.split}, {how}: {auc})"


def _check(flag: Any, split: Any, size: Any) -> None:
    if flag not in FLAGS:
        left = " (TissueMNIST: no prompt bank for fluorescence microscopy)" * (
            flag == "tissuemnist"
        )
        raise ArgumentError(f"flag={flag!r}{left}: use one of {', '.join(FLAGS)}.")
    if split not in SPLITS:
        raise ArgumentError(f"split={split!r}: use 'train', 'val' or 'test'.")
    if size not in SIZES:
        raise ArgumentError(f"size={size!r}: MedMNIST+ has sizes {SIZES}.")


def medmnist_file(flag: str, size: int = 224, root: str | os.PathLike | None = None) -> Path:
    """The dataset's npz file, downloaded (MD5-checked, written whole) if it is not there.

    Example:
        >>> medmnist_file("breastmnist", 28, root=medmnist_root).name
        'breastmnist.npz'
    """
    _check(flag, "test", size)
    suffix = "" if size == 28 else f"_{size}"
    name, info = f"{flag}{suffix}.npz", medmnist.INFO[flag]
    if root is None and Path(medmnist.info.DEFAULT_ROOT, name).is_file():
        return Path(medmnist.info.DEFAULT_ROOT, name)
    path = (cache_dir() / "medmnist" if root is None else Path(root).expanduser()) / name
    if path.is_file():
        return path
    url, md5 = info[f"url{suffix}"], info[f"MD5{suffix}"]

    def same_md5(part: Path) -> None:
        if (got := sha256_file(part, "md5")) != md5:
            raise DownloadError(f"its MD5 is {got}, expected {md5}")

    try:
        return download_url(url, path, verify=same_md5)
    except DownloadError as err:
        raise DatasetNotFoundError(
            f"{name} is not in {path.parent} and could not be downloaded ({err}). Download it "
            f"from {url} (MD5 {md5}) and put it at {path}, or pass root= the folder holding it."
        ) from err


def load_split(
    path: str | os.PathLike, split: str, what: str = "labels", rows: Sequence[int] | None = None
) -> np.ndarray:
    """One array of an npz file (``"<split>_labels"`` or ``"<split>_images"``), or only its
    ``rows``, streamed from the file: PathMNIST's 224-px train images alone are 13.5 GB.

    Example:
        >>> path = medmnist_file("breastmnist", 28, medmnist_root)
        >>> load_split(path, "test").shape, load_split(path, "test", "images", [5, 0]).shape
        ((6, 1), (2, 28, 28))
    """
    if split not in SPLITS or what not in ("labels", "images"):
        raise ArgumentError(f"split={split!r}, what={what!r}: use {SPLITS} and labels/images.")
    key, found = f"{split}_{what}", []
    try:
        with zipfile.ZipFile(path) as npz, npz.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            reader = getattr(np.lib.format, "read_array_header_{}_{}".format(*version), None)
            shape, fortran, dtype = reader(f) if reader else ((), True, None)
            if rows is None or fortran:  # whole, or an unusual layout: read all, then pick
                f.seek(0)
                whole = np.lib.format.read_array(f, allow_pickle=False)
                return whole if rows is None else whole[_rows(rows, len(whole))]
            wanted, start = _rows(rows, shape[0]), f.tell()
            unique, inverse = np.unique(wanted, return_inverse=True)
            size = int(np.prod(shape[1:], dtype=int)) * dtype.itemsize
            out = np.empty((len(unique), *shape[1:]), dtype)
            for i, row in enumerate(unique.tolist()):  # forward seeks: read the member once
                f.seek(start + row * size)
                out[i] = np.frombuffer(f.read(size), dtype).reshape(shape[1:])
            return out[inverse]
    except KeyError:
        with contextlib.suppress(Exception), zipfile.ZipFile(path) as npz:
            found = [name.removesuffix(".npy") for name in npz.namelist()]
    except ArgumentError:
        raise
    except Exception as err:  # not a zip, truncated, a pickle: not a MedMNIST file
        found = [f"nothing readable: {type(err).__name__}: {err}"]
    raise DatasetNotFoundError(
        f"{path} has no array {key!r} (it has {', '.join(found) or 'nothing'}): it is not a "
        "MedMNIST file. Delete it and run again to download it."
    )


def _rows(rows: Sequence[int], n: int) -> np.ndarray:
    wanted = np.asarray(rows)
    if (
        wanted.dtype.kind not in "iu"
        or wanted.ndim != 1
        or (wanted < 0).any()
        or (wanted >= n).any()
    ):
        raise ArgumentError(
            f"rows={rows!r}: pass whole numbers from 0 to {n - 1} (the split's size)."
        )
    return wanted


def embed_arrays(model: Any, images: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
    """Embed uint8 images [N, H, W(, 3)] through the image pipeline, with a progress bar.

    Example:
        >>> embed_arrays(clip, np.zeros((3, 28, 28), np.uint8)).shape
        (3, 64)
    """
    size = pipeline.check_batch_size(batch_size, model.image_batch_size)
    batches = pipeline.image_batches(list(images), model.preprocess, batch_size=size)
    out = []
    bar = tqdm(total=len(images), desc="Embedding", unit="image", disable=None)
    with bar, contextlib.closing(batches):
        for batch in batches:
            if batch.failures:
                raise batch.failures[0][1]
            out.append(model.encode_pixels(batch.pixels).numpy())
            bar.update(len(batch.indices))
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)


def _read_cache(folder: Path, source: str, dim: int) -> dict[int, np.ndarray]:
    """Every readable part file of this source: {row: embedding}. Others are ignored."""
    rows: dict[int, np.ndarray] = {}
    for part in sorted(folder.glob("part-*.npz")) if folder.is_dir() else []:
        with contextlib.suppress(Exception), np.load(part) as npz:  # a stale or broken part
            vectors = npz["embeddings"]
            if str(npz["source"]) == source and vectors.shape[1:] == (dim,):
                rows.update(zip(npz["indices"].tolist(), vectors, strict=True))
    return rows


def _write_part(folder: Path, source: str, rows: list[int], vectors: np.ndarray) -> None:
    """One part file, written whole (a temporary name, then renamed); never overwritten."""
    name = f"part-{uuid.uuid4().hex}"
    tmp = folder / f".{name}.tmp.npz"
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, indices=np.asarray(rows), embeddings=vectors, source=source)
        os.replace(tmp, folder / f"{name}.npz")
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def split_embeddings(
    model: Any,
    path: Path,
    split: str,
    indices: np.ndarray,
    *,
    batch_size: int | None = None,
    cache: bool | str | os.PathLike = True,
) -> tuple[np.ndarray, int]:
    """Embeddings [len(indices), D] of rows of a split, and how many came from the cache.

    Missing rows are read, embedded and cached :data:`CHUNK` at a time, each chunk as its own
    part file: an interrupted run keeps what it finished, and two runs never overwrite each
    other's rows.

    Example:
        >>> path = medmnist_file("breastmnist", 28, medmnist_root)
        >>> _ = split_embeddings(clip, path, "val", np.arange(4))
        >>> split_embeddings(clip, path, "val", np.arange(4))[1]
        4
    """
    base = cache_folder(model, cache)
    folder = None if base is None else base / "medmnist" / f"{path.stem}_{split}"
    stat = path.stat()
    source = f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
    rows = {} if folder is None else _read_cache(folder, source, model.embed_dim)
    missing = sorted(set(indices.tolist()) - set(rows))
    for start in range(0, len(missing), CHUNK):
        chunk = missing[start : start + CHUNK]
        images = load_split(path, split, "images", chunk)
        vectors = embed_arrays(model, images, batch_size=batch_size)
        rows.update(zip(chunk, vectors, strict=True))
        if folder is not None:
            _write_part(folder, source, chunk, vectors)
    from_cache = len(indices) - int(np.isin(indices, missing).sum())
    return np.stack([rows[i] for i in indices.tolist()]), from_cache


def class_names(flag: str) -> tuple[str, ...]:
    """The dataset's labels in label order (``medmnist.INFO``).

    Example:
        >>> class_names("breastmnist")
        ('malignant', 'normal, benign')
    """
    _check(flag, "test", 28)
    return tuple(medmnist.INFO[flag]["label"].values())


def zero_shot_scores(model: Any, flag: str, embeddings: np.ndarray) -> np.ndarray:
    """Zero-shot probabilities [N, C] from image embeddings, with the flag's prompt bank.

    Each class is prompted by its synonyms only where it has some: MedMNIST's label names
    ("0"–"4", "normal, benign") are not descriptions. Multi-label (ChestMNIST): per finding,
    the probability of "finding" against "no finding".

    Example:
        >>> zero_shot_scores(clip, "breastmnist", np.ones((2, 64), np.float32)).sum(axis=1)
        array([1., 1.])
    """
    task = medmnist.INFO[flag]["task"]
    names = [f"{flag}_{n}" for n in class_names(flag)] if task == MULTI_LABEL else [flag]
    feats, columns = torch.as_tensor(embeddings, dtype=torch.float32), []
    for name in names:
        bank = get_task(name)
        prompts = {s[0]: s[1:] for s in (bank.synonyms[c][1:] or (c,) for c in bank.class_names)}
        expected = 2 if task == MULTI_LABEL else len(class_names(flag))
        if len(prompts) != len(bank.class_names) or len(prompts) != expected:
            raise BankError(f"Task {name!r} must have {expected} classes with distinct synonyms.")
        weights = model.classifier(prompts, bank.templates).weights
        probs = (model.logit_scale * feats @ weights.T).double().softmax(dim=-1).numpy()
        columns.append(probs[:, 1:] if task == MULTI_LABEL else probs)
    return np.concatenate(columns, axis=1)


def _model_name(model: Any) -> str:
    return model.model_name or Path(model.source).name or "model"


def _sample(path: Path, flag: str, split: str, max_per_class: int | None, seed: int):
    """Rows of a stratified sample, their labels, and the weights that restore the class mix."""
    groups = strata(labels := load_split(path, split), medmnist.INFO[flag]["task"])
    idx = stratified_sample(groups, max_per_class, seed)
    return idx, labels[idx], sampling_weights(groups, idx)


def _scored(model, flag, split, size, pool, scores, seed, n_resamples, **extra) -> BenchmarkResult:
    """A result with metrics and intervals; the bootstrap has its own stream of ``seed``."""
    idx, labels, w = pool
    task, boot = medmnist.INFO[flag]["task"], np.random.SeedSequence((seed, 1))
    metrics = classification_metrics(labels, scores, task, w)
    ci = bootstrap_ci(labels, scores, task, n_resamples=n_resamples, seed=boot, weights=w)
    info = (flag, split, size, task, class_names(flag), idx, labels, scores, metrics, ci, w)
    return BenchmarkResult(_model_name(model), *info, **extra)


def evaluate_medmnist(
    model: Any,
    flag: str,
    *,
    split: str = "test",
    size: int = 224,
    root: str | os.PathLike | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    n_resamples: int = 1000,
    batch_size: int | None = None,
    cache: bool | str | os.PathLike = True,
) -> BenchmarkResult:
    """Zero-shot classification of a MedMNIST+ split, with 95% bootstrap intervals.

    ``max_per_class``: a stratified sample of at most that many images per class (for
    ChestMNIST, per first finding), drawn with ``seed``; None: the whole split. A sampled
    image counts N/n times (N images of its class in the split, n sampled), so the metrics
    estimate the whole split's, class mix included. The bootstrap (``n_resamples``,
    stratified the same way) draws from its own stream of ``seed``. The interval covers the
    sampling of test images for this model and these prompts, nothing else.

    Example:
        >>> evaluate_medmnist(clip, "pathmnist", size=28, root=medmnist_root).labels.shape
        (27, 1)
    """
    _check(flag, split, size)
    path = medmnist_file(flag, size, root)
    pool = _sample(path, flag, split, max_per_class, seed)
    feats, cached = split_embeddings(
        model, path, split, pool[0], batch_size=batch_size, cache=cache
    )
    scores, details = zero_shot_scores(model, flag, feats), {"from_cache": cached}
    return _scored(model, flag, split, size, pool, scores, seed, n_resamples, details=details)


def _k_shot(labels: np.ndarray, task: str, k: int | str, seed: int) -> np.ndarray:
    """Rows of a k-shot training set: the first k of each class in an order drawn with
    ``seed`` (so a larger k adds to a smaller one); multi-label: k per finding, k normals."""
    if k == "all":
        return np.arange(len(labels))
    rng, y = np.random.default_rng(seed), labels.reshape(len(labels), -1)
    if task == MULTI_LABEL:
        pools = [np.flatnonzero(y[:, j]) for j in range(y.shape[1])] + [np.flatnonzero(~y.any(1))]
    else:
        pools = [np.flatnonzero(y[:, 0] == c) for c in np.unique(y[:, 0])]
    return np.unique(np.concatenate([rng.permutation(p)[:k] for p in pools]))


def _fit(x: np.ndarray, y: np.ndarray, c: float, task: str, n_classes: int):
    """A probe's scores function: one logistic regression, or one per label (multi-label)."""
    ys = [y[:, j] for j in range(y.shape[1])] if task == MULTI_LABEL else [y.reshape(-1)]
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported in details["converged"]
        fits = [LogisticRegression(C=c, **FIT).fit(x, t) for t in ys]

    def scores(z: np.ndarray) -> np.ndarray:
        if task == MULTI_LABEL:
            return np.stack([f.predict_proba(z)[:, 1] for f in fits], axis=1)
        out = np.zeros((len(z), n_classes))
        out[:, fits[0].classes_] = fits[0].predict_proba(z)
        return out

    scores.converged = all(f.n_iter_.max() < FIT["max_iter"] for f in fits)
    return scores


def few_shot_medmnist(
    model: Any,
    flag: str,
    *,
    shots: Sequence[int | str] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    size: int = 224,
    root: str | os.PathLike | None = None,
    max_per_class: int | None = None,
    n_resamples: int = 1000,
    Cs: Sequence[float] = tuple(DEFAULT_CS),
    batch_size: int | None = None,
    cache: bool | str | os.PathLike = True,
) -> list[BenchmarkResult]:
    """Linear probes on k images per class of the official train split (``"all"``: every
    image), C chosen by AUC on the val split, scored on test with bootstrap intervals.

    ``max_per_class`` caps the train, val and test pools as in :func:`evaluate_medmnist`
    (seed 0, the same test images), so ``"all"`` means the whole capped train pool. One result
    per shots × seed (``"all"`` once, with the first seed: every seed would draw the same
    images); each interval covers the test images only: the spread over seeds (which k
    images were drawn) is another source of variation, shown by the seeds themselves.

    Example:
        >>> runs = few_shot_medmnist(clip, "pathmnist", shots=[1, 2], seeds=[0], size=28,
        ...                          root=medmnist_root, n_resamples=100)
        >>> [(r.details["shots"], len(r.details["train"])) for r in runs]
        [(1, 9), (2, 18)]
    """
    _check(flag, "train", size)
    bad = [k for k in shots if k != "all" and (type(k) is not int or k < 1)]
    if bad or not list(shots) or not list(seeds) or any(type(s) is not int or s < 0 for s in seeds):
        raise ArgumentError(
            f"shots={shots!r}, seeds={seeds!r}: pass whole numbers ≥ 1 or 'all' "
            "as shots and whole numbers ≥ 0 as seeds, e.g. shots=(1, 4), seeds=(0, 1)."
        )
    if not list(Cs) or not all(isinstance(c, (int, float)) and c > 0 for c in Cs):
        raise ArgumentError(f"Cs={Cs!r}: pass positive numbers, e.g. np.logspace(-3, 3, 7).")
    path = medmnist_file(flag, size, root)
    task, names = medmnist.INFO[flag]["task"], class_names(flag)
    pools = {s: _sample(path, flag, s, max_per_class, 0) for s in SPLITS}
    train_y = pools["train"][1].reshape(len(pools["train"][1]), -1)
    if not train_y.any(axis=0).all() if task == MULTI_LABEL else len(np.unique(train_y)) < 2:
        raise ProbeError(f"The train pool of {flag} lacks a class or label: raise max_per_class.")
    pairs = [(k, s) for k in shots for s in (seeds[:1] if k == "all" else seeds)]
    runs = {(k, s): _k_shot(pools["train"][1], task, k, s) for k, s in pairs}
    used = np.unique(np.concatenate(list(runs.values())))
    kw = dict(batch_size=batch_size, cache=cache)
    x_used = split_embeddings(model, path, "train", pools["train"][0][used], **kw)[0]
    x_val = split_embeddings(model, path, "val", pools["val"][0], **kw)[0]
    x_test = split_embeddings(model, path, "test", pools["test"][0], **kw)[0]
    results = []
    for (k, seed), rows in runs.items():
        x, y = x_used[np.searchsorted(used, rows)], pools["train"][1][rows]
        best = None
        for c in Cs:
            probe = _fit(x, y, c, task, len(names))
            val = classification_metrics(pools["val"][1], probe(x_val), task, pools["val"][2])
            auc = -np.inf if np.isnan(val["auc"]) else val["auc"]  # undefined: any C beats it
            if best is None or auc > best[0]:
                best = (auc, c, probe)
        details = {"shots": k, "seed": seed, "C": best[1], "converged": best[2].converged}
        details["train"] = pools["train"][0][rows]
        args = (model, flag, "test", size, pools["test"], best[2](x_test), seed, n_resamples)
        results.append(_scored(*args, method="linear probe", details=details))
    return results


def paired_difference(
    a: BenchmarkResult,
    b: BenchmarkResult,
    metric: str = "auc",
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``metric`` of ``a`` minus that of ``b``, two results on the same images, with an
    interval (95% by default) from resamples shared by both (a paired bootstrap; drawn as
    every interval here, with its own ``seed``): (difference, low, high).

    Example:
        >>> a = evaluate_medmnist(clip, "breastmnist", size=28, root=medmnist_root)
        >>> paired_difference(a, a, "acc")
        (0.0, 0.0, 0.0)
    """
    same = (a.dataset, a.split, a.size, a.indices.tolist()) == (
        b.dataset,
        b.split,
        b.size,
        b.indices.tolist(),
    )
    if not same or metric not in a.metrics:
        raise ArgumentError(
            f"metric={metric!r} (one of {', '.join(a.metrics)}) of two results on "
            "the same images: evaluate both on the same split and sample."
        )
    kw = dict(n_resamples=n_resamples, level=level, seed=seed, weights=a.weights, versus=b.scores)
    ci = bootstrap_ci(a.labels, a.scores, a.task, **kw)
    return a.metrics[metric] - b.metrics[metric], *ci[metric]


def results_frame(results: Sequence[BenchmarkResult]) -> pd.DataFrame:
    """The rows of every result's :meth:`~BenchmarkResult.to_frame`, one table.

    Example:
        >>> r = evaluate_medmnist(clip, "breastmnist", size=28, root=medmnist_root)
        >>> results_frame([r, r]).shape
        (12, 12)
    """
    return pd.concat([r.to_frame() for r in results], ignore_index=True)
