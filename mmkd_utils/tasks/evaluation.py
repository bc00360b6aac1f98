"""Zero-shot evaluation of a labelled image folder: accuracy, per-class scores, AUROC.

:func:`evaluate_folder` reads torchvision's *ImageFolder* layout, one sub-folder per class
(``root/pneumonia/img001.png``, ``root/normal/...``), matches each folder to a class of a
zero-shot classifier, embeds the images through :mod:`mmkd_utils.images.pipeline` and
scores the predictions with scikit-learn. :func:`mmkd_utils.plotting.plot_confusion_matrix`
draws the ``confusion`` table. Introduced in ``notebooks/03_zero_shot_by_modality.ipynb``.
"""

from __future__ import annotations

import contextlib
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
import torch
from sklearn import metrics
from torchvision.datasets.folder import find_classes, has_file_allowed_extension
from tqdm.auto import tqdm

from mmkd_utils.errors import (
    ArgumentError,
    EvaluationError,
    ImageLoadError,
    PromptError,
    SkippedImagesWarning,
)
from mmkd_utils.images.pipeline import DEFAULT_BATCH_SIZE, check_batch_size, image_batches
from mmkd_utils.model.classifier import ZeroShotClassifier

#: File name endings of the images :func:`mmkd_utils.images.medical.load_image` reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
IMAGE_SUFFIXES += (".dcm", ".dicom", ".nii", ".nii.gz")
#: Columns of :attr:`EvaluationResult.predictions` besides one probability per class.
PREDICTION_COLUMNS = ("path", "true", "predicted")


@dataclass(eq=False, repr=False)
class EvaluationResult:
    """Metrics and per-image predictions of :func:`evaluate_folder`.

    ``per_class`` has the columns ``class, precision, recall, f1, support``; ``confusion``
    counts true classes (rows) against predicted ones; ``predictions`` has ``path, true,
    predicted`` and one probability column per class; ``skipped`` has ``path, reason`` of
    what ``on_error="skip"`` left out; ``auroc_macro`` is NaN (see ``notes``) when a class
    has no images; ``top_k_accuracy`` is ``{k: accuracy}`` for each ``k`` ≤ the classes.

    Example:
        >>> import shutil
        >>> for c in ["ct", "mri"]:  # imgs/ct_*.png and imgs/mri_*.png
        ...     _ = shutil.copytree(imgs, tmp / c, ignore=shutil.ignore_patterns(f"[!{c[0]}]*"))
        >>> result = evaluate_folder(clip, tmp, ["CT", "MRI"])
        >>> result.n_images, list(result.per_class["support"])
        (5, [3, 2])
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
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The main numbers on one line.

        Example:
            >>> import shutil
            >>> _ = shutil.copytree(imgs, tmp / "ct", ignore=shutil.ignore_patterns("[!c]*"))
            >>> _ = shutil.copytree(imgs, tmp / "mri", ignore=shutil.ignore_patterns("[!m]*"))
            >>> evaluate_folder(clip, tmp, ["CT", "MRI"]).summary().split(":")[0]
            '5 images, 2 classes'
        """
        auroc = "n/a" if math.isnan(self.auroc_macro) else f"{self.auroc_macro:.3f}"
        parts = [f"accuracy {self.accuracy:.3f}", f"balanced accuracy {self.balanced_accuracy:.3f}"]
        parts += [f"top-{k} {v:.3f}" for k, v in self.top_k_accuracy.items()]
        skipped = f" ({len(self.skipped)} skipped)" if len(self.skipped) else ""
        head = f"{self.n_images} images, {len(self.class_names)} classes"
        return f"{head}: {', '.join(parts)}, AUROC {auroc}{skipped}"

    def __repr__(self) -> str:
        return f"EvaluationResult({self.summary()})"


def _is_image(name: str) -> bool:
    return not name.startswith(".") and has_file_allowed_extension(name, IMAGE_SUFFIXES)


