"""Zero-shot evaluation of an image folder with one sub-folder per class (torchvision's
*ImageFolder* layout): accuracy, per-class scores, AUROC, bootstrap intervals. Notebook 03."""

import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from mmkd_utils.errors import ArgumentError, EvaluationError, PromptError, SkippedImagesWarning
from mmkd_utils.model.classifier import ZeroShotClassifier
from mmkd_utils.tasks.embeddings import IMAGE_SUFFIXES, list_images
from mmkd_utils.tasks.metrics import bootstrap_ci, check_resampling, classification_metrics

#: Columns of :attr:`EvaluationResult.predictions` besides one probability per class.
PREDICTION_COLUMNS = ("path", "true", "predicted")


@dataclass(eq=False, repr=False)
class EvaluationResult:
    """Metrics and per-image predictions of :func:`evaluate_folder`.

    ``top_k_accuracy`` is ``{k: accuracy}``; ``auroc_macro`` is NaN if a class has no images.
    ``metrics``: ``acc, auc, balanced_acc, macro_f1, precision, recall`` (``tasks.metrics``);
    ``ci``: their stratified-bootstrap 95% intervals. Tables: ``per_class`` (``class,
    precision, recall, f1, support``), ``confusion`` (true rows, predicted columns),
    ``predictions`` (``path, true, predicted``, a probability per class), ``skipped``.
    """

    class_names: tuple[str, ...]
    n_images: int
    accuracy: float
    balanced_accuracy: float
    top_k_accuracy: dict[int, float]
    auroc_macro: float
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    predictions: pd.DataFrame
    skipped: pd.DataFrame
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The main numbers on one line.

        Example:
            >>> import shutil
            >>> _ = shutil.copytree(imgs, tmp / "CT", ignore=shutil.ignore_patterns("[!c]*"))
            >>> evaluate_folder(clip, tmp, ["CT", "MRI"]).summary()[:19]  # no MRI images
            '3 images, 2 classes'
        """
        parts = ["accuracy {:.3f} (95% CI {:.3f}-{:.3f})".format(self.accuracy, *self.ci["acc"])]
        parts += [f"balanced accuracy {self.balanced_accuracy:.3f}"]
        parts += [f"top-{k} {v:.3f}" for k, v in self.top_k_accuracy.items()]
        parts += ["AUROC n/a" if math.isnan(self.auroc_macro) else f"AUROC {self.auroc_macro:.3f}"]
        skipped = f" ({len(self.skipped)} skipped)" if len(self.skipped) else ""
        head = f"{self.n_images} images, {len(self.class_names)} classes"
        return f"{head}: {', '.join(parts)}{skipped}"

    def __repr__(self) -> str:
        return f"EvaluationResult({self.summary()})"


def _loose_images(folder: Path) -> int:  # image files directly in folder (one listing, no walk)
    names = [e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    return sum(name.lower().endswith(IMAGE_SUFFIXES) for name in names)


def _class_folders(root: str | os.PathLike) -> list[Path]:
    """The class sub-folders of ``root``, sorted, hidden ones left out."""
    path = Path(root).expanduser()
    if not path.is_dir():
        problem = "is a file, not a folder" if path.exists() else "does not exist"
        raise EvaluationError(f"The image folder {path} {problem}: check the path.")
    names = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if not names:
        loose = f"it holds {_loose_images(path)} images directly"
        raise EvaluationError(f"{path} has no class sub-folders ({loose}): put each class in one.")
    return [path / name for name in names]


def _key(name: str) -> str:
    return " ".join(re.sub(r"[_\-]", " ", name).casefold().split())


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def match_folders(
    folder_names: Sequence[str],
    class_names: Sequence[str],
    folder_to_class: Mapping[str, str | None] | None = None,
) -> dict[str, str | None]:
    """Each folder's class: by ``folder_to_class`` (None leaves a folder out), by name, or by
    name ignoring case with ``_`` and ``-`` read as spaces.

    Example:
        >>> match_folders(["Normal", "pleural_effusion"], ["normal", "pleural effusion"])
        {'Normal': 'normal', 'pleural_effusion': 'pleural effusion'}
    """
    classes, chosen = list(class_names), dict(folder_to_class or {})
    known = f"The sub-folders are {_quoted(folder_names)}, the classes {_quoted(classes)}."
    wrong = {
        "sub-folders": [k for k in chosen if k not in folder_names],
        "class names": [v for v in chosen.values() if v is not None and v not in classes],
    }
    for what, names in wrong.items():
        if names:
            raise EvaluationError(f"folder_to_class: {_quoted(names)} not {what}. {known}")
    mapping = {}
    for folder in folder_names:
        found = [chosen[folder]] if folder in chosen else [c for c in classes if c == folder]
        mapping[folder] = found or [c for c in classes if _key(c) == _key(folder)]
    unclear = [folder for folder, found in mapping.items() if len(found) != 1]
    if unclear:
        hint = ", ".join(f"{f!r}: <class name or None>" for f in unclear[:2])
        raise EvaluationError(
            f"Folder(s) {_quoted(unclear)} match no class or several (ignoring case, '_', '-'). "
            f"{known} Rename the folders or pass folder_to_class={{{hint}}}."
        )
    return {folder: found[0] for folder, found in mapping.items()}


def _metrics(y: np.ndarray, probs: np.ndarray, names: tuple[str, ...], ks: list[int], **boot):
    """Every metric of :class:`EvaluationResult` but the tables of images."""
    n, pred, labels = len(names), probs.argmax(axis=1), np.arange(len(names))
    scores = probs[:, 1] if n == 2 else probs  # scikit-learn's binary convention
    ties = int(((probs == probs.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum())
    empty = [c for c, count in zip(names, np.bincount(y, minlength=n), strict=True) if not count]
    notes = [f"top-{k} accuracy left out: there are only {n} classes." for k in ks if k > n]
    if ties:
        notes.append(f"{ties} image(s) have several classes tied: 'predicted' is the first.")
    if empty:
        notes.append(f"AUROC is NaN: class(es) {_quoted(empty)} have no images (AUC undefined).")
    with warnings.catch_warnings():  # "k >= number of classes"
        warnings.simplefilter("ignore")
        top = {k: metrics.top_k_accuracy_score(y, scores, k=k, labels=labels) for k in ks if k <= n}
    shared = classification_metrics(y, probs, "multi-class")
    per_class = metrics.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    true, columns = pd.Index(names, name="true"), ("class", "precision", "recall", "f1", "support")
    return dict(
        accuracy=shared["acc"],
        balanced_accuracy=shared["balanced_acc"],
        top_k_accuracy={k: float(v) for k, v in top.items()},
        auroc_macro=shared["auc"],
        metrics=shared,
        ci=bootstrap_ci(y, probs, "multi-class", **boot),
        per_class=pd.DataFrame(dict(zip(columns, [names, *per_class], strict=True))),
        confusion=pd.DataFrame(
            metrics.confusion_matrix(y, pred, labels=labels), true, true.rename("predicted")
        ),
        notes=notes,
    )


def evaluate_folder(
    model: Any,
    root: str | os.PathLike,
    task_or_classes: str | Sequence[str] | Mapping[str, Sequence[str]] | ZeroShotClassifier,
    *,
    templates: Sequence[str] | None = None,
    folder_to_class: Mapping[str, str | None] | None = None,
    batch_size: int | None = None,
    on_error: str = "raise",
    top_k: int | Iterable[int] = (1, 5),
    n_resamples: int = 1000,
    seed: int = 0,
) -> EvaluationResult:
    """Zero-shot classify every image under ``root`` (one sub-folder per class) and score it.

    ``task_or_classes`` and ``templates`` go to ``model.classifier`` (or it is a classifier);
    folders are matched by :func:`match_folders`. ``on_error="skip"`` leaves out unreadable
    images and empty class folders: see ``result.skipped`` and the SkippedImagesWarning.
    ``n_resamples`` and ``seed`` go to :func:`~mmkd_utils.tasks.metrics.bootstrap_ci`.

    Example:
        >>> import shutil
        >>> for c in ["ct", "mri"]:  # imgs/ct_*.png and imgs/mri_*.png
        ...     _ = shutil.copytree(imgs, tmp / c, ignore=shutil.ignore_patterns(f"[!{c[0]}]*"))
        >>> result = evaluate_folder(clip, tmp, ["CT", "MRI"], templates=["A {} scan."])
        >>> result.n_images, list(result.per_class["support"]), result.confusion.shape
        (5, [3, 2], (2, 2))
        >>> list(result.predictions.columns)
        ['path', 'true', 'predicted', 'CT', 'MRI']
    """
    ks = list(top_k) if isinstance(top_k, Iterable) else [top_k]
    if not all(type(k) is int and k > 0 for k in ks):
        raise ArgumentError(f"top_k={top_k!r}: pass positive whole numbers, e.g. (1, 5).")
    check_resampling(n_resamples, seed)  # bad values fail here, before any image is encoded
    folders, clf = _class_folders(root), task_or_classes
    if not isinstance(clf, ZeroShotClassifier):
        clf = model.classifier(clf, templates)
    elif templates is not None:
        raise PromptError("templates do not apply to a ready classifier: pass the class names.")
    if (dim := clf.weights.shape[1]) != model.embed_dim:
        raise PromptError(f"The classifier has {dim}-d weights: build it with this model.")
    names, clash = clf.class_names, set(clf.class_names) & set(PREDICTION_COLUMNS)
    if len(names) < 2 or clash:
        problem = f"classes {_quoted(clash)} clash with columns" if clash else "one class only"
        raise EvaluationError(f"{problem} of {clf!r}: pass two or more other classes.")
    mapping = match_folders([f.name for f in folders], names, folder_to_class)
    notes, paths, truth, skipped = [], [], [], []
    if loose := _loose_images(folders[0].parent):
        notes.append(f"{loose} image(s) directly in {root} ignored: not in a class folder.")
    for folder in folders:
        if mapping[folder.name] is None:
            notes.append(f"Folder {folder.name!r} left out (folder_to_class maps it to None).")
            continue
        images = list_images(folder)
        if not images:
            reason = f"class folder {folder.name!r} holds no image files"
            if on_error == "raise":
                raise EvaluationError(f"The {reason}: put images in it, or pass on_error='skip'.")
            skipped.append((-1, str(folder), reason))
        paths += images
        truth += [names.index(mapping[folder.name])] * len(images)
    if not paths:
        raise EvaluationError(f"No class folder under {root} holds images: put some in them.")
    with warnings.catch_warnings(record=True) as caught:  # to list the failures in skipped
        warnings.simplefilter("always", SkippedImagesWarning)
        feats = model.encode_images(paths, batch_size=batch_size, on_error=on_error)
    skip = [isinstance(w.message, SkippedImagesWarning) for w in caught]
    failed = [f for w, s in zip(caught, skip, strict=True) if s for f in w.message.failures]
    for w in (w for w, s in zip(caught, skip, strict=True) if not s):
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    left_out = skipped + failed
    if left_out:
        lines = [f"  {path}: {reason}" for _, path, reason in left_out[:10]]
        head = f"Skipped {len(failed)} unreadable image(s) and {len(skipped)} empty class folder(s)"
        message = "\n".join([f"{head}; see result.skipped (the first 10 here):", *lines])
        warnings.warn(SkippedImagesWarning(message, left_out), stacklevel=2)
    kept = sorted(set(range(len(paths))) - {i for i, _, _ in failed})
    probs = (model.logit_scale * feats @ clf.weights.T).softmax(dim=-1).double().numpy()
    y = np.asarray([truth[i] for i in kept])
    table = {"path": pd.Series([str(paths[i]) for i in kept], dtype=object)}  # maybe not UTF-8
    table |= {"true": [names[i] for i in y], "predicted": [names[i] for i in probs.argmax(1)]}
    result = _metrics(y, probs, names, sorted(set(ks)), n_resamples=n_resamples, seed=seed)
    return EvaluationResult(
        names,
        len(kept),
        predictions=pd.DataFrame({**table, **dict(zip(names, probs.T, strict=True))}),
        skipped=pd.DataFrame([(p, r) for _, p, r in left_out], columns=["path", "reason"]),
        notes=notes + result.pop("notes"),
        **result,
    )
