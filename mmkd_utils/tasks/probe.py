"""Few-shot linear probes on frozen embeddings: how accuracy grows with labelled examples.

:func:`linear_probe` trains a logistic-regression classifier on ``k`` labelled embeddings
per class (for several ``k`` and random draws) and measures its accuracy on a test set;
:func:`plot_probe_curve` draws the resulting curve next to the zero-shot accuracy, which
needs no labelled examples at all.

The recipe, for each shot count ``k`` and seed:

1. :func:`sample_shots` draws ``k`` training examples per class with
   ``numpy.random.default_rng(seed)`` (a class with fewer examples gives all of them);
   ``"all"`` uses the whole training set, once, whatever the seeds.
2. The inverse regularisation strength ``C`` is chosen from ``Cs`` by stratified
   cross-validation on those training examples only (``min(cv, smallest class count)``
   folds, accuracy, ties to the smallest ``C``). When some class has a single example,
   cross-validation is impossible and :data:`DEFAULT_C` is used; the table records the
   ``C`` of every run and its number of folds (0: not cross-validated).
3. ``LogisticRegression(C=C, max_iter=1000)`` is fitted on those examples and scored on
   the whole test set.

The fits run with one BLAS thread (``threadpoolctl``): for these small problems that is
several times faster than several threads, and makes the numbers independent of the
machine's core count.

The embeddings are used as given (float64), neither normalised nor standardised.
scikit-learn and pandas are imported when :func:`linear_probe` runs.

Introduced in ``notebooks/05_retrieval_and_linear_probe.ipynb``.

Example:
    >>> from mmkd_utils import linear_probe
    >>> result = linear_probe(train.embeddings, train.labels, test.embeddings, test.labels)
    ... # doctest: +SKIP
    >>> result.summary  # doctest: +SKIP
      shots  mean_accuracy       std  runs
    0     1       0.612000  0.050332     3
    ...
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mmkd_utils.errors import ProbeError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Default shot counts (training examples per class); "all" is the whole training set.
DEFAULT_SHOTS: tuple[int | str, ...] = (1, 2, 4, 8, 16, "all")
#: Default seeds: each draws its own k examples per class.
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
#: Default grid of C values searched by cross-validation (0.001 ... 1000).
DEFAULT_CS = np.logspace(-3, 3, 7)
#: C used when cross-validation is impossible (some class has one training example):
#: scikit-learn's own default.
DEFAULT_C = 1.0
#: Most cross-validation folds used when ``cv`` is not given.
DEFAULT_FOLDS = 5
#: ``max_iter`` of every ``LogisticRegression``.
MAX_ITER = 1000
#: Columns of :attr:`ProbeResult.table` and :attr:`ProbeResult.summary`.
TABLE_COLUMNS = ("shots", "seed", "n_train", "C", "cv_folds", "accuracy")
SUMMARY_COLUMNS = ("shots", "mean_accuracy", "std", "runs")

__all__ = [
    "DEFAULT_C",
    "DEFAULT_CS",
    "DEFAULT_SEEDS",
    "DEFAULT_SHOTS",
    "ProbeError",
    "ProbeResult",
    "linear_probe",
    "plot_probe_curve",
    "sample_shots",
]


@dataclass(eq=False, repr=False)
class ProbeResult:
    """Accuracies of :func:`linear_probe`, per run and per shot count.

    Attributes:
        table: One row per run: ``shots`` (an int, or "all"), ``seed`` (<NA> for
            "all"), ``n_train`` (examples actually used; fewer than shots × classes when
            a class has fewer examples), ``C`` (the regularisation used), ``cv_folds``
            (folds that chose it; 0 when :data:`DEFAULT_C` or a single given C was used)
            and ``accuracy`` on the test set.
        summary: One row per shot count, in the order asked: ``shots``,
            ``mean_accuracy``, ``std`` (population standard deviation over the seeds,
            0 for a single run) and ``runs``.
        classes: The class labels, sorted; the probe's classes.
        n_test: Number of test embeddings.
        notes: Remarks, e.g. classes with fewer examples than the shot count.

    Example:
        >>> result.summary.set_index("shots").loc["all", "mean_accuracy"]  # doctest: +SKIP
        0.934
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    classes: tuple[Any, ...]
    n_test: int
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        parts = []
        for row in self.summary.itertuples(index=False):
            name = "all" if row.shots == "all" else f"{row.shots}-shot"
            spread = f" ± {row.std:.3f}" if row.runs > 1 else ""
            parts.append(f"{name} {row.mean_accuracy:.3f}{spread}")
        return (
            f"ProbeResult({len(self.classes)} classes, {self.n_test} test embeddings: "
            + ", ".join(parts)
            + ")"
        )


# --------------------------------------------------------------------------- validation


