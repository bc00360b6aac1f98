"""Classification metrics as ``medmnist.Evaluator`` defines them, and stratified-bootstrap
95% intervals. Every metric is a function of per-image weights: 1 each for the point
estimate; for a bootstrap resample, how often the resample drew each image.

``task`` (MedMNIST's names): ``"multi-class"`` and ``"ordinal-regression"`` (argmax; AUC =
mean one-vs-rest AUC), ``"binary-class"`` (the last column's probability > 0.5), and
``"multi-label, binary-class"`` (each label's probability > 0.5; every metric averaged over
labels). ``balanced_acc`` is the mean recall of the classes present; ``macro_f1``,
``precision`` and ``recall`` average over all classes (0 where undefined, as scikit-learn's
``zero_division=0``); for multi-label they are the positive class's, averaged over labels.
"""

import numbers
from typing import Any

import numpy as np

from mmkd_utils.errors import ArgumentError

TASKS = ("multi-class", "binary-class", "multi-label, binary-class", "ordinal-regression")
METRICS = ("acc", "auc", "balanced_acc", "macro_f1", "precision", "recall")
MULTI_LABEL = "multi-label, binary-class"


def check_inputs(labels, scores, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int [N] (or [N, L] for multi-label) and scores as float [N, C], checked.

    Example:
        >>> check_inputs([[0], [1]], [[0.8, 0.2], [0.3, 0.7]], "binary-class")[0]
        array([0, 1])
    """
    if task not in TASKS:
        raise ArgumentError(f"task={task!r}: use one of {', '.join(map(repr, TASKS))}.")
    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    y = y.reshape(len(y), -1) if task == MULTI_LABEL else y.reshape(-1)
    s = s.reshape(len(s), -1)
    n, c = s.shape
    top = {MULTI_LABEL: 1, "binary-class": 1}.get(task, c - 1)  # the largest label allowed
    wide = y.shape[1] != c if task == MULTI_LABEL else False
    whole = y.size > 0 and np.issubdtype(y.dtype, np.number) and (y == np.round(y)).all()
    if len(y) != n or n == 0 or not whole or wide or y.min() < 0 or y.max() > top:
        raise ArgumentError(
            f"labels {y.shape} and scores {s.shape} do not fit a {task!r} task: pass one score "
            f"row per image and labels that are whole numbers 0..{top} "
            + ("(one column per label, as many as score columns)." if task == MULTI_LABEL else ".")
        )
    if not np.isfinite(s).all():
        raise ArgumentError("scores hold NaN or infinite values: pass finite probabilities.")
    return y.astype(int), s


def _auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted ROC AUC per row of ``weights`` (ties count half, as ``roc_auc_score``)."""
    order = np.argsort(score, kind="stable")
    positive, score, weights = positive[order], score[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, score[1:] != score[:-1]])  # groups of tied scores
    pos = np.add.reduceat(weights * positive, starts, axis=1)
    neg = np.add.reduceat(weights * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / pairs, np.nan)


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / bottom, 0.0)


def _counts(y: np.ndarray, pred: np.ndarray, n_classes: int, weights: np.ndarray):
    """Weighted true positives, support and predicted count per class: [B, C] each."""
    truth, chosen = np.eye(n_classes)[y], np.eye(n_classes)[pred]
    return weights @ (truth * chosen), weights @ truth, weights @ chosen


def _rates(tp, support, predicted, auc, classes=slice(None)) -> dict[str, np.ndarray]:
    """Every metric from the counts per class; F1, precision and recall over ``classes``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        balanced = np.nanmean(np.where(support > 0, tp / support, np.nan), axis=1)
    out = dict(acc=tp.sum(axis=1) / support.sum(axis=1), auc=auc, balanced_acc=balanced)
    out["macro_f1"] = _ratio(2 * tp, support + predicted)[:, classes].mean(axis=1)
    out["precision"] = _ratio(tp, predicted)[:, classes].mean(axis=1)
    out["recall"] = _ratio(tp, support)[:, classes].mean(axis=1)
    return out


def weighted_metrics(labels, scores, task: str, weights) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` for each row of ``weights`` [B, N]: {name: [B]}.

    Example:
        >>> y, s = [0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]]
        >>> weighted_metrics(y, s, "binary-class", [[1, 1, 1], [2, 1, 0]])["acc"]
        array([0.66666667, 1.        ])
    """
    y, s = check_inputs(labels, scores, task)
    w = np.asarray(weights, dtype=float).reshape(-1, len(y))
    if task == MULTI_LABEL:  # each label a binary problem at 0.5 (its positive class's F1...)
        per = [
            _rates(
                *_counts(y[:, j], (s[:, j] > 0.5).astype(int), 2, w),
                _auc(y[:, j] == 1, s[:, j], w),
                [1],
            )
            for j in range(y.shape[1])
        ]
        return {m: np.mean([p[m] for p in per], axis=0) for m in METRICS}
    if task == "binary-class":
        pred, aucs, n_classes = (s[:, -1] > 0.5).astype(int), [_auc(y == 1, s[:, -1], w)], 2
    else:
        pred, n_classes = s.argmax(axis=1), s.shape[1]
        aucs = [_auc(y == c, s[:, c], w) for c in range(n_classes)]
    return _rates(*_counts(y, pred, n_classes, w), np.mean(aucs, axis=0))


