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
import hashlib
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
from mmkd_utils.download import download_url
from mmkd_utils.errors import ArgumentError, DatasetNotFoundError, DownloadError
from mmkd_utils.images import pipeline
from mmkd_utils.prompts import get_task
from mmkd_utils.tasks.embeddings import cache_folder
from mmkd_utils.tasks.metrics import (
    MULTI_LABEL,
    bootstrap_ci,
    classification_metrics,
    strata,
    stratified_sample,
)
from mmkd_utils.tasks.probe import DEFAULT_CS, DEFAULT_SEEDS, DEFAULT_SHOTS, FIT

#: The 2-D datasets whose modality the prompt banks cover (TissueMNIST's is fluorescence).
FLAGS = tuple(f for f in medmnist.INFO if not f.endswith("3d") and f != "tissuemnist")
SIZES, SPLITS = (28, 64, 128, 224), ("train", "val", "test")
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
        digest = hashlib.md5(usedforsecurity=False)
        with open(part, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != md5:
            raise DownloadError(f"its MD5 is {digest.hexdigest()}, expected {md5}")

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
    key, found = f"{split}_{what}", []
    try:
        with zipfile.ZipFile(path) as npz, npz.open(f"{key}.npy") as f:
            if rows is None:
                return np.lib.format.read_array(f, allow_pickle=False)
            major, minor = np.lib.format.read_magic(f)
            reader = getattr(np.lib.format, f"read_array_header_{major}_{minor}")
            shape, _, dtype = reader(f)
            start, row = f.tell(), int(np.prod(shape[1:], dtype=int)) * dtype.itemsize
            order = np.argsort(rows)
            out = np.empty((len(rows), *shape[1:]), dtype)
            for i in order:  # forward seeks only: a compressed member is read once
                f.seek(start + int(rows[i]) * row)
                out[i] = np.frombuffer(f.read(row), dtype).reshape(shape[1:])
            return out
    except KeyError:
        with contextlib.suppress(Exception), zipfile.ZipFile(path) as npz:
            found = [name.removesuffix(".npy") for name in npz.namelist()]
    except Exception as err:  # not a zip, truncated, a pickle: not a MedMNIST file
        found = [f"nothing readable: {type(err).__name__}: {err}"]
    raise DatasetNotFoundError(
        f"{path} has no array {key!r} (it has {', '.join(found) or 'nothing'}): it is not a "
        "MedMNIST file. Delete it and run again to download it."
    )


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


def _read_cache(file: Path, source: str, dim: int) -> dict[int, np.ndarray]:
    try:
        with np.load(file) as npz:
            ok = str(npz["source"]) == source and npz["embeddings"].shape[1:] == (dim,)
            return dict(zip(npz["indices"].tolist(), npz["embeddings"], strict=True)) if ok else {}
    except Exception:  # absent, half-written by a crash, another file's: embed again
        return {}


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

    Example:
        >>> path = medmnist_file("breastmnist", 28, medmnist_root)
        >>> _ = split_embeddings(clip, path, "val", np.arange(4))
        >>> split_embeddings(clip, path, "val", np.arange(4))[1]
        4
    """
    folder = cache_folder(model, cache)
    file = None if folder is None else folder / "medmnist" / f"{path.stem}_{split}.npz"
    stat = path.stat()
    source = f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
    rows = {} if file is None else _read_cache(file, source, model.embed_dim)
    missing = [i for i in indices.tolist() if i not in rows]
    if missing:
        images = load_split(path, split, "images", missing)
        rows.update(zip(missing, embed_arrays(model, images, batch_size=batch_size), strict=True))
        if file is not None:  # all rows so far, written whole (a temporary file, then renamed)
            tmp = file.with_name(f".{file.stem}.{uuid.uuid4().hex[:8]}.tmp.npz")
            keys = np.asarray(sorted(rows))
            with contextlib.suppress(OSError):
                file.parent.mkdir(parents=True, exist_ok=True)
                np.savez(
                    tmp, indices=keys, embeddings=np.stack([rows[i] for i in keys]), source=source
                )
                os.replace(tmp, file)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return np.stack([rows[i] for i in indices.tolist()]), len(indices) - len(missing)


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
        weights = model.classifier(prompts, bank.templates).weights
        probs = (model.logit_scale * feats @ weights.T).double().softmax(dim=-1).numpy()
        columns.append(probs[:, 1:] if task == MULTI_LABEL else probs)
    return np.concatenate(columns, axis=1)


def _model_name(model: Any) -> str:
    return model.model_name or Path(model.source).name or "model"


def _sample(path: Path, flag: str, split: str, max_per_class: int | None, seed: int):
    labels = load_split(path, split)
    idx = stratified_sample(strata(labels, medmnist.INFO[flag]["task"]), max_per_class, seed)
    return idx, labels[idx]


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
    ChestMNIST, per first finding), drawn with ``seed``; None: the whole split. ``seed``
    also seeds the bootstrap (``n_resamples`` resamples, stratified the same way).

    Example:
        >>> evaluate_medmnist(clip, "pathmnist", size=28, root=medmnist_root).labels.shape
        (27, 1)
    """
    _check(flag, split, size)
    path = medmnist_file(flag, size, root)
    idx, labels = _sample(path, flag, split, max_per_class, seed)
    feats, from_cache = split_embeddings(
        model, path, split, idx, batch_size=batch_size, cache=cache
    )
    task = medmnist.INFO[flag]["task"]
    scores = zero_shot_scores(model, flag, feats)
    return BenchmarkResult(
        _model_name(model),
        flag,
        split,
        size,
        task,
        class_names(flag),
        idx,
        labels,
        scores,
        classification_metrics(labels, scores, task),
        bootstrap_ci(labels, scores, task, n_resamples=n_resamples, seed=seed),
        details={"from_cache": from_cache},
    )


def _k_shot(labels: np.ndarray, task: str, k: int | str, seed: int) -> np.ndarray:
    """Rows of a k-shot training set: k per class; multi-label: k per finding and k normals."""
    if k == "all":
        return np.arange(len(labels))
    if task != MULTI_LABEL:
        return stratified_sample(labels.reshape(-1), k, seed)
    rng, y = np.random.default_rng(seed), labels.reshape(len(labels), -1)
    pools = [np.flatnonzero(y[:, j]) for j in range(y.shape[1])] + [np.flatnonzero(~y.any(1))]
    picked = [rng.choice(p, min(k, len(p)), replace=False) for p in pools if len(p)]
    return np.unique(np.concatenate(picked))


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
    (seed 0), so ``"all"`` means the whole capped train pool. One result per shots × seed.

    Example:
        >>> runs = few_shot_medmnist(clip, "pathmnist", shots=[1, 2], seeds=[0], size=28,
        ...                          root=medmnist_root, n_resamples=100)
        >>> [(r.details["shots"], len(r.details["train"])) for r in runs]
        [(1, 9), (2, 18)]
    """
    path = medmnist_file(flag, size, root)
    task, names = medmnist.INFO[flag]["task"], class_names(flag)
    bad = [k for k in shots if k != "all" and (type(k) is not int or k < 1)]
    if bad or not shots or not seeds:
        raise ArgumentError(f"shots={shots!r}, seeds={seeds!r}: pass whole numbers ≥ 1 or 'all'.")
    pools = {s: _sample(path, flag, s, max_per_class, 0) for s in SPLITS}
    runs = {(k, seed): _k_shot(pools["train"][1], task, k, seed) for k in shots for seed in seeds}
    used = np.unique(np.concatenate(list(runs.values())))
    kw = dict(batch_size=batch_size, cache=cache)
    x_used = split_embeddings(model, path, "train", pools["train"][0][used], **kw)[0]
    x_all = dict(zip(used.tolist(), x_used, strict=True))
    x_val = split_embeddings(model, path, "val", pools["val"][0], **kw)[0]
    x_test = split_embeddings(model, path, "test", pools["test"][0], **kw)[0]
    results = []
    for (k, seed), rows in runs.items():
        x, y = np.stack([x_all[i] for i in rows.tolist()]), pools["train"][1][rows]
        best = None
        for c in Cs:
            probe = _fit(x, y, c, task, len(names))
            auc = classification_metrics(pools["val"][1], probe(x_val), task)["auc"]
            auc = -np.inf if np.isnan(auc) else auc  # undefined on val: any C beats it
            if best is None or auc > best[0]:
                best = (auc, c, probe)
        scores, labels = best[2](x_test), pools["test"][1]
        results.append(
            BenchmarkResult(
                _model_name(model),
                flag,
                "test",
                size,
                task,
                names,
                pools["test"][0],
                labels,
                scores,
                classification_metrics(labels, scores, task),
                bootstrap_ci(labels, scores, task, n_resamples=n_resamples, seed=seed),
                method="linear probe",
                details={
                    "shots": k,
                    "seed": seed,
                    "C": best[1],
                    "converged": best[2].converged,
                    "train": pools["train"][0][rows],
                },
            )
        )
    return results


def results_frame(results: Sequence[BenchmarkResult]) -> pd.DataFrame:
    """The rows of every result's :meth:`~BenchmarkResult.to_frame`, one table.

    Example:
        >>> r = evaluate_medmnist(clip, "breastmnist", size=28, root=medmnist_root)
        >>> results_frame([r, r]).shape
        (12, 12)
    """
    return pd.concat([r.to_frame() for r in results], ignore_index=True)