def find_class_folders(root: str | os.PathLike) -> list[Path]:
    """The class sub-folders of ``root`` (torchvision's ``find_classes``), hidden ones left out.

    Example:
        >>> (tmp / "normal").mkdir(), (tmp / ".cache").mkdir()
        (None, None)
        >>> [folder.name for folder in find_class_folders(tmp)]
        ['normal']
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        problem = "is a file, not a folder" if path.exists() else "does not exist"
        raise EvaluationError(
            f"The image folder {path} {problem}: pass a folder with one sub-folder per class "
            f"(a relative path starts from {Path.cwd()})."
        )
    try:
        names = [name for name in find_classes(path)[0] if not name.startswith(".")]
    except FileNotFoundError:  # torchvision's "no class folder"
        names = []
    if not names:
        loose = sum(_is_image(p.name) for p in path.iterdir() if p.is_file())
        raise EvaluationError(
            f"{path} has no class sub-folders (it holds {loose} images directly). Put the "
            f"images of each class in a sub-folder named after it, e.g. {path / 'pneumonia'}."
        )
    return [path / name for name in names]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (:data:`IMAGE_SUFFIXES`) under ``folder``, hidden ones left out, sorted.

    Example:
        >>> [path.name for path in list_images(imgs)][:2]
        ['ct_abdomen.png', 'ct_head.png']
    """
    top, found = Path(folder), []
    for parent, folders, files in os.walk(top):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [Path(parent, name) for name in files if _is_image(name)]
    return sorted(found, key=lambda path: path.relative_to(top).as_posix())


def match_folders(
    folder_names: Sequence[str],
    class_names: Sequence[str],
    folder_to_class: Mapping[str, str | None] | None = None,
) -> dict[str, str | None]:
    """Each folder's class: from ``folder_to_class`` (None leaves it out), the same name, or
    the same name ignoring case with ``_`` and ``-`` read as spaces.

    Example:
        >>> match_folders(["Normal", "pleural_effusion"], ["normal", "pleural effusion"])
        {'Normal': 'normal', 'pleural_effusion': 'pleural effusion'}
    """
    classes, chosen = list(class_names), dict(folder_to_class or {})
    unknown = [k for k in chosen if k not in folder_names]
    if unknown:
        raise EvaluationError(
            f"folder_to_class names folder(s) {_quoted(unknown)} that are not sub-folders "
            f"here. The sub-folders are: {_quoted(folder_names)}."
        )
    wrong = [v for v in chosen.values() if v is not None and v not in classes]
    if wrong:
        raise EvaluationError(
            f"folder_to_class maps to {_quoted(wrong)}, which are not class names of the "
            f"classifier. The class names are: {_quoted(classes)}."
        )
    by_key: dict[str, list[str]] = {}
    for name in classes:
        by_key.setdefault(_key(name), []).append(name)
    mapping, unmatched = {}, []
    for folder in folder_names:
        found = [chosen[folder]] if folder in chosen else [folder] if folder in classes else None
        found = found or by_key.get(_key(folder), [])
        if len(found) > 1:
            raise EvaluationError(
                f"Folder {folder!r} matches several class names ({_quoted(found)}) when case, "
                f"'_' and '-' are ignored: pass folder_to_class={{{folder!r}: {found[0]!r}}}."
            )
        mapping[folder] = found[0] if found else unmatched.append(folder)
    if unmatched:
        example = ", ".join(f"{f!r}: <class name>" for f in unmatched[:2])
        raise EvaluationError(
            f"Folder(s) {_quoted(unmatched)} match no class name (even ignoring case, '_' and "
            f"'-'). The class names are: {_quoted(classes)}. Rename the folders or pass "
            f"folder_to_class={{{example}}} (None leaves a folder out)."
        )
    return mapping


def _key(name: str) -> str:
    return " ".join(re.sub(r"[_\-]", " ", name).casefold().split())


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _classifier(model: Any, classes: Any, templates: Sequence[str] | None) -> ZeroShotClassifier:
    """``classes`` as a classifier of ``model`` that ``evaluate_folder`` can use."""
    if isinstance(classes, ZeroShotClassifier) and templates is not None:
        raise PromptError(
            "templates does not apply to a ready ZeroShotClassifier (its prompts are fixed): "
            "build it with model.classifier(classes, templates) instead."
        )
    clf = (
        classes if isinstance(classes, ZeroShotClassifier) else model.classifier(classes, templates)
    )
    if clf.weights.shape[1] != model.embed_dim:
        raise PromptError(
            f"The classifier has {clf.weights.shape[1]}-d weights but this model embeds in "
            f"{model.embed_dim} dimensions: build it with this model."
        )
    if len(clf.class_names) < 2:
        raise EvaluationError(f"Only the class {_quoted(clf.class_names)}: pass two or more.")
    clash = [c for c in clf.class_names if c in PREDICTION_COLUMNS]
    if clash:
        raise EvaluationError(
            f"Class name(s) {_quoted(clash)} clash with the columns "
            f"{_quoted(PREDICTION_COLUMNS)} of the predictions table: rename the class."
        )
    return clf


