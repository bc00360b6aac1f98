"""Zero-shot evaluation of a labelled image folder: accuracy, per-class scores, AUROC.

:func:`evaluate_folder` reads an *ImageFolder* layout, one sub-folder per class::

    root/
        pneumonia/          img001.png, img002.dcm, ...
        pleural_effusion/   ...
        normal/             ...

matches each folder to a class of a zero-shot classifier, classifies every image and
computes the usual metrics with scikit-learn. Everything comes back in one
:class:`EvaluationResult`; :func:`mmkd_utils.plotting.plot_confusion_matrix` draws its
``confusion`` table.

pandas and scikit-learn are imported when :func:`evaluate_folder` runs, not when the
package is imported.

Introduced in ``notebooks/03_zero_shot_by_modality.ipynb``.

Example:
    >>> from mmkd_utils import evaluate_folder, load_model
    >>> clip = load_model()  # doctest: +SKIP
    >>> result = evaluate_folder(clip, "data/chest", ["pneumonia", "normal"],
    ...                          templates=["A chest X-ray showing {}."])  # doctest: +SKIP
    >>> result.summary()  # doctest: +SKIP
    '412 images, 2 classes: accuracy 0.771, balanced accuracy 0.765, top-1 0.771, AUROC 0.842'
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmkd_utils.errors import (
    EvaluationError,
    ImageLoadError,
    PromptError,
    SkippedImagesWarning,
)
from mmkd_utils.images.pipeline import DEFAULT_BATCH_SIZE as DEFAULT_IMAGE_BATCH
from mmkd_utils.images.pipeline import check_batch_size as _check_batch_size
from mmkd_utils.model.classifier import ZeroShotClassifier

if TYPE_CHECKING:
    import pandas as pd

    from mmkd_utils.model.loading import MMKDModel

#: File name endings of the images :func:`mmkd_utils.images.medical.load_image` reads.
IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".gif",
    ".webp",
    ".dcm",
    ".dicom",
    ".nii",
    ".nii.gz",
)
#: Columns of :attr:`EvaluationResult.predictions` besides one probability per class.
PREDICTION_COLUMNS = ("path", "true", "predicted")
# How many failures the one warning of evaluate_folder lists before "... and N more".
_WARN_LINES = 10

__all__ = [
    "IMAGE_SUFFIXES",
    "EvaluationError",
    "EvaluationResult",
    "evaluate_folder",
    "find_class_folders",
    "list_images",
    "match_folders",
]


@dataclass(eq=False, repr=False)
class EvaluationResult:
    """Metrics and per-image predictions of :func:`evaluate_folder`.

    Attributes:
        class_names: The classifier's classes, in the order of every table below.
        accuracy: Fraction of images whose most probable class is the true one.
        balanced_accuracy: Mean recall over the classes that have images.
        top_k_accuracy: ``{k: fraction of images whose true class is among the k most
            probable}``, for each requested ``k`` not above the number of classes.
        auroc_macro: One-vs-rest ROC AUC averaged over classes; NaN (with a note) when a
            class has no images, since its AUC is undefined.
        per_class: One row per class: ``class, precision, recall, f1, support``.
        confusion: Counts, rows the true class, columns the predicted class.
        predictions: One row per image: ``path, true, predicted`` and one probability
            column per class (named after the class).
        skipped: ``path, reason`` of every unreadable image or empty class folder left out
            with ``on_error="skip"``.
        notes: Remarks on the evaluation (e.g. why the AUROC is NaN).

    Example:
        >>> result = evaluate_folder(clip, "data/chest", ["pneumonia", "normal"])
        ... # doctest: +SKIP
        >>> result.per_class.set_index("class").loc["pneumonia", "recall"]  # doctest: +SKIP
        0.81
    """

    class_names: tuple[str, ...]
    accuracy: float
    balanced_accuracy: float
    top_k_accuracy: dict[int, float]
    auroc_macro: float
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    predictions: pd.DataFrame
    skipped: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        """Number of images evaluated (skipped ones not counted).

        Example:
            >>> result.n_images  # doctest: +SKIP
            412
        """
        return len(self.predictions)

    def summary(self) -> str:
        """The main numbers on one line.

        Example:
            >>> result.summary()  # doctest: +SKIP
            '412 images, 2 classes: accuracy 0.771, balanced accuracy 0.765, top-1 0.771, ...'
        """
        parts = [
            f"accuracy {self.accuracy:.3f}",
            f"balanced accuracy {self.balanced_accuracy:.3f}",
            *(f"top-{k} {v:.3f}" for k, v in self.top_k_accuracy.items()),
            "AUROC n/a" if math.isnan(self.auroc_macro) else f"AUROC {self.auroc_macro:.3f}",
        ]
        text = f"{self.n_images} images, {len(self.class_names)} classes: " + ", ".join(parts)
        if len(self.skipped):
            text += f" ({len(self.skipped)} skipped)"
        return text

    def __repr__(self) -> str:
        return f"EvaluationResult({self.summary()})"


# --------------------------------------------------------------------------- the folder


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image_name(name: str) -> bool:
    return not _is_hidden(name) and name.lower().endswith(IMAGE_SUFFIXES)


def find_class_folders(root: str | os.PathLike) -> list[Path]:
    """The non-hidden sub-folders of ``root``, sorted by name; an error if there are none.

    Example:
        >>> [f.name for f in find_class_folders("data/chest")]  # doctest: +SKIP
        ['normal', 'pneumonia']
    """
    path = Path(root).expanduser()
    if not path.exists():
        raise EvaluationError(
            f"The image folder {path} does not exist: check the path (relative paths start "
            f"from {Path.cwd()})."
        )
    if not path.is_dir():
        raise EvaluationError(
            f"{path} is a file, not a folder: pass a folder holding one sub-folder per class."
        )
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not _is_hidden(p.name))
    if not folders:
        loose = sum(1 for p in path.iterdir() if p.is_file() and _is_image_name(p.name))
        hint = f" It holds {loose} images directly;" if loose else ""
        raise EvaluationError(
            f"{path} has no class sub-folders.{hint} Put the images of each class in a "
            f"sub-folder named after the class, e.g. {path / 'pneumonia'}."
        )
    return folders


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (sub-folders included), sorted; hidden ones ignored.

    An image is a file whose name ends in one of :data:`IMAGE_SUFFIXES` (any case).

    Example:
        >>> [p.name for p in list_images("data/chest/normal")][:2]  # doctest: +SKIP
        ['img001.png', 'img002.dcm']
    """
    top = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        found += [Path(dirpath) / name for name in filenames if _is_image_name(name)]
    return sorted(found, key=lambda p: p.relative_to(top).as_posix())