def _as_embeddings(values: Any, name: str) -> np.ndarray:
    """Embeddings as a float64 array [N, D]; a FolderEmbeddings-like object gives its own."""
    if hasattr(values, "embeddings") and hasattr(values, "paths"):
        values = values.embeddings
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch tensor
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ProbeError(f"{name} must be numbers, an [N, D] tensor or array ({err}).") from None
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ProbeError(f"{name} must be non-empty 2-D embeddings [N, D], not {array.shape}.")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ProbeError(
            f"{name} has non-finite values (NaN or inf) in {int(bad.sum())} row(s), the "
            f"first being row {int(np.flatnonzero(bad)[0])}; re-compute or drop those rows."
        )
    return array


def _as_labels(labels: Any, embeddings: Any, n_rows: int, name: str) -> np.ndarray:
    """Labels as a 1-D object array with one entry per row."""
    if labels is None:
        labels = getattr(embeddings, "labels", None)
        if labels is None:
            raise ProbeError(
                f"{name} is None: pass one label per embedding (or an embed_folder result "
                "that has labels)."
            )
    if isinstance(labels, str):
        raise ProbeError(f"{name} must be a list with one label per embedding, not one string.")
    if hasattr(labels, "detach") and hasattr(labels, "cpu"):
        labels = labels.detach().cpu().numpy()
    items = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
    if len(items) != n_rows:
        embeddings_name = name.replace("labels", "embeddings")
        raise ProbeError(
            f"{name} has {len(items)} entries but {embeddings_name} has {n_rows} rows; "
            "pass one label per embedding, in the same order."
        )
    missing = [i for i, item in enumerate(items) if item is None]
    if missing:
        raise ProbeError(
            f"{name} has {len(missing)} missing label(s) (None), the first at position "
            f"{missing[0]}; drop the unlabelled embeddings first."
        )
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _classes(labels: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.unique(labels)
    except TypeError:
        kinds = sorted({type(item).__name__ for item in labels})
        raise ProbeError(
            f"{name} mixes label types ({', '.join(kinds)}); use one type, e.g. strings."
        ) from None


def _check_shots(shots: Any) -> list[int | str]:
    values = [shots] if isinstance(shots, (str, numbers.Integral)) else list(shots)
    out: list[int | str] = []
    for value in values:
        ok = value == "all" or (
            isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
        )
        if not ok:
            raise ProbeError(
                f"shots={shots!r}: each entry must be a positive whole number of examples "
                "per class or 'all', e.g. (1, 2, 4, 8, 16, 'all')."
            )
        value = value if value == "all" else int(value)
        if value not in out:
            out.append(value)
    if not out:
        raise ProbeError("shots is empty: pass e.g. (1, 2, 4, 8, 16, 'all').")
    return out


def _check_seeds(seeds: Any) -> list[int]:
    values = [seeds] if isinstance(seeds, numbers.Integral) else list(seeds)
    if not values:
        raise ProbeError("seeds is empty: pass at least one seed, e.g. (0, 1, 2).")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ProbeError(f"seeds={seeds!r}: each seed must be a non-negative whole number.")
    return list(dict.fromkeys(int(v) for v in values))


def _check_cs(cs: Any) -> list[float]:
    values = np.atleast_1d(np.asarray(DEFAULT_CS if cs is None else cs, dtype=np.float64))
    if values.ndim != 1 or values.size == 0 or not (np.isfinite(values) & (values > 0)).all():
        raise ProbeError(f"Cs={cs!r}: pass positive finite C values, e.g. np.logspace(-3, 3, 7).")
    return sorted({float(v) for v in values})


def _check_cv(cv: Any) -> int:
    if cv is None:
        return DEFAULT_FOLDS
    if isinstance(cv, bool) or not isinstance(cv, numbers.Integral) or cv < 2:
        raise ProbeError(f"cv={cv!r}: pass the largest number of folds (2 or more), or None.")
    return int(cv)


# --------------------------------------------------------------------------- the probe


def sample_shots(labels: Sequence[Any] | np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of ``k`` examples per class, drawn with ``numpy.random.default_rng(seed)``.

    Classes are taken in sorted order; for each, ``rng.choice(its indices, min(k, count),
    replace=False)`` with one generator shared by all classes. The indices are returned
    class by class in the order drawn, so the same labels, ``k`` and ``seed`` always give
    the same training set. A class with fewer than ``k`` examples gives all of them.

    Example:
        >>> sample_shots(["a", "b", "a", "b", "a"], k=1, seed=0).tolist()
        [4, 3]
    """
    y = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    parts = []
    for cls in _classes(y, "labels"):
        members = np.flatnonzero(y == cls)
        parts.append(rng.choice(members, size=min(int(k), members.size), replace=False))
    return np.concatenate(parts)


def _choose_c(x: np.ndarray, y: np.ndarray, cs: list[float], max_folds: int) -> tuple[float, int]:
    """The C of ``cs`` with the best cross-validated accuracy, and the number of folds."""
    if len(cs) == 1:
        return cs[0], 0
    folds = min(max_folds, int(np.bincount(y).min()))
    if folds < 2:
        return DEFAULT_C, 0
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    grid = GridSearchCV(
        LogisticRegression(max_iter=MAX_ITER),
        {"C": cs},
        scoring="accuracy",
        cv=StratifiedKFold(n_splits=folds),
        refit=False,
        error_score="raise",
    )
    grid.fit(x, y)
    return float(grid.best_params_["C"]), folds  # first best = smallest C (cs ascending)


def _fit_and_score(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, c: float
) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=MAX_ITER).fit(x_train, y_train)
    return float(np.mean(clf.predict(x_test) == y_test))


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
) -> ProbeResult:
    """Few-shot logistic-regression probes on frozen embeddings, scored on a test set.

    See the module docstring for the exact recipe (sampling, choice of C, fit).

    Args:
        train_embeddings, test_embeddings: Embeddings [N, D] (tensor, array, or an
            ``embed_folder`` result), the same D on both sides.
        train_labels, test_labels: One label per embedding (strings or ints); None takes
            the ``.labels`` of an ``embed_folder`` result. Every test class must occur in
            training.
        shots: Examples per class to train on; ``"all"`` is the whole training set. A
            class with fewer examples than asked uses all it has (``n_train`` says how
            many were used, and a note names the class).
        seeds: One run per seed and shot count (``"all"`` runs once).
        Cs: C values to choose from (default ``np.logspace(-3, 3, 7)``); a single value
            is used as it is, without cross-validation.
        cv: Most folds for choosing C (default 5); fewer when a class has fewer examples.

    Returns:
        A :class:`ProbeResult` with a row per run and a summary per shot count.

    Raises:
        ProbeError: labels and embeddings of different lengths, fewer than 2 training
            classes, test labels unseen in training, non-finite embeddings, different
            embedding sizes, or invalid shots/seeds/Cs/cv (each message names the argument).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat(["a", "b"], 20)
        >>> x = rng.normal(size=(40, 8)) + 4 * (y == "a")[:, None]
        >>> result = linear_probe(x[::2], y[::2], x[1::2], y[1::2], shots=(1, "all"))
        >>> result.summary["mean_accuracy"].tolist()
        [1.0, 1.0]
    """
    import pandas as pd
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    x_train = _as_embeddings(train_embeddings, "train_embeddings")
    x_test = _as_embeddings(test_embeddings, "test_embeddings")
    if x_train.shape[1] != x_test.shape[1]:
        raise ProbeError(
            f"train_embeddings has {x_train.shape[1]}-d rows but test_embeddings has "
            f"{x_test.shape[1]}-d rows: embed both with the same model."
        )
    train_y = _as_labels(train_labels, train_embeddings, x_train.shape[0], "train_labels")
    test_y = _as_labels(test_labels, test_embeddings, x_test.shape[0], "test_labels")
    classes = _classes(train_y, "train_labels")
    if classes.size < 2:
        raise ProbeError(
            f"train_labels has only {classes.size} class ({classes[0]!r}); a probe needs at "
            "least 2 classes."
        )
    test_classes = _classes(test_y, "test_labels")
    known = set(classes.tolist())
    unseen = [c for c in test_classes.tolist() if c not in known]
    if unseen:
        raise ProbeError(
            f"test_labels has classes that are not in train_labels: "
            f"{', '.join(repr(c) for c in unseen[:10])}. The training classes are "
            f"{', '.join(repr(c) for c in classes)}; drop or relabel those test embeddings."
        )
    shot_list, seed_list = _check_shots(shots), _check_seeds(seeds)
    cs, max_folds = _check_cs(Cs), _check_cv(cv)

    class_index = {c: i for i, c in enumerate(classes.tolist())}
    y_train = np.array([class_index[c] for c in train_y], dtype=np.int64)
    y_test = np.array([class_index[c] for c in test_y], dtype=np.int64)
    counts = np.bincount(y_train, minlength=classes.size)

    notes: list[str] = []
    for k in (s for s in shot_list if s != "all"):
        short = [f"{classes[i]!r} ({counts[i]})" for i in np.flatnonzero(counts < k)]
        if short:
            notes.append(
                f"{k}-shot: class(es) {', '.join(short)} have fewer than {k} training "
                "examples and used all of them (see n_train)."
            )

    rows = []
    unconverged = 0
    # One BLAS thread: these small fits run several times faster (threads only contend),
    # and the results do not depend on the machine's core count.
    with (
        threadpool_limits(limits=1, user_api="blas"),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", ConvergenceWarning)
        for k in shot_list:
            for seed in [None] if k == "all" else seed_list:
                idx = np.arange(y_train.size) if k == "all" else sample_shots(y_train, k, seed)
                x_k, y_k = x_train[idx], y_train[idx]
                c, folds = _choose_c(x_k, y_k, cs, max_folds)
                accuracy = _fit_and_score(x_k, y_k, x_test, y_test, c)
                rows.append((k, seed, idx.size, c, folds, accuracy))
    for item in caught:
        if issubclass(item.category, ConvergenceWarning):
            unconverged += 1
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    defaulted = list(dict.fromkeys(row[0] for row in rows if row[4] == 0))
    if len(cs) > 1 and defaulted:
        notes.append(
            f"C could not be cross-validated for shots {', '.join(map(str, defaulted))} "
            f"(a class with a single training example); those runs used the default "
            f"C = {DEFAULT_C} (cv_folds 0)."
        )
    if unconverged:
        notes.append(
            f"{unconverged} logistic-regression fit(s) stopped at max_iter={MAX_ITER} before "
            "converging (common with large C on separable data); the accuracies still count."
        )

    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table["shots"] = table["shots"].astype(object)
    table["seed"] = table["seed"].astype("Int64")
    summary_rows = []
    for k in shot_list:
        acc = table.loc[table["shots"] == k, "accuracy"].to_numpy()
        summary_rows.append((k, float(acc.mean()), float(acc.std()), int(acc.size)))
    summary = pd.DataFrame(summary_rows, columns=list(SUMMARY_COLUMNS))
    summary["shots"] = summary["shots"].astype(object)
    return ProbeResult(
        table=table,
        summary=summary,
        classes=tuple(classes.tolist()),
        n_test=int(x_test.shape[0]),
        notes=notes,
    )


# --------------------------------------------------------------------------- the plot


def _shot_positions(shots: Sequence[int | str]) -> list[float]:
    """x positions: the shot counts, and "all" one doubling after the largest of them."""
    numbers_only = [s for s in shots if s != "all"]
    last = 2.0 ** (math.floor(math.log2(max(numbers_only))) + 1) if numbers_only else 1.0
    return [last if s == "all" else float(s) for s in shots]


def _zero_shot_value(value: Any) -> float | None:
    if value is None:
        return None
    value = getattr(value, "accuracy", value)  # an EvaluationResult gives its accuracy
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ProbeError(
            f"zero_shot_accuracy={value!r}: pass an accuracy between 0 and 1 (or an "
            "EvaluationResult of the same classes)."
        )
    return float(value)


def plot_probe_curve(
    result: ProbeResult,
    zero_shot_accuracy: float | Any | None = None,
    *,
    ax: Axes | None = None,
) -> Figure:
    """Plot linear-probe accuracy (mean ± std over seeds) against shots per class.

    The x axis is log-2 (1, 2, 4, ...) with "all" one step after the largest shot
    count. ``zero_shot_accuracy`` (a number, or an ``EvaluationResult`` of the same
    classes and test images) adds a horizontal dashed line: what the model reaches
    with no labelled example. Re-exported from :mod:`mmkd_utils.plotting`; as every
    plot there, it builds the figure without pyplot (nothing is left open) and the
    figure shows itself in Jupyter.

    Args:
        result: What :func:`linear_probe` returned.
        zero_shot_accuracy: Optional accuracy in [0, 1] to draw as a dashed line.
        ax: Draw into this Axes and return its figure; by default a new figure is made.

    Returns:
        The figure: one error-bar point per shot count (line labelled "linear probe")
        and, if given, the dashed zero-shot line.

    Example:
        >>> fig = plot_probe_curve(result, zero_shot_accuracy=0.71)  # doctest: +SKIP
        >>> fig.savefig("probe.png")  # doctest: +SKIP
    """
    summary = result.summary
    zero_shot = _zero_shot_value(zero_shot_accuracy)
    shots = list(summary["shots"])
    xs = _shot_positions(shots)
    if ax is None:
        from mmkd_utils.plotting import _NotebookFigure

        fig: Figure = _NotebookFigure(figsize=(6.0, 4.0), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.errorbar(
        xs,
        summary["mean_accuracy"].to_numpy(),
        yerr=summary["std"].to_numpy(),
        marker="o",
        capsize=3,
        color="#3b75af",
        label="linear probe (mean ± std over seeds)",
    )
    if zero_shot is not None:
        ax.axhline(zero_shot, linestyle="--", color="#c44e52", label=f"zero-shot ({zero_shot:.3f})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(s) for s in shots])
    ax.minorticks_off()
    ax.set_xlabel("training examples per class (shots)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"Linear probe, {len(result.classes)} classes")
    return fig