def _probabilities(
    model: Any, paths: list[Path], clf: ZeroShotClassifier, size: int, on_error: str
) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Probabilities [N_read, C], the positions in ``paths`` they belong to, the failures."""
    feats, kept, failed = [], [], []
    n_batches = math.ceil(len(paths) / size)
    bar = tqdm(total=len(paths), unit="image", desc="Evaluating", disable=n_batches < 2 or None)
    with bar, contextlib.closing(image_batches(paths, model.preprocess, batch_size=size)) as it:
        for batch in it:
            if batch.failures and on_error == "raise":
                raise batch.failures[0][1]
            failed += [(str(paths[i]), str(err)) for i, err in batch.failures]
            if batch.pixels is not None:
                feats.append(model.encode_pixels(batch.pixels))
                kept += batch.indices
            bar.update(len(batch.indices) + len(batch.failures))
    if not feats:
        lines = "".join(f"\n  {path}: {reason}" for path, reason in failed[:10])
        raise ImageLoadError(f"None of the {len(paths)} images could be read:{lines}")
    logits = model.logit_scale * torch.cat(feats) @ clf.weights.T  # as in model.zero_shot
    return logits.softmax(dim=-1), kept, failed


def _metrics(y: np.ndarray, probs: np.ndarray, names: tuple[str, ...], ks: list[int]) -> dict:
    """Every metric of :class:`EvaluationResult`, computed by scikit-learn."""
    labels, pred, notes = np.arange(len(names)), probs.argmax(axis=1), []
    ties = int(((probs == probs.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum())
    if ties:
        notes.append(
            f"{ties} image(s) have several classes tied for the highest probability (identical "
            "prompts or weights?): 'predicted' is the first of them, scikit-learn's top-k "
            "accuracy ranks the last first, so top-1 can differ from accuracy."
        )
    scores = probs[:, 1] if len(names) == 2 else probs  # scikit-learn's binary convention
    notes += [
        f"top-{k} accuracy left out: there are only {len(names)} classes."
        for k in ks
        if k > len(names)
    ]
    with warnings.catch_warnings():  # k = number of classes: "perfect score"
        warnings.filterwarnings("ignore", message=".*'k' .* greater than or equal to")
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        top = {
            k: float(metrics.top_k_accuracy_score(y, scores, k=k, labels=labels))
            for k in ks
            if k <= len(names)
        }
        balanced = float(metrics.balanced_accuracy_score(y, pred))
    empty = [
        name for name, n in zip(names, np.bincount(y, minlength=len(names)), strict=True) if n == 0
    ]
    if empty:
        notes.append(
            f"AUROC is NaN: class(es) {_quoted(empty)} have no images, so their AUC is undefined."
        )
    auroc = math.nan if empty else float(metrics.roc_auc_score(y, scores, multi_class="ovr"))
    table = metrics.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    per_class = pd.DataFrame(
        dict(zip(("precision", "recall", "f1", "support"), table, strict=True))
    )
    per_class.insert(0, "class", list(names))
    index = pd.Index(names, name="true")
    confusion = pd.DataFrame(
        metrics.confusion_matrix(y, pred, labels=labels),
        index=index,
        columns=index.rename("predicted"),
    )
    return dict(
        accuracy=float(metrics.accuracy_score(y, pred)),
        balanced_accuracy=balanced,
        top_k_accuracy=top,
        auroc_macro=auroc,
        per_class=per_class,
        confusion=confusion,
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
) -> EvaluationResult:
    """Zero-shot classify every image under ``root`` (one sub-folder per class) and score it.

    ``task_or_classes`` is a task name, class names or ``{class: [synonyms]}`` (passed with
    ``templates`` to ``model.classifier``), or a ready classifier. Folders match a class by
    ``folder_to_class`` ({folder: class}, None leaves one out), by name, or ignoring case,
    ``_`` and ``-``. Images may be nested; hidden files and non-images are ignored.
    ``on_error="skip"`` leaves out unreadable images and empty class folders (listed in
    ``result.skipped``, one :class:`~mmkd_utils.errors.SkippedImagesWarning`) instead of
    raising :class:`~mmkd_utils.errors.ImageLoadError` or ``EvaluationError``. Probabilities
    are those of ``model.zero_shot``; ``top_k`` above the number of classes is left out.

    Example:
        >>> import shutil
        >>> for c in ["ct", "mri"]:  # imgs/ct_*.png and imgs/mri_*.png
        ...     _ = shutil.copytree(imgs, tmp / c, ignore=shutil.ignore_patterns(f"[!{c[0]}]*"))
        >>> result = evaluate_folder(clip, tmp, ["CT", "MRI"], templates=["A {} scan."])
        >>> list(result.predictions.columns), result.confusion.shape
        (['path', 'true', 'predicted', 'CT', 'MRI'], (2, 2))
    """
    if on_error not in ("raise", "skip"):
        raise ArgumentError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
    size = check_batch_size(batch_size, getattr(model, "image_batch_size", DEFAULT_BATCH_SIZE))
    ks = [top_k] if isinstance(top_k, int) else list(top_k)
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ArgumentError(f"top_k={top_k!r}: pass positive whole numbers, e.g. (1, 5).")
    folders = find_class_folders(root)
    clf = _classifier(model, task_or_classes, templates)
    names = tuple(clf.class_names)
    mapping = match_folders([f.name for f in folders], names, folder_to_class)
    notes, skipped, paths, truth = [], [], [], []
    for folder in folders:
        if mapping[folder.name] is None:
            notes.append(f"Folder {folder.name!r} left out (folder_to_class maps it to None).")
            continue
        images = list_images(folder)
        if not images:
            reason = (
                f"class folder {folder.name!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
            )
            if on_error == "raise":
                raise EvaluationError(
                    f"The {reason}. Add images, delete the folder, map it to None with "
                    "folder_to_class, or pass on_error='skip'."
                )
            skipped.append((str(folder), reason))
        paths += images
        truth += [names.index(mapping[folder.name])] * len(images)
    if not paths:
        raise EvaluationError(f"No class folder under {root} holds image files: add some.")
    loose = [p for p in folders[0].parent.iterdir() if p.is_file() and _is_image(p.name)]
    if loose:
        notes.append(f"{len(loose)} image(s) directly in {root} ignored: not in a class folder.")

    probs, kept, failed = _probabilities(model, paths, clf, size, on_error)
    if failed or skipped:
        lines = [f"  {path}: {reason}" for path, reason in skipped + failed]
        lines = lines[:10] + [f"  ... and {len(lines) - 10} more"] * (len(lines) > 10)
        position = {str(p): i for i, p in enumerate(paths)}
        message = f"Skipped {len(failed)} unreadable image(s) and {len(skipped)} empty class "
        message += "folder(s); see result.skipped:\n"
        failures = [(position.get(p, -1), p, reason) for p, reason in skipped + failed]
        warnings.warn(SkippedImagesWarning(message + "\n".join(lines), failures), stacklevel=2)
    probs = probs.numpy().astype(np.float64)
    y = np.asarray([truth[i] for i in kept], dtype=np.int64)
    predictions = pd.DataFrame(
        {
            "path": [str(paths[i]) for i in kept],
            "true": [names[i] for i in y],
            "predicted": [names[i] for i in probs.argmax(axis=1)],
            **{name: probs[:, j] for j, name in enumerate(names)},
        }
    )
    result = _metrics(y, probs, names, sorted(set(ks)))
    return EvaluationResult(
        class_names=names,
        n_images=len(kept),
        predictions=predictions,
        skipped=pd.DataFrame(skipped + failed, columns=["path", "reason"]),
        **{**result, "notes": notes + result["notes"]},
    )