def _normalize_name(name: str) -> str:
    return " ".join(re.sub(r"[_\-]", " ", name).casefold().split())


def match_folders(
    folder_names: Sequence[str],
    class_names: Sequence[str],
    folder_to_class: Mapping[str, str | None] | None = None,
) -> dict[str, str | None]:
    """Map each folder name to a class name.

    ``folder_to_class`` decides first (a value of None leaves that folder out); then an
    exact match; then a match ignoring case, with ``_`` and ``-`` read as spaces (so
    ``pleural_effusion`` and ``Pleural-Effusion`` both find "pleural effusion").

    Example:
        >>> match_folders(["Normal", "pleural_effusion"], ["normal", "pleural effusion"])
        {'Normal': 'normal', 'pleural_effusion': 'pleural effusion'}
    """
    classes = list(class_names)
    overrides = dict(folder_to_class or {})
    unknown_keys = [k for k in overrides if k not in folder_names]
    if unknown_keys:
        raise EvaluationError(
            f"folder_to_class names folder(s) {_quoted(unknown_keys)} that are not "
            f"sub-folders here. The sub-folders are: {_quoted(folder_names)}."
        )
    bad_values = [v for v in overrides.values() if v is not None and v not in classes]
    if bad_values:
        raise EvaluationError(
            f"folder_to_class maps to {_quoted(bad_values)}, which are not class names of "
            f"the classifier. The class names are: {_quoted(classes)}."
        )
    by_norm: dict[str, list[str]] = {}
    for name in classes:
        by_norm.setdefault(_normalize_name(name), []).append(name)

    mapping: dict[str, str | None] = {}
    unmatched = []
    for folder in folder_names:
        if folder in overrides:
            mapping[folder] = overrides[folder]
        elif folder in classes:
            mapping[folder] = folder
        else:
            candidates = by_norm.get(_normalize_name(folder), [])
            if len(candidates) > 1:
                raise EvaluationError(
                    f"Folder {folder!r} matches several class names ({_quoted(candidates)}) "
                    f"when case, '_' and '-' are ignored: pass folder_to_class="
                    f"{{{folder!r}: {candidates[0]!r}}} to choose."
                )
            if candidates:
                mapping[folder] = candidates[0]
            else:
                unmatched.append(folder)
    if unmatched:
        example = ", ".join(f"{f!r}: <class name>" for f in unmatched[:2])
        raise EvaluationError(
            f"Folder(s) {_quoted(unmatched)} match no class name (even ignoring case, '_' "
            f"and '-'). The class names are: {_quoted(classes)}. Rename the folders or pass "
            f"folder_to_class={{{example}}} (None leaves a folder out)."
        )
    return mapping


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