def classification_metrics(
    labels, scores, task: str = "multi-class", weights=None
) -> dict[str, float]:
    """The metrics of :data:`METRICS` (ACC and AUC as ``medmnist.Evaluator``); NaN if undefined.
    ``weights``: how many images each one stands for (:func:`sampling_weights`); default 1.

    Example:
        >>> m = classification_metrics([0, 1, 2, 1], np.eye(3)[[0, 1, 2, 2]])
        >>> m["acc"], m["balanced_acc"]
        (0.75, 0.8333333333333334)
    """
    w = np.ones(len(np.asarray(labels))) if weights is None else np.asarray(weights, float)
    return {
        name: float(value[0])
        for name, value in weighted_metrics(labels, scores, task, w[None]).items()
    }


def strata(labels, task: str) -> np.ndarray:
    """The group of each image for stratified sampling: its class; for multi-label, its first
    positive label (0 = none, else label + 1).

    Example:
        >>> strata([[0, 0], [0, 1], [1, 1]], "multi-label, binary-class")
        array([0, 2, 1])
    """
    y = np.asarray(labels)
    if task != MULTI_LABEL:
        return y.reshape(-1).astype(int)
    y = y.reshape(len(y), -1)
    return np.where(y.any(axis=1), y.argmax(axis=1) + 1, 0)


def check_resampling(n_resamples: Any = 1000, seed: Any = 0) -> None:
    """Refuse ``n_resamples`` below 10 and a ``seed`` that is not a whole number ≥ 0.

    Example:
        >>> check_resampling(1000, seed=-1)
        Traceback (most recent call last):
        ...
        mmkd_utils.errors.ArgumentError: seed=-1: pass a whole number ≥ 0, e.g. 0.
    """
    if type(n_resamples) is not int or n_resamples < 10:
        raise ArgumentError(f"n_resamples={n_resamples!r}: pass a whole number ≥ 10, e.g. 1000.")
    whole = isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0
    if not (whole or isinstance(seed, np.random.SeedSequence)):
        raise ArgumentError(f"seed={seed!r}: pass a whole number ≥ 0, e.g. 0.")


def stratified_sample(groups, per_group: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``per_group`` images of every group, drawn without replacement.

    Example:
        >>> stratified_sample([0, 0, 0, 1, 1, 2], 2).tolist()
        [1, 2, 3, 4, 5]
    """
    g = np.asarray(groups).reshape(-1)
    check_resampling(seed=seed)
    if per_group is None:
        return np.arange(len(g))
    if type(per_group) is not int or per_group < 1:
        raise ArgumentError(f"max_per_class={per_group!r}: pass a whole number ≥ 1, or None.")
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(idx, size=min(per_group, len(idx)), replace=False)
        for idx in (np.flatnonzero(g == k) for k in np.unique(g))
    ]
    return np.sort(np.concatenate(picked))


def sampling_weights(groups, indices) -> np.ndarray:
    """How many images of its group each sampled image stands for: N_group / n_group. With
    them, metrics of a stratified sample estimate those of the whole set, class mix included.

    Example:
        >>> sampling_weights([0, 0, 0, 0, 1, 1], [0, 1, 4, 5]).tolist()
        [2.0, 2.0, 1.0, 1.0]
    """
    g = np.asarray(groups).reshape(-1)
    picked = g[np.asarray(indices, dtype=int)]
    _, inverse, sampled = np.unique(picked, return_inverse=True, return_counts=True)
    return np.array([(g == k).sum() for k in picked], float) / sampled[inverse]


def bootstrap_ci(
    labels,
    scores,
    task: str = "multi-class",
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int | np.random.SeedSequence = 0,
    weights=None,
    versus=None,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of every metric over stratified bootstrap resamples (each group of
    :func:`strata` keeps its size; ``weights`` as in :func:`classification_metrics`). A
    metric undefined in a resample (an AUC without positives) is left out of it; if that
    happens in more than 1% of the resamples, its interval is (NaN, NaN). ``versus``: another
    model's scores of the same images; the intervals are then of the difference
    metric(scores) − metric(versus) on the same resamples (a paired bootstrap).

    Example:
        >>> y = [0] * 20 + [1] * 20
        >>> low, high = bootstrap_ci(y, np.eye(2)[y] * 0.8 + 0.1)["acc"]
        >>> low, high
        (1.0, 1.0)
        >>> bootstrap_ci(y, np.eye(2)[y] * 0.8 + 0.1, versus=np.full((40, 2), 0.5))["auc"]
        (0.5, 0.5)
    """
    check_resampling(n_resamples, seed)
    if not 0 < level < 1:
        raise ArgumentError(f"level={level!r}: pass a fraction between 0 and 1, e.g. 0.95.")
    y, s = check_inputs(labels, scores, task)
    groups, rng = strata(y, task), np.random.default_rng(seed)
    base = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    other = None if versus is None else check_inputs(y, versus, task)[1]
    found: dict[str, list] = {m: [] for m in METRICS}
    for start in range(0, n_resamples, 100):  # bounded memory: 100 resamples × N at a time
        weights = np.zeros((min(100, n_resamples - start), len(y)))
        for k in np.unique(groups):
            idx = np.flatnonzero(groups == k)
            weights[:, idx] = rng.multinomial(
                len(idx), np.full(len(idx), 1 / len(idx)), len(weights)
            )
        values = weighted_metrics(y, s, task, weights * base)
        minus = {} if other is None else weighted_metrics(y, other, task, weights * base)
        for name, v in values.items():
            found[name].append(v - minus.get(name, 0.0))
    tails = [50 * (1 - level), 50 * (1 + level)]
    out = {}
    for name, chunks in found.items():
        values = np.concatenate(chunks)
        values = values[np.isfinite(values)]
        defined = len(values) >= 0.99 * n_resamples
        low, high = np.percentile(values, tails) if defined else (np.nan, np.nan)
        out[name] = (float(low), float(high))
    return out
