"""Few-shot linear probes on frozen embeddings: how accuracy grows with labelled examples."""

import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from mmkd_utils.errors import ProbeError

#: Defaults: shots per class ("all": the whole training set), seeds, C values searched.
DEFAULT_SHOTS, DEFAULT_SEEDS, DEFAULT_CS = (1, 2, 4, 8, 16, "all"), (0, 1, 2), np.logspace(-3, 3, 7)
#: C when cross-validation is impossible (scikit-learn's default); most folds; max_iter.
DEFAULT_C, DEFAULT_FOLDS, MAX_ITER = 1.0, 5, 1000
#: Every fit weighs the classes equally, so a class with more images (copies) cannot win by number.
FIT = {"max_iter": MAX_ITER, "class_weight": "balanced"}
#: Columns of :attr:`ProbeResult.table` and :attr:`ProbeResult.summary`.
TABLE_COLUMNS = ("shots", "seed", "n_train", "C", "cv_folds", "cv_accuracy", "accuracy")
SUMMARY_COLUMNS = ("shots", "mean_accuracy", "std", "runs")


@dataclass(eq=False, repr=False)
class ProbeResult:
    """``table`` (a row per run: :data:`TABLE_COLUMNS`), ``summary`` (per shot count: mean,
    population std over seeds, runs), sorted ``classes``, ``n_test``, ``notes``.

    Example:
        >>> ProbeResult(pd.DataFrame(), pd.DataFrame(columns=SUMMARY_COLUMNS), ("a", "b"), 4)
        ProbeResult(2 classes, 4 test embeddings: )
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    classes: tuple[Any, ...]
    n_test: int
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{'all' if r.shots == 'all' else f'{r.shots}-shot'} {r.mean_accuracy:.3f}"
            + (f" ± {r.std:.3f}" if r.runs > 1 else "")
            for r in self.summary.itertuples(index=False)
        )
        return f"ProbeResult({len(self.classes)} classes, {self.n_test} test embeddings: {parts})"


def _side(embeddings: Any, labels: Any, side: str) -> tuple[np.ndarray, np.ndarray]:
    """``[N, D]`` float64 embeddings and N labels (``.labels`` of an embed_folder result)."""
    name, values = f"{side}_embeddings", getattr(embeddings, "embeddings", embeddings)
    try:
        x = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ProbeError(f"{name} must be numbers, an [N, D] tensor or array ({err}).") from None
    if x.ndim != 2 or 0 in x.shape:
        raise ProbeError(f"{name} must be non-empty 2-D embeddings [N, D], not {x.shape}.")
    if (bad := np.flatnonzero(~np.isfinite(x).all(axis=1))).size:
        raise ProbeError(f"{name} has non-finite values in row {bad[0]}: re-compute or drop it.")
    labels = getattr(embeddings, "labels", None) if labels is None else labels
    if labels is None or isinstance(labels, str):
        what = "one string" if labels else "None (and the embeddings have no .labels)"
        raise ProbeError(f"{side}_labels must be a list with one label per embedding, not {what}.")
    y = pd.Series(list(getattr(labels, "tolist", lambda: labels)()), dtype=object).to_numpy()
    if len(y) != len(x):
        raise ProbeError(
            f"{side}_labels has {len(y)} entries but {name} has {len(x)} rows: pass one per row."
        )
    if missing := sum(v is None for v in y):
        raise ProbeError(f"{side}_labels has {missing} missing (None): drop those embeddings.")
    try:
        np.unique(y)
    except TypeError:
        kinds = ", ".join(sorted({type(v).__name__ for v in y}))
        raise ProbeError(f"{side}_labels mixes label types ({kinds}); use one type.") from None
    return x, y


def _whole(name: str, values: Any, least: int, hint: str, also: Any = None) -> list:
    """Distinct whole numbers >= ``least`` (or ``also``) from one value or a sequence."""
    given = values
    values = [values] if isinstance(values, str) or not np.iterable(values) else list(values)
    for v in values:
        if v != also and (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < least):
            raise ProbeError(f"{name}={given!r}: {hint}.")
    if not values:
        raise ProbeError(f"{name} is empty: {hint}.")
    return list(dict.fromkeys(v if v == also else int(v) for v in values))


def sample_shots(
    labels: Sequence[Any] | np.ndarray, k: int, seed: int, groups: Sequence[Any] | None = None
) -> np.ndarray:
    """Indices of ``k`` examples per class (all if fewer), class by class in sorted order, drawn
    without replacement by one ``numpy.random.default_rng(seed)``; with ``groups`` (the original
    of each row) the rows of ``k`` originals per class.

    Example:
        >>> sample_shots(["a", "a", "a", "b"], k=1, seed=0).tolist()
        [2, 3]
    """
    y, rng = np.asarray(labels, dtype=object), np.random.default_rng(seed)
    units = np.arange(len(y)) if groups is None else np.asarray(groups, dtype=object)
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        owners = pd.unique(units[members])
        chosen = owners[rng.choice(owners.size, size=min(int(k), owners.size), replace=False)]
        picked.append(chosen if groups is None else members[np.isin(units[members], chosen)])
    return np.concatenate(picked).astype(int)


def _fit(x, y, cs: list[float], cv: int, groups=None) -> tuple[Any, float, int, float]:
    """The probe, C, folds, CV accuracy: LogisticRegressionCV (it refits the best C) or fixed C."""
    owners = np.arange(len(y)) if groups is None else groups  # a group: copies of one original
    folds = min(cv, *(np.unique(owners[y == c]).size for c in np.unique(y))) if len(cs) > 1 else 0
    if folds < 2:
        c = cs[0] if len(cs) == 1 else DEFAULT_C
        return LogisticRegression(C=c, **FIT).fit(x, y), c, 0, np.nan
    splits = StratifiedKFold(folds) if groups is None else StratifiedGroupKFold(folds)
    clf = LogisticRegressionCV(
        Cs=cs, cv=list(splits.split(x, y, groups)), scoring="accuracy", **FIT
    ).fit(x, y)
    scores = clf.scores_  # {class: [folds, Cs]}; an array from scikit-learn 1.10 on
    cv_accuracy = (
        (next(iter(scores.values())) if isinstance(scores, dict) else scores).mean(0).max()
    )
    return clf, float(np.ravel(clf.C_)[0]), folds, float(cv_accuracy)


def linear_probe(
    train_embeddings: Any,
    train_labels: Sequence[Any] | None,
    test_embeddings: Any,
    test_labels: Sequence[Any] | None,
    shots: Sequence[int | str] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    *,
    Cs: Sequence[float] | None = None,  # noqa: N803 (scikit-learn's name)
    cv: int | None = None,
    groups: Sequence[Any] | None = None,
) -> ProbeResult:
    """Per shot count and seed: ``k`` examples per class (:func:`sample_shots`), a logistic
    regression with ``C`` chosen among ``Cs`` by ``LogisticRegressionCV`` (accuracy, ``min(cv=5,
    smallest class)`` stratified folds), scored on the test set. ``groups``: each training row's
    original (copies share one); then ``k`` counts originals and folds keep originals whole
    (``StratifiedGroupKFold``: no leakage). With 1 example (original) in a class no fold can be
    made: ``C`` is :data:`DEFAULT_C`, ``cv_folds`` 0, ``cv_accuracy`` NaN, and a note says so.

    Example:
        >>> y = np.repeat(["a", "b"], 20)
        >>> x = np.random.default_rng(0).normal(size=(40, 8)) + 4 * (y == "a")[:, None]
        >>> linear_probe(x[::2], y[::2], x[1::2], y[1::2], shots=(1, "all")).summary.runs.tolist()
        [3, 1]
    """
    x_train, y_train = _side(train_embeddings, train_labels, "train")
    x_test, y_test = _side(test_embeddings, test_labels, "test")
    if x_train.shape[1] != x_test.shape[1]:
        raise ProbeError(
            f"train_embeddings has {x_train.shape[1]}-d rows but test_embeddings has "
            f"{x_test.shape[1]}-d rows: embed both with the same model."
        )
    classes, y_train = np.unique(y_train, return_inverse=True)
    if classes.size < 2:
        raise ProbeError(f"train_labels has only class {classes[0]!r}; need at least 2 classes.")
    unseen = ", ".join(repr(c) for c in np.unique(y_test).tolist() if c not in classes.tolist())
    if unseen:
        raise ProbeError(f"test_labels has classes not in train_labels: {unseen}; drop them.")
    y_test = np.searchsorted(classes, y_test)
    units = np.arange(len(y_train)) if groups is None else np.asarray(groups, dtype=object)
    if len(units) != len(y_train):
        raise ProbeError(f"groups has {len(units)} entries for {len(y_train)} training rows.")
    per_unit = pd.Series(y_train).groupby(units).nunique()
    if (per_unit > 1).any():
        raise ProbeError(f"groups: original {str(per_unit.idxmax())!r} has rows of two classes.")
    counts = pd.Series(units).groupby(y_train).nunique().to_numpy()  # examples (originals)
    shot_list = _whole("shots", shots, 1, "pass whole numbers >= 1 or 'all'", also="all")
    seed_list = _whole("seeds", seeds, 0, "pass whole numbers >= 0, e.g. (0, 1, 2)")
    grid = np.atleast_1d(np.asarray(DEFAULT_CS if Cs is None else Cs, dtype=np.float64))
    if grid.ndim != 1 or not grid.size or not (np.isfinite(grid) & (grid > 0)).all():
        raise ProbeError(f"Cs={Cs!r}: pass positive finite C values, e.g. np.logspace(-3, 3, 7).")
    cs = sorted(set(grid.tolist()))
    folds = _whole("cv", DEFAULT_FOLDS if cv is None else cv, 2, "pass 2 or more, or None")[0]

    notes, rows, unconverged, every = [], [], 0, np.arange(len(y_train))
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # counted below, in a note
        warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
        for k in shot_list:
            if k != "all" and (counts < k).any():
                few = ", ".join(f"{classes[i]!r} ({counts[i]})" for i in np.flatnonzero(counts < k))
                what = "examples" if groups is None else "originals"
                why = f"have fewer than {k} training {what} and used all of them (see n_train)"
                notes.append(f"{k}-shot: class(es) {few} {why}.")
            for seed in [None] if k == "all" else seed_list:
                idx = every if k == "all" else sample_shots(y_train, k, seed, groups)
                g = None if groups is None else units[idx]
                clf, c, n_folds, cv_acc = _fit(x_train[idx], y_train[idx], cs, folds, g)
                unconverged += int(np.max(clf.n_iter_) >= MAX_ITER)
                accuracy = float(np.mean(clf.predict(x_test) == y_test))
                rows.append((k, seed, idx.size, c, n_folds, cv_acc, accuracy))
    if len(cs) > 1 and (defaulted := ", ".join(dict.fromkeys(str(r[0]) for r in rows if not r[4]))):
        why = "a class has 1 training example" if groups is None else "a class has 1 original"
        notes.append(
            f"For shots {defaulted} C is the default {DEFAULT_C}, not chosen by "
            f"cross-validation: {why}, too few for folds."
        )
    if unconverged:
        where = " (with cross-validation: a fit of some fold and C)" if len(cs) > 1 else ""
        notes.append(f"{unconverged} run(s) had a fit stop at max_iter={MAX_ITER}{where}.")
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS).astype({"shots": object, "seed": "Int64"})
    summary = table.groupby("shots", sort=False)["accuracy"]
    summary = summary.agg(mean_accuracy="mean", std=lambda a: a.std(ddof=0), runs="size")
    return ProbeResult(table, summary.reset_index(), tuple(classes.tolist()), len(x_test), notes)