# --------------------------------------------------------------------------- computation


def _resolve_classifier(
    model: MMKDModel,
    task_or_classes: str | Sequence[str] | Mapping[str, Sequence[str]] | ZeroShotClassifier,
    templates: Sequence[str] | None,
) -> ZeroShotClassifier:
    if isinstance(task_or_classes, ZeroShotClassifier):
        if templates is not None:
            raise PromptError(
                "templates does not apply to a ready ZeroShotClassifier (its prompts are "
                "fixed): build it with model.classifier(classes, templates) instead."
            )
        clf = task_or_classes
    else:
        clf = model.classifier(task_or_classes, templates)
    if clf.weights.shape[1] != model.embed_dim:  # the check of MMKDModel.zero_shot, up front
        raise PromptError(
            f"The classifier has {clf.weights.shape[1]}-d weights but this model embeds in "
            f"{model.embed_dim} dimensions: build it with this model."
        )
    if len(clf.class_names) < 2:
        raise EvaluationError(
            f"The classifier has only the class {_quoted(clf.class_names)}; zero-shot "
            "evaluation needs at least two classes to choose between."
        )
    clash = [c for c in clf.class_names if c in PREDICTION_COLUMNS]
    if clash:
        raise EvaluationError(
            f"Class name(s) {_quoted(clash)} would clash with the columns "
            f"{_quoted(PREDICTION_COLUMNS)} of the predictions table: rename the class."
        )
    return clf


def _encode_batch(
    model: MMKDModel, batch: list[Path], size: int, on_error: str
) -> tuple[torch.Tensor | None, list[tuple[int, str]]]:
    """Embed one batch; return the embeddings of readable images and (index, reason) of the rest.

    The model's :class:`SkippedImagesWarning` is caught here and turned into the failures.
    """
    failures: list[tuple[int, str]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedImagesWarning)
        try:
            feats = model.encode_images(batch, batch_size=size, on_error=on_error)
        except ImageLoadError:
            if on_error == "raise":
                raise
            feats = None  # every image failed: read them one at a time for the reasons
    for item in caught:
        if isinstance(item.message, SkippedImagesWarning):
            failures += [(index, reason) for index, _, reason in item.message.failures]
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    if feats is None:
        rows = []
        for index, path in enumerate(batch):
            try:
                rows.append(model.encode_images([path], on_error="raise"))
            except ImageLoadError as err:
                failures.append((index, str(err)))
        feats = torch.cat(rows) if rows else None
    return feats, failures


def _probabilities(
    model: MMKDModel,
    paths: list[Path],
    clf: ZeroShotClassifier,
    size: int,
    on_error: str,
) -> tuple[torch.Tensor, list[int], list[tuple[Path, str]]]:
    """Probabilities [N_ok, C], the indices of ``paths`` they belong to, and the failures."""
    from tqdm.auto import tqdm

    feats, kept, failed = [], [], []
    n_batches = math.ceil(len(paths) / size)
    with tqdm(
        total=len(paths), unit="image", desc="Evaluating", disable=None if n_batches > 1 else True
    ) as bar:
        for start in range(0, len(paths), size):
            batch = paths[start : start + size]
            batch_feats, failures = _encode_batch(model, batch, size, on_error)
            bad = {index for index, _ in failures}
            failed += [(batch[index], reason) for index, reason in failures]
            kept += [start + i for i in range(len(batch)) if i not in bad]
            if batch_feats is not None:
                feats.append(batch_feats)
            bar.update(len(batch))
    if not feats:
        lines = "\n".join(f"  {path}: {reason}" for path, reason in failed[:_WARN_LINES])
        raise ImageLoadError(f"None of the {len(paths)} images could be read:\n{lines}")
    with torch.no_grad():  # the formula of MMKDModel.zero_shot
        logits = model.logit_scale * torch.cat(feats) @ clf.weights.T
        return logits.softmax(dim=-1), kept, failed


def _check_top_k(top_k: int | Iterable[int]) -> list[int]:
    values = [top_k] if isinstance(top_k, int) else list(top_k)
    for k in values:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"top_k={top_k!r}: pass positive whole numbers, e.g. (1, 5).")
    return sorted(set(values))


def _metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: tuple[str, ...],
    top_k: list[int],
    notes: list[str],
) -> dict[str, Any]:
    """Every metric of :class:`EvaluationResult`, computed by scikit-learn."""
    import pandas as pd
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
        top_k_accuracy_score,
    )

    n_classes = len(class_names)
    labels = np.arange(n_classes)
    y_pred = probs.argmax(axis=1)
    ties = int(((probs == probs.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum())
    if ties:
        notes.append(
            f"{ties} image(s) have several classes tied for the highest probability (do "
            "some classes have identical prompts or weights?): 'predicted' is the first of "
            "them, scikit-learn's top-k accuracy ranks the last first, so top-1 can differ "
            "from accuracy."
        )
    # scikit-learn wants the binary case as the probability of the second class.
    scores = probs[:, 1] if n_classes == 2 else probs
    top = {}
    for k in top_k:
        if k > n_classes:
            notes.append(f"top-{k} accuracy left out: there are only {n_classes} classes.")
            continue
        with warnings.catch_warnings():  # k == n_classes: "perfect score" warning
            warnings.filterwarnings("ignore", message=".*'k' .* greater than or equal to")
            top[k] = float(top_k_accuracy_score(y_true, scores, k=k, labels=labels))

    support = np.bincount(y_true, minlength=n_classes)
    empty = [name for name, n in zip(class_names, support, strict=True) if n == 0]
    if empty:
        auroc = math.nan
        notes.append(
            f"AUROC is NaN: class(es) {_quoted(empty)} have no images, so their one-vs-rest "
            "AUC is undefined."
        )
    else:
        auroc = float(roc_auc_score(y_true, scores, multi_class="ovr", average="macro"))
    with warnings.catch_warnings():  # predictions of classes without images are expected
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    precision, recall, f1, counts = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = pd.DataFrame(
        {
            "class": list(class_names),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": counts,
        }
    )
    confusion = pd.DataFrame(
        confusion_matrix(y_true, y_pred, labels=labels),
        index=pd.Index(class_names, name="true"),
        columns=pd.Index(class_names, name="predicted"),
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced,
        "top_k_accuracy": top,
        "auroc_macro": auroc,
        "per_class": per_class,
        "confusion": confusion,
    }


# --------------------------------------------------------------------------- the entry point


def evaluate_folder(
    model: MMKDModel,
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

    Args:
        model: A loaded :class:`~mmkd_utils.model.loading.MMKDModel`.
        root: Folder with one sub-folder per class; images may sit in nested folders
            inside a class folder. Hidden files and folders are ignored, and so are files
            that are not images (see :data:`IMAGE_SUFFIXES`).
        task_or_classes: A task name, a list of class names or a mapping
            ``{class: [synonyms]}`` (all passed to ``model.classifier``), or a ready
            :class:`~mmkd_utils.model.classifier.ZeroShotClassifier`.
        templates: Prompt templates for ``model.classifier`` (``{}`` marks the name).
        folder_to_class: ``{folder name: class name}`` for folders whose names do not
            match a class (None leaves a folder out). Other folders match a class name
            exactly, or else ignoring case with ``_`` and ``-`` read as spaces.
        batch_size: Images per forward pass (default that of ``model.encode_images``).
        on_error: ``"raise"`` stops at the first unreadable image or empty class folder;
            ``"skip"`` leaves them out, lists them in ``result.skipped`` and warns once
            with a :class:`~mmkd_utils.errors.SkippedImagesWarning`.
        top_k: The ``k`` of the top-k accuracies; those above the number of classes are
            left out.

    Returns:
        An :class:`EvaluationResult`. Probabilities are
        ``softmax(model.logit_scale · image · weightsᵀ)``, as in ``model.zero_shot``.

    Raises:
        EvaluationError: ``root`` is missing or has no class sub-folders, a folder matches
            no class (the message lists the folders and the class names), or a class
            folder holds no images (with ``on_error="raise"``).
        ImageLoadError: An image cannot be read (``on_error="raise"``; the message names
            the file), or none can.
        PromptError: The classes or templates are not usable.

    Example:
        >>> result = evaluate_folder(clip, "data/chest", {"pneumonia": ["lung infection"],
        ...                          "normal": ["no finding"]}, on_error="skip")
        ... # doctest: +SKIP
        >>> result.confusion  # doctest: +SKIP
    """
    import pandas as pd

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
    size = _check_batch_size(batch_size, getattr(model, "image_batch_size", DEFAULT_IMAGE_BATCH))
    ks = _check_top_k(top_k)
    folders = find_class_folders(root)
    clf = _resolve_classifier(model, task_or_classes, templates)
    class_names = tuple(clf.class_names)
    mapping = match_folders([f.name for f in folders], class_names, folder_to_class)

    notes: list[str] = []
    skipped: list[tuple[str, str]] = []
    paths: list[Path] = []
    truth: list[int] = []
    for folder in folders:
        target = mapping[folder.name]
        if target is None:
            notes.append(f"Folder {folder.name!r} left out (folder_to_class maps it to None).")
            continue
        images = list_images(folder)
        if not images:
            reason = (
                f"class folder {folder.name!r} (class {target!r}) holds no image files "
                f"({', '.join(IMAGE_SUFFIXES)})"
            )
            if on_error == "raise":
                raise EvaluationError(
                    f"The {reason}. Add images, delete the folder, map it to None with "
                    f"folder_to_class, or pass on_error='skip'."
                )
            skipped.append((str(folder), reason))
            continue
        paths += images
        truth += [class_names.index(target)] * len(images)
    if not paths:
        raise EvaluationError(
            f"No class folder under {root} holds any image files ({', '.join(IMAGE_SUFFIXES)}): "
            "check the folder, and put the images of each class in its sub-folder."
        )
    loose = [p for p in Path(root).expanduser().iterdir() if p.is_file() and _is_image_name(p.name)]
    if loose:
        notes.append(f"{len(loose)} image(s) directly in {root} ignored: not in a class folder.")

    probs, kept, failed = _probabilities(model, paths, clf, size, on_error)
    skipped += [(str(path), reason) for path, reason in failed]
    if skipped:
        lines = [f"  {path}: {reason}" for path, reason in skipped]
        if len(lines) > _WARN_LINES:
            lines = lines[:_WARN_LINES] + [f"  ... and {len(lines) - _WARN_LINES} more"]
        index = {str(p): i for i, p in enumerate(paths)}
        warnings.warn(
            SkippedImagesWarning(
                f"Skipped {len(failed)} unreadable image(s) and "
                f"{len(skipped) - len(failed)} empty class folder(s); see result.skipped:\n"
                + "\n".join(lines),
                [(index.get(path, -1), path, reason) for path, reason in skipped],
            ),
            stacklevel=2,
        )

    prob_array = probs.numpy().astype(np.float64)
    y_true = np.asarray([truth[i] for i in kept], dtype=np.int64)
    metrics = _metrics(y_true, prob_array, class_names, ks, notes)
    predictions = pd.DataFrame(
        {
            "path": [str(paths[i]) for i in kept],
            "true": [class_names[i] for i in y_true],
            "predicted": [class_names[i] for i in prob_array.argmax(axis=1)],
            **{name: prob_array[:, j] for j, name in enumerate(class_names)},
        }
    )
    return EvaluationResult(
        class_names=class_names,
        predictions=predictions,
        skipped=pd.DataFrame(skipped, columns=["path", "reason"]),
        notes=notes,
        **metrics,
    )
