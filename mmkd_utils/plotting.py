"""Plots of zero-shot predictions: probability bars and image-plus-bars grids.

Both functions are introduced in ``notebooks/01_quickstart.ipynb``.

The figures are built with :class:`matplotlib.figure.Figure` directly, never through
``matplotlib.pyplot``: importing or calling this module does not pick a backend, does not
open pyplot windows and leaves no figures registered in pyplot. The returned figure shows
in Jupyter when it is the last value of a cell (it renders itself as PNG); elsewhere, save
it with ``fig.savefig("out.png")``.

Example:
    >>> from mmkd_utils.plotting import plot_probability_bars
    >>> fig = plot_probability_bars([0.7, 0.2, 0.1], ["chest X-ray", "brain MRI", "skin"])
    >>> len(fig.axes)
    1
"""

from __future__ import annotations

import io
import numbers
import os
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from mmkd_utils.errors import ImageLoadError, MissingDependencyError, PromptError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Labels longer than this many characters are wrapped onto several lines.
LABEL_WRAP_WIDTH = 40
#: Probabilities may exceed [0, 1] by this much (float32 rounding after softmax).
_PROB_TOLERANCE = 1e-4
_BAR_COLOR = "#3b75af"

__all__ = ["LABEL_WRAP_WIDTH", "plot_predictions", "plot_probability_bars"]


class _NotebookFigure(Figure):
    """A :class:`Figure` that Jupyter can display even if pyplot was never imported."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


# --------------------------------------------------------------------------- validation


def _as_float_array(
    values: Any, name: str, what: str = "a list, numpy array or torch tensor of probabilities"
) -> np.ndarray:
    """Turn a list, numpy array or torch tensor into a float64 numpy array."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch tensor, without torch
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers ({what}); could not convert it: {exc}") from exc
    return array


def _check_prob_values(array: np.ndarray, name: str) -> None:
    """Raise unless every value is finite and between 0 and 1."""
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = first[0] if len(first) == 1 else first
        raise ValueError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf), the first at "
            f"index {where}; pass finite probabilities, e.g. from logits.softmax(dim=-1)."
        )
    low, high = float(array.min()), float(array.max())
    if low < -_PROB_TOLERANCE or high > 1 + _PROB_TOLERANCE:
        raise ValueError(
            f"{name} must hold probabilities between 0 and 1, but its values range from "
            f"{low:.4g} to {high:.4g}; if these are logits or similarities, apply softmax "
            f"first, e.g. logits.softmax(dim=-1)."
        )


def _check_probs_1d(probs: Any) -> np.ndarray:
    array = _as_float_array(probs, "probs")
    if array.ndim == 2:
        raise ValueError(
            f"probs must be 1-D (one image's probabilities) but has shape {array.shape}; "
            f"pass one row, e.g. probs[0], or use plot_predictions for several images."
        )
    if array.ndim != 1:
        raise ValueError(
            f"probs must be 1-D (one probability per label) but has shape {array.shape}; "
            f"pass a list, 1-D numpy array or 1-D tensor."
        )
    if array.size == 0:
        raise ValueError("probs is empty; pass at least one probability (one per label).")
    _check_prob_values(array, "probs")
    return array


def _check_labels(labels: Any, expected: int, what: str) -> list[str]:
    """Return ``labels`` as a list of str with ``expected`` entries, or raise PromptError."""
    if isinstance(labels, str):
        raise PromptError(
            f"labels must be a list of strings, not one string ({labels[:40]!r}); "
            f"wrap it in a list: [{labels[:40]!r}]."
        )
    try:
        items = list(labels)
    except TypeError as exc:
        raise PromptError(
            f"labels must be a list of strings, got {type(labels).__name__}; "
            f"pass e.g. ['a chest X-ray', 'a brain MRI']."
        ) from exc
    if not items:
        raise PromptError("labels is empty; pass one label per probability.")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise PromptError(
                f"labels[{i}] is a {type(item).__name__} ({item!r}), not a string; "
                f"pass text labels, e.g. str(label)."
            )
        if not item.strip():
            raise PromptError(f"labels[{i}] is blank; give every label some text.")
    if len(items) != expected:
        raise PromptError(
            f"labels has {len(items)} entries but {what} has {expected}; pass exactly one "
            f"label per probability, in the same order as the prompts."
        )
    return items


def _check_top_k(top_k: Any, n: int) -> int:
    """Return how many bars to draw: ``top_k`` clipped to ``n``; None means ``n``."""
    if top_k is None:
        return n
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
        raise ValueError(
            f"top_k must be a positive whole number such as 5, or None to show every "
            f"label; got {top_k!r} ({type(top_k).__name__})."
        )
    if top_k <= 0:
        raise ValueError(
            f"top_k must be at least 1, got {int(top_k)}; pass e.g. top_k=5, or "
            f"top_k=None to show every label."
        )
    return min(int(top_k), n)


def _top_order(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values, largest first; ties keep the input order."""
    return np.argsort(-probs, kind="stable")[:k]


def _wrap(label: str) -> str:
    return textwrap.fill(label, width=LABEL_WRAP_WIDTH, break_long_words=True) or label


def _line_count(labels: Sequence[str]) -> int:
    return sum(_wrap(label).count("\n") + 1 for label in labels)


def _image_array(image: Any, index: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Return ``(array, imshow_kwargs)`` for a file path, PIL image, numpy array or tensor.

    Paths (any format :func:`mmkd_utils.images.decode.to_rgb` reads) are loaded as RGB.

    Gray images get ``cmap="gray"`` and, for uint8 / bool / [0, 1] float data, a fixed
    value range, so a dark image stays dark instead of being stretched to full contrast.
    """
    if isinstance(image, (str, os.PathLike)):
        from mmkd_utils.images.decode import to_rgb

        image = to_rgb(image)
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL image, without PIL
        mode = image.mode
        if mode == "1":
            image = image.convert("L")
        elif mode not in ("L", "I", "I;16", "F", "RGB", "RGBA"):
            has_alpha = "A" in mode or "transparency" in getattr(image, "info", {})
            image = image.convert("RGBA" if has_alpha else "RGB")
    elif hasattr(image, "detach") and hasattr(image, "cpu"):  # torch tensor
        image = image.detach().cpu().numpy()
    try:
        array = np.asarray(image)
    except Exception as exc:  # any conversion failure means "not an image"
        raise ImageLoadError(
            f"images[{index}] could not be turned into an array ({exc}); pass a PIL image "
            f"or an H x W (gray) or H x W x 3 (RGB) numpy array."
        ) from exc
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ImageLoadError(
            f"images[{index}] is a {type(image).__name__} that does not hold pixel numbers; "
            f"pass a PIL image or an H x W or H x W x 3 numpy array."
        )
    if array.size == 0:
        raise ImageLoadError(
            f"images[{index}] is empty (shape {array.shape}); pass an image with pixels."
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        kwargs: dict[str, Any] = {"cmap": "gray"}
        if array.dtype == np.uint8:
            kwargs.update(vmin=0, vmax=255)
        elif array.dtype == bool or (array.size and 0.0 <= array.min() and array.max() <= 1.0):
            kwargs.update(vmin=0.0, vmax=1.0)
        return array, kwargs
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return array, {}
    hint = ""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4):
        hint = " It looks channels-first: use tensor.permute(1, 2, 0) or array.transpose(1, 2, 0)."
    raise ImageLoadError(
        f"images[{index}] has shape {array.shape}; pass a PIL image or an H x W (gray), "
        f"H x W x 3 (RGB) or H x W x 4 (RGBA) array.{hint}"
    )


# --------------------------------------------------------------------------- plotting


def _draw_bars(ax: Axes, probs: np.ndarray, labels: list[str], k: int) -> None:
    """Draw the ``k`` largest probabilities as horizontal bars, largest at the top."""
    order = _top_order(probs, k)
    values = np.clip(probs[order], 0.0, 1.0)
    ys = np.arange(k)[::-1]  # first (largest) bar gets the highest y position
    ax.barh(ys, values, height=0.7, color=_BAR_COLOR)
    for y, value in zip(ys, values, strict=True):
        text = f"{value:.3f}"
        if value > 0.82:  # no room on the right: write inside the bar
            ax.text(
                value - 0.01,
                y,
                text,
                ha="right",
                va="center",
                color="white",
                fontsize=9,
                fontweight="bold",
            )
        else:
            ax.text(value + 0.01, y, text, ha="left", va="center", color="black", fontsize=9)
    ax.set_yticks(ys)
    ax.set_yticklabels([_wrap(labels[i]) for i in order], fontsize=9)
    ax.set_ylim(-0.6, k - 0.4)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("probability")
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)


def plot_probability_bars(
    probs: Sequence[float] | np.ndarray | Any,
    labels: Sequence[str],
    top_k: int | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Plot one image's label probabilities as sorted horizontal bars.

    The largest probability is at the top, each bar carries its value with three
    decimals (e.g. ``0.873``), the x axis runs from 0 to 1, and labels longer than
    :data:`LABEL_WRAP_WIDTH` characters are wrapped onto several lines.

    Args:
        probs: One probability per label: a list, 1-D numpy array or 1-D torch tensor,
            values in [0, 1] (e.g. one row of ``logits.softmax(dim=-1)``).
        labels: One string per probability, in the same order.
        top_k: Show only the ``k`` largest; ``None`` shows all. Values larger than the
            number of labels show all.
        ax: Draw into this Axes and return its figure; by default a new figure is made
            (not registered with pyplot, so nothing is left open).

    Returns:
        The figure holding the plot.

    Raises:
        ValueError: ``probs`` is empty, not 1-D, not finite or outside [0, 1], or
            ``top_k`` is not a positive integer.
        PromptError: ``labels`` is not a list of non-blank strings or its length differs
            from ``probs``.

    Example:
        >>> fig = plot_probability_bars(
        ...     [0.05, 0.9, 0.05], ["a brain MRI", "a chest X-ray", "a skin lesion"], top_k=2
        ... )
        >>> [t.get_text() for t in fig.axes[0].texts]
        ['0.900', '0.050']
    """
    array = _check_probs_1d(probs)
    label_list = _check_labels(labels, array.size, "probs")
    k = _check_top_k(top_k, array.size)
    if ax is None:
        shown = [label_list[i] for i in _top_order(array, k)]
        height = max(1.8, 0.8 + 0.28 * _line_count(shown) + 0.12 * k)
        fig: Figure = _NotebookFigure(figsize=(7.0, height), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    _draw_bars(ax, array, label_list, k)
    return fig


def plot_predictions(
    images: Sequence[Any],
    probs: Sequence[Sequence[float]] | np.ndarray | Any,
    labels: Sequence[str],
    top_k: int | None = 5,
    titles: Sequence[str] | None = None,
) -> Figure:
    """Plot each image next to its top-k label probabilities, one row per image.

    Args:
        images: One image per row: file paths, PIL images, or numpy arrays of shape
            H x W (shown in gray), H x W x 3 or H x W x 4.
        probs: Probabilities of shape ``[N, M]`` (numpy array, torch tensor or nested
            list): row ``i`` belongs to ``images[i]``, column ``j`` to ``labels[j]``.
        labels: The ``M`` label strings.
        top_k: Bars per image (see :func:`plot_probability_bars`); ``None`` shows all.
        titles: Optional title per image, e.g. file names.

    Returns:
        A figure with ``2 * N`` axes: image, bars, image, bars, ...; its height grows
        with ``N``.

    Raises:
        ValueError: ``probs`` is not 2-D, not finite or outside [0, 1]; ``images`` or
            ``titles`` does not have one entry per row; ``top_k`` is not a positive
            integer.
        PromptError: ``labels`` is not a list of ``M`` non-blank strings.
        ImageLoadError: an image cannot be shown (e.g. a channels-first array).

    Example:
        >>> import numpy as np
        >>> images = [np.zeros((8, 8)), np.ones((8, 8, 3))]
        >>> probs = np.array([[0.8, 0.2], [0.3, 0.7]])
        >>> fig = plot_predictions(images, probs, ["X-ray", "MRI"], titles=["a.png", "b.png"])
        >>> len(fig.axes)
        4
    """
    array = _as_float_array(probs, "probs")
    if array.ndim != 2:
        hint = (
            " For one image use probs[None] (or probs.reshape(1, -1)), or plot_probability_bars."
            if array.ndim == 1
            else ""
        )
        raise ValueError(
            f"probs must be 2-D with one row per image, shape [N images, M labels], "
            f"but has shape {array.shape}.{hint}"
        )
    n_rows, n_labels = array.shape
    if n_rows == 0 or n_labels == 0:
        raise ValueError(f"probs has shape {array.shape}; pass at least one image and one label.")
    _check_prob_values(array, "probs")
    label_list = _check_labels(labels, n_labels, "each row of probs (M)")
    k = _check_top_k(top_k, n_labels)

    if isinstance(images, str) or hasattr(images, "mode") or not hasattr(images, "__len__"):
        raise ValueError(
            f"images must be a list with one image per row of probs, got "
            f"{type(images).__name__}; wrap a single image in a list: [image]."
        )
    image_list = list(images)
    if len(image_list) != n_rows:
        raise ValueError(
            f"images has {len(image_list)} entries but probs has {n_rows} rows; pass one "
            f"image per row of probs, in the same order."
        )
    pixels = [_image_array(image, i) for i, image in enumerate(image_list)]

    title_list: list[str] | None = None
    if titles is not None:
        if isinstance(titles, str):
            raise ValueError(
                f"titles must be a list with one title per image, not one string; "
                f"pass e.g. [{titles!r}]."
            )
        title_list = [str(title) for title in titles]
        if len(title_list) != n_rows:
            raise ValueError(
                f"titles has {len(title_list)} entries but there are {n_rows} images; "
                f"pass one title per image, or titles=None."
            )

    lines = max(_line_count([label_list[i] for i in _top_order(row, k)]) for row in array)
    row_height = max(2.6, 0.8 + 0.28 * lines + 0.12 * k)
    fig = _NotebookFigure(
        figsize=(11.0, row_height * n_rows + (0.3 if title_list else 0.0)),
        layout="constrained",
    )
    axes = fig.subplots(n_rows, 2, squeeze=False, width_ratios=[1.0, 1.6])
    for i, ((image_ax, bar_ax), (pixel_array, kwargs)) in enumerate(zip(axes, pixels, strict=True)):
        image_ax.imshow(pixel_array, **kwargs)
        image_ax.set_axis_off()
        if title_list is not None:
            image_ax.set_title(title_list[i], fontsize=10)
        plot_probability_bars(array[i], label_list, top_k=k, ax=bar_ax)
    return fig


# --------------------------------------------------------------------------- confusion matrix


def _confusion_table(confusion: Any, labels: Sequence[str] | None) -> tuple[np.ndarray, list, list]:
    """Return ``(counts, row labels, column labels)`` from a DataFrame or an array + labels."""
    if hasattr(confusion, "confusion") and not hasattr(confusion, "shape"):
        confusion = confusion.confusion  # an EvaluationResult
    is_frame = hasattr(confusion, "index") and hasattr(confusion, "columns")
    array = _as_float_array(confusion.to_numpy() if is_frame else confusion, "confusion")
    if array.ndim != 2 or array.size == 0:
        raise ValueError(
            f"confusion must be a non-empty 2-D table (rows true, columns predicted), "
            f"but has shape {array.shape}."
        )
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError("confusion must hold finite, non-negative counts.")
    if labels is not None:
        names = _check_labels(labels, array.shape[0], "the rows of confusion")
        if array.shape[0] != array.shape[1]:
            raise ValueError(
                f"confusion has shape {array.shape}; with labels it must be square "
                f"(the same classes on both axes)."
            )
        return array, names, names
    if is_frame:
        return array, [str(v) for v in confusion.index], [str(v) for v in confusion.columns]
    raise PromptError(
        "labels is missing: pass the class names, e.g. plot_confusion_matrix(matrix, "
        "labels=['normal', 'pneumonia']), or a DataFrame with them as index and columns."
    )


def plot_confusion_matrix(
    confusion: Any,
    *,
    normalize: bool = False,
    ax: Axes | None = None,
    labels: Sequence[str] | None = None,
) -> Figure:
    """Draw a confusion matrix as an annotated heat map: rows true, columns predicted.

    Args:
        confusion: A DataFrame with the class names as index and columns (such as
            ``EvaluationResult.confusion``, or the result itself), or a square array of
            counts together with ``labels``.
        normalize: Divide each row by its total, so a cell is the fraction of that true
            class predicted as the column's class (the diagonal is the recall); rows
            without images show "–".
        ax: Draw into this Axes and return its figure; by default a new figure is made
            (not registered with pyplot, so nothing is left open).
        labels: The class names of an array (they replace a DataFrame's own).

    Returns:
        The figure holding the plot: one text per cell, class names on both axes.

    Raises:
        ValueError: ``confusion`` is not a non-empty 2-D table of non-negative counts.
        PromptError: ``labels`` is missing for an array or does not fit it.

    Example:
        >>> fig = plot_confusion_matrix([[5, 1], [2, 7]], labels=["normal", "pneumonia"])
        >>> [t.get_text() for t in fig.axes[0].texts]
        ['5', '1', '2', '7']
    """
    counts, rows, cols = _confusion_table(confusion, labels)
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(totals > 0, counts / totals, np.nan)
        vmax = 1.0
    else:
        values = counts
        vmax = max(float(counts.max()), 1.0)
    n_rows, n_cols = values.shape
    if ax is None:
        width = 2.5 + 0.75 * n_cols + 0.05 * max(len(c) for c in cols)
        height = 2.0 + 0.6 * n_rows + 0.05 * max(len(c) for c in cols)
        fig: Figure = _NotebookFigure(
            figsize=(min(width, 16.0), min(height, 16.0)), layout="constrained"
        )
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    from matplotlib import colormaps

    cmap = colormaps["Blues"].with_extremes(bad="#e6e6e6")  # rows without images
    image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax, label="fraction of the true class" if normalize else "images")
    integers = not normalize and np.allclose(counts, np.round(counts))
    fontsize = 9 if max(n_rows, n_cols) <= 12 else 7
    for i in range(n_rows):
        for j in range(n_cols):
            value = values[i, j]
            if np.isnan(value):
                text, dark = "–", False
            else:
                text = f"{int(round(value))}" if integers else f"{value:.2f}"
                dark = value > 0.6 * vmax
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
            )
    ax.set_xticks(np.arange(n_cols))
    ax.set_xticklabels([_wrap(c) for c in cols], rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(np.arange(n_rows))
    ax.set_yticklabels([_wrap(r) for r in rows])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (row-normalised)" if normalize else "Confusion matrix")
    return fig


__all__ += ["plot_confusion_matrix"]


# --------------------------------------------------------------------------- embedding maps

#: The 2-D reductions :func:`embed_2d` knows, with the names used in plot titles.
EMBEDDING_METHODS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
#: Largest side, in pixels, of the thumbnails drawn by :func:`plot_embedding_map`.
THUMBNAIL_SIZE = 32
# Fewest points each method can place: PCA needs two, t-SNE needs a perplexity below the
# number of points, UMAP's spectral start needs more points than its 3 eigenvectors.
_MIN_POINTS = {"pca": 2, "tsne": 4, "umap": 4}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_UMAP_INSTALL = 'pip install "mmkd-utils[umap]" (or pip install umap-learn)'


def _as_matrix(values: Any, name: str) -> np.ndarray:
    """Return ``values`` (list, numpy array or torch tensor) as a finite float64 [N, D] array."""
    array = _as_float_array(values, name, "a numpy array or torch tensor of shape [N, D]")
    if array.ndim != 2:
        hint = " For one vector use x[None] (or x.reshape(1, -1))." if array.ndim == 1 else ""
        raise ValueError(
            f"{name} must be 2-D with one row per item, shape [N, D], but has shape "
            f"{array.shape}.{hint}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} has shape {array.shape}; pass at least one non-empty row.")
    bad = ~np.isfinite(array)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf), the first in "
            f"row {row} (column {col}); check the images or model that produced it."
        )
    return array


def _check_method(method: Any) -> str:
    """Return the key of :data:`EMBEDDING_METHODS` for ``method`` ("t-SNE" -> "tsne")."""
    key = method.lower().replace("-", "").replace("_", "") if isinstance(method, str) else None
    if key not in EMBEDDING_METHODS:
        raise ValueError(f"method must be one of 'pca', 'tsne' or 'umap', got {method!r}.")
    return key


def _check_random_state(random_state: Any) -> int | None:
    if random_state is None:
        return None
    if (
        isinstance(random_state, bool)
        or not isinstance(random_state, numbers.Integral)
        or not 0 <= random_state < 2**32
    ):
        raise ValueError(
            f"random_state must be a whole number between 0 and 2**32 - 1 (the seed that "
            f"makes the map reproducible), or None; got {random_state!r}."
        )
    return int(random_state)


def _check_perplexity(perplexity: Any, n: int, method: str) -> float:
    """Return the t-SNE perplexity: ``min(30, (n - 1) / 3)`` unless given; must be < n."""
    if method != "tsne":
        if perplexity is not None:
            raise ValueError(
                f"perplexity only applies to method='tsne', not method={method!r}; "
                f"remove it or use method='tsne'."
            )
        return 0.0
    if perplexity is None:
        return min(30.0, (n - 1) / 3)
    if isinstance(perplexity, bool) or not isinstance(perplexity, numbers.Real):
        raise ValueError(f"perplexity must be a number such as 5 or 30, got {perplexity!r}.")
    if not (np.isfinite(perplexity) and 0 < perplexity < n):
        raise ValueError(
            f"perplexity must be above 0 and below the number of points ({n}), got "
            f"{perplexity!r}; try perplexity={min(30.0, (n - 1) / 3):.3g} or leave it as None."
        )
    return float(perplexity)


def _umap_class() -> Any:
    """Import ``umap.UMAP`` lazily, or raise :class:`MissingDependencyError`."""
    try:
        import umap
    except ImportError as exc:
        raise MissingDependencyError(
            f"method='umap' needs the optional package umap-learn, which could not be "
            f"imported ({exc}). Install it with {_UMAP_INSTALL} and restart the kernel, "
            f"or use method='pca' or method='tsne'."
        ) from exc
    if not hasattr(umap, "UMAP"):
        raise MissingDependencyError(
            f"The installed package 'umap' is not umap-learn (it has no UMAP class). "
            f"Run pip uninstall umap, then {_UMAP_INSTALL}."
        )
    return umap.UMAP


def _reduce(array: np.ndarray, method: str, seed: int | None, perplexity: float) -> np.ndarray:
    """Run the 2-D reduction on a checked array."""
    n = array.shape[0]
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(array)
    if method == "tsne":
        from sklearn.manifold import TSNE

        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        return tsne.fit_transform(array)
    umap_class = _umap_class()
    import warnings

    with warnings.catch_warnings():
        # With a seed umap runs single-threaded and says so; small inputs warn about k >= N.
        warnings.filterwarnings("ignore", message=".*n_jobs value.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*k >= N.*", category=RuntimeWarning)
        reducer = umap_class(
            n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1
        )
        return reducer.fit_transform(array)


def embed_2d(
    embeddings: Any,
    method: str = "pca",
    random_state: int | None = 0,
    *,
    perplexity: float | None = None,
) -> np.ndarray:
    """Reduce ``[N, D]`` embeddings to ``[N, 2]`` map coordinates with PCA, t-SNE or UMAP.

    PCA and t-SNE come from scikit-learn; t-SNE starts from the PCA layout
    (``init="pca"``) with ``perplexity`` defaulting to ``min(30, (N - 1) / 3)``. UMAP
    needs the optional ``umap-learn`` package (``pip install "mmkd-utils[umap]"``) and
    uses ``n_neighbors=min(15, N - 1)``. With the same ``random_state`` the same input
    gives the same coordinates. Used by :func:`plot_embedding_map`; introduced in
    ``notebooks/04_embedding_maps.ipynb``.

    Args:
        embeddings: ``[N, D]`` numpy array, torch tensor or nested list, finite values.
        method: ``"pca"``, ``"tsne"`` (or ``"t-SNE"``) or ``"umap"``.
        random_state: Seed of the reduction; ``None`` gives a different map each run.
        perplexity: t-SNE only: about how many neighbours each point looks at; must be
            below ``N``.

    Returns:
        A float64 array of shape ``[N, 2]``.

    Raises:
        ValueError: ``embeddings`` is not 2-D, not finite, has too few rows (2 for PCA,
            4 for t-SNE and UMAP) or fewer than 2 columns, or all its rows are equal;
            ``method``, ``random_state`` or ``perplexity`` is invalid.
        MissingDependencyError: ``method="umap"`` and umap-learn is not installed (an
            :class:`ImportError`).

    Example:
        >>> import numpy as np
        >>> points = np.random.default_rng(0).normal(size=(10, 512))
        >>> embed_2d(points, method="pca").shape
        (10, 2)
    """
    key = _check_method(method)
    array = _as_matrix(embeddings, "embeddings")
    n, d = array.shape
    if n < _MIN_POINTS[key]:
        raise ValueError(
            f"embeddings has {n} row(s), but method={EMBEDDING_METHODS[key]!r} needs at "
            f"least {_MIN_POINTS[key]} points; embed more images"
            + (" or use method='pca'." if key != "pca" else ".")
        )
    if d < 2:
        raise ValueError(
            f"embeddings has {d} column; a 2-D map needs at least 2 dimensions per point "
            f"(pass the [N, D] features, e.g. model.encode_images(...))."
        )
    if np.all(array == array[0]):
        raise ValueError(
            f"all {n} rows of embeddings are identical, so there is nothing to map; check "
            f"that each row comes from a different image."
        )
    seed = _check_random_state(random_state)
    perplexity_value = _check_perplexity(perplexity, n, key)
    coords = np.asarray(_reduce(array, key, seed, perplexity_value), dtype=np.float64)
    return coords


def _check_point_labels(labels: Any, n: int) -> list[Any]:
    """Return one hashable label per point, or raise naming ``labels``."""
    if isinstance(labels, str):
        raise ValueError(
            f"labels must be a list with one label per row of embeddings, not one string "
            f"({labels[:40]!r})."
        )
    try:
        items = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    except TypeError as exc:
        raise ValueError(
            f"labels must be a list with one label per row of embeddings, got "
            f"{type(labels).__name__}."
        ) from exc
    if not isinstance(items, list):  # a 0-d array's tolist() is a scalar
        raise ValueError("labels must be a list with one label per row of embeddings.")
    if len(items) != n:
        raise ValueError(
            f"labels has {len(items)} entries but embeddings has {n} rows; pass exactly one "
            f"label per row, in the same order."
        )
    for i, item in enumerate(items):
        try:
            hash(item)
        except TypeError:
            raise ValueError(
                f"labels[{i}] is a {type(item).__name__}; labels must be single values such "
                f"as class names or numbers (labels must be 1-D)."
            ) from None
    return items


def _named_image_array(image: Any, index: int, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`_image_array`, with errors naming ``name[index]`` instead of ``images[index]``."""
    try:
        return _image_array(image, index)
    except ImageLoadError as exc:
        message = str(exc)
        prefix = f"images[{index}]"
        if message.startswith(prefix):
            message = f"{name}[{index}]{message[len(prefix) :]}"
        else:
            message = f"{name}[{index}]: {message}"
        raise ImageLoadError(message) from exc


def _shrink(array: np.ndarray, size: int) -> np.ndarray:
    """Downscale an image array so its longer side is at most ``size`` pixels."""
    height, width = array.shape[:2]
    if max(height, width) <= size:
        return array
    if array.dtype == np.uint8:
        from PIL import Image

        image = Image.fromarray(np.ascontiguousarray(array))
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        return np.asarray(image)
    step = int(np.ceil(max(height, width) / size))
    return array[::step, ::step]


def _label_styles(values: list[Any]) -> dict[Any, tuple[Any, str]]:
    """A (colour, marker) per unique value: tab10 / tab20 colours, then new markers."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(values) <= 10 else "tab20"].colors
    return {
        value: (palette[i % len(palette)], _MARKERS[(i // len(palette)) % len(_MARKERS)])
        for i, value in enumerate(values)
    }


def plot_embedding_map(
    embeddings: Any,
    labels: Sequence[Any] | None = None,
    *,
    method: str = "pca",
    thumbnails: Sequence[Any] | None = None,
    ax: Axes | None = None,
    random_state: int | None = 0,
    perplexity: float | None = None,
) -> Figure:
    """Scatter ``[N, D]`` embeddings on a 2-D map (PCA, t-SNE or UMAP), coloured by label.

    The coordinates come from :func:`embed_2d` (same arguments, same map). Each unique
    label, in order of first appearance, gets a colour and a legend entry outside the
    axes; more than 20 labels reuse the colours with other marker shapes. With
    ``thumbnails`` each point shows its image (at most :data:`THUMBNAIL_SIZE` pixels)
    framed in its label's colour. Introduced in ``notebooks/04_embedding_maps.ipynb``.

    Args:
        embeddings: ``[N, D]`` image (or text) embeddings: numpy array or torch tensor.
        labels: One label per row (class names, numbers, ...); ``None`` draws every
            point in one colour without a legend.
        method: ``"pca"``, ``"tsne"`` or ``"umap"`` (needs ``pip install "mmkd-utils[umap]"``).
        thumbnails: One image per row (file paths, PIL images or arrays) to draw at the
            points.
        ax: Draw into this Axes and return its figure; by default a new figure is made
            (not registered with pyplot, so nothing is left open).
        random_state: Seed of t-SNE / UMAP (and randomized PCA); fixed by default.
        perplexity: t-SNE only, see :func:`embed_2d`.

    Returns:
        The figure holding the map; its title names the method.

    Raises:
        ValueError: as :func:`embed_2d`, or ``labels`` / ``thumbnails`` does not have
            one entry per row.
        ImageLoadError: a thumbnail cannot be read or shown.
        MissingDependencyError: ``method="umap"`` without umap-learn installed.

    Example:
        >>> import numpy as np
        >>> points = np.random.default_rng(0).normal(size=(6, 32))
        >>> fig = plot_embedding_map(points, ["CT", "MRI", "CT", "MRI", "X-ray", "CT"])
        >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        ['CT', 'MRI', 'X-ray']
    """
    key = _check_method(method)
    array = _as_matrix(embeddings, "embeddings")
    n = array.shape[0]
    label_list = None if labels is None else _check_point_labels(labels, n)
    thumbs: list[np.ndarray | tuple] = []
    if thumbnails is not None:
        if isinstance(thumbnails, str) or not hasattr(thumbnails, "__len__"):
            raise ValueError(
                f"thumbnails must be a list with one image per row of embeddings, got "
                f"{type(thumbnails).__name__}."
            )
        thumbnail_list = list(thumbnails)
        if len(thumbnail_list) != n:
            raise ValueError(
                f"thumbnails has {len(thumbnail_list)} entries but embeddings has {n} rows; "
                f"pass exactly one image per row, in the same order."
            )
        for i, image in enumerate(thumbnail_list):
            pixels, kwargs = _named_image_array(image, i, "thumbnails")
            thumbs.append((_shrink(pixels, THUMBNAIL_SIZE), kwargs))
    coords = embed_2d(array, key, random_state, perplexity=perplexity)

    if ax is None:
        fig: Figure = _NotebookFigure(
            figsize=(8.5 if label_list is not None else 6.5, 6.0), layout="constrained"
        )
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    default_style = (_BAR_COLOR, "o")
    if label_list is None:
        styles: dict[Any, tuple[Any, str]] = {}
        ax.scatter(coords[:, 0], coords[:, 1], s=24, color=_BAR_COLOR, alpha=0.85)
    else:
        unique = list(dict.fromkeys(label_list))
        styles = _label_styles(unique)
        members = np.array([unique.index(v) for v in label_list])
        for i, value in enumerate(unique):
            color, marker = styles[value]
            rows = members == i
            ax.scatter(
                coords[rows, 0],
                coords[rows, 1],
                s=24,
                color=color,
                marker=marker,
                alpha=0.85,
                label=str(value),
            )
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            fontsize=9,
            ncols=int(np.ceil(len(unique) / 25)),
            frameon=False,
        )
    if thumbs:
        from matplotlib.colors import Normalize
        from matplotlib.offsetbox import AnnotationBbox, OffsetImage

        for i, (pixels, kwargs) in enumerate(thumbs):
            color = default_style[0] if label_list is None else styles[label_list[i]][0]
            norm = None
            if "vmin" in kwargs:
                norm = Normalize(vmin=kwargs["vmin"], vmax=kwargs["vmax"])
            image_box = OffsetImage(pixels, zoom=1.0, cmap=kwargs.get("cmap"), norm=norm)
            frame = AnnotationBbox(
                image_box,
                (coords[i, 0], coords[i, 1]),
                frameon=True,
                pad=0.1,
                bboxprops={"edgecolor": color, "linewidth": 1.5},
            )
            frame.set_zorder(3)
            ax.add_artist(frame)
        ax.margins(0.1)
    name = EMBEDDING_METHODS[key]
    if key == "pca":
        centered_variance = float(np.var(array, axis=0).sum())
        shares = np.var(coords, axis=0) / centered_variance
        ax.set_xlabel(f"PC 1 ({100 * shares[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * shares[1]:.0f}% of variance)")
    else:
        ax.set_xlabel(f"{name} 1")
        ax.set_ylabel(f"{name} 2")
        ax.tick_params(labelbottom=False, labelleft=False)  # t-SNE / UMAP axes have no units
    ax.set_title(f"{name} map of {n} embeddings")
    return fig


# --------------------------------------------------------------------------- similarity heat map

#: Width, in characters, at which the heat map's column (text) labels are wrapped.
COLUMN_WRAP_WIDTH = 24


def _check_axis_labels(labels: Any, expected: int, name: str, what: str) -> list[str]:
    """Return ``labels`` as ``expected`` strings, or raise a ValueError naming ``name``."""
    error = PromptError if name == "text_labels" else ValueError
    if isinstance(labels, str) or labels is None or not hasattr(labels, "__iter__"):
        shown = f" ({labels[:40]!r})" if isinstance(labels, str) else ""
        raise error(
            f"{name} must be a list with one label per row of {what}, got "
            f"{type(labels).__name__}{shown}."
        )
    items = [str(item) for item in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    if len(items) != expected:
        raise error(
            f"{name} has {len(items)} entries but {what} has {expected} rows; pass exactly "
            f"one label per row, in the same order."
        )
    return items


def _check_logit_scale(logit_scale: Any) -> float:
    if hasattr(logit_scale, "detach") and hasattr(logit_scale, "cpu"):
        logit_scale = logit_scale.detach().cpu().double().numpy()
    if isinstance(logit_scale, np.ndarray) and logit_scale.size == 1:
        logit_scale = logit_scale.reshape(()).item()
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, numbers.Real):
        raise ValueError(
            f"logit_scale must be one positive number such as model.logit_scale (about "
            f"100), got {logit_scale!r}."
        )
    if not (np.isfinite(logit_scale) and logit_scale > 0):
        raise ValueError(f"logit_scale must be a finite number above 0, got {logit_scale!r}.")
    return float(logit_scale)


def _unit_rows(array: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(
            f"{name}[{int(zero[0])}] is all zeros, so its cosine similarity is undefined; "
            f"check the image or text that produced it."
        )
    return array / norms


def _cell_text(value: float) -> str:
    text = f"{value:.2f}"
    return "0.00" if float(text) == 0 else text  # no "-0.00"


def plot_similarity_heatmap(
    image_embeddings: Any,
    text_embeddings: Any,
    image_labels: Sequence[str],
    text_labels: Sequence[str],
    *,
    probabilities: bool = False,
    logit_scale: float | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Draw the image × text cosine similarities (or softmax probabilities) as a heat map.

    Both embeddings are L2-normalised here, so raw features work too. Each cell shows
    its value with two decimals, in white on dark cells and black on light ones. With
    ``probabilities=True`` each row is ``softmax(logit_scale · cosine)`` over the texts,
    the zero-shot probabilities of that image. Introduced in
    ``notebooks/04_embedding_maps.ipynb``.

    Args:
        image_embeddings: ``[N, D]`` image embeddings (numpy array or torch tensor).
        text_embeddings: ``[M, D]`` text embeddings.
        image_labels: ``N`` row names, e.g. file names.
        text_labels: ``M`` column names, e.g. the prompts (long ones are wrapped).
        probabilities: Show per-row softmax probabilities instead of cosines.
        logit_scale: The model's temperature ``exp(logit_scale)``, e.g.
            ``model.logit_scale`` (about 100); required with ``probabilities=True``.
        ax: Draw into this Axes and return its figure; by default a new figure is made
            (not registered with pyplot, so nothing is left open).

    Returns:
        The figure: rows are images, columns texts, one value text per cell.

    Raises:
        ValueError: an embedding is not 2-D, not finite or all zeros; the two have
            different widths ``D``; ``image_labels`` does not fit; ``logit_scale`` is
            missing with ``probabilities=True``, given without it, or not positive.
        PromptError: ``text_labels`` does not have one entry per text embedding.

    Example:
        >>> import numpy as np
        >>> images = np.array([[1.0, 0.0], [0.6, 0.8]])
        >>> texts = np.array([[2.0, 0.0], [0.0, 3.0]])
        >>> fig = plot_similarity_heatmap(images, texts, ["a.png", "b.png"], ["CT", "MRI"])
        >>> [t.get_text() for t in fig.axes[0].texts]
        ['1.00', '0.00', '0.60', '0.80']
    """
    images = _as_matrix(image_embeddings, "image_embeddings")
    texts = _as_matrix(text_embeddings, "text_embeddings")
    if images.shape[1] != texts.shape[1]:
        raise ValueError(
            f"image_embeddings has {images.shape[1]} dimensions per row but text_embeddings "
            f"has {texts.shape[1]}; both must come from the same model."
        )
    rows = _check_axis_labels(image_labels, images.shape[0], "image_labels", "image_embeddings")
    cols = _check_axis_labels(text_labels, texts.shape[0], "text_labels", "text_embeddings")
    if probabilities and logit_scale is None:
        raise ValueError(
            "probabilities=True needs logit_scale, the model's temperature, e.g. "
            "logit_scale=model.logit_scale (about 100)."
        )
    if not probabilities and logit_scale is not None:
        raise ValueError(
            "logit_scale is only used with probabilities=True; pass probabilities=True to "
            "show softmax probabilities, or drop logit_scale to show cosine similarities."
        )
    values = _unit_rows(images, "image_embeddings") @ _unit_rows(texts, "text_embeddings").T
    if probabilities:
        scale = _check_logit_scale(logit_scale)
        logits = scale * values
        logits -= logits.max(axis=1, keepdims=True)
        values = np.exp(logits)
        values /= values.sum(axis=1, keepdims=True)
        vmin, vmax = 0.0, 1.0
        title = f"Probabilities: softmax over texts of {scale:.3g} · cosine, per image"
        bar_label = "probability"
    else:
        vmin, vmax = float(values.min()), float(values.max())
        if vmax - vmin < 1e-6:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        title = "Cosine similarity of images and texts"
        bar_label = "cosine similarity"
    n_rows, n_cols = values.shape
    wrapped_cols = [
        textwrap.fill(c, width=COLUMN_WRAP_WIDTH, break_long_words=True) or c for c in cols
    ]
    wrapped_rows = [_wrap(r) for r in rows]
    if ax is None:
        col_lines = max(c.count("\n") + 1 for c in wrapped_cols)
        row_chars = max(len(line) for r in wrapped_rows for line in r.splitlines() or [""])
        width = 2.5 + 0.085 * row_chars + 0.8 * n_cols
        height = 1.6 + 0.45 * n_rows + 0.25 * col_lines + 0.6
        fig: Figure = _NotebookFigure(
            figsize=(min(width, 18.0), min(height, 18.0)), layout="constrained"
        )
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    image = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax, label=bar_label)
    fontsize = 9 if max(n_rows, n_cols) <= 12 else 7
    for i in range(n_rows):
        for j in range(n_cols):
            red, green, blue, _ = image.cmap(image.norm(values[i, j]))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(
                j,
                i,
                _cell_text(values[i, j]),
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
            )
    ax.set_xticks(np.arange(n_cols))
    ax.set_xticklabels(wrapped_cols, rotation=45, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_yticks(np.arange(n_rows))
    ax.set_yticklabels(wrapped_rows, fontsize=9)
    ax.set_xlabel("text")
    ax.set_ylabel("image")
    ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- retrieval gallery

#: Largest side, in pixels, of the images drawn by :func:`plot_gallery`.
GALLERY_IMAGE_SIZE = 384
_GALLERY_COLUMNS = ("rank", "path", "score")


def _check_count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, or None; got {value!r}.")
    return int(value)


def _gallery_image(path: Any, index: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Load one ``path`` cell of the results; row numbers get a hint instead of pixels."""
    if isinstance(path, numbers.Integral) and not isinstance(path, bool):
        raise ImageLoadError(
            f"results['path'][{index}] is the row number {int(path)}, not an image: the "
            f"index had no file paths. Search an embed_folder(...) result, or pass "
            f"paths=[...] to search, so that the gallery can load the images."
        )
    return _named_image_array(path, index, "results['path']")


def plot_gallery(
    results: Any,
    *,
    k: int | None = None,
    images_per_row: int | None = None,
    title_column: str = "query",
) -> Figure:
    """Show retrieval results: one row of images per query, titled with the query text.

    ``results`` is the DataFrame from :func:`mmkd_utils.tasks.retrieval.search` (columns
    ``query``, ``rank``, ``path``, ``score`` and optionally ``label``). Queries keep
    their order of first appearance, images are sorted by rank, and each image is titled
    ``#rank · score`` (score with three decimals) plus its label. Introduced in
    ``notebooks/05_retrieval_and_linear_probe.ipynb``.

    Args:
        results: The search results, one row per retrieved image.
        k: Show at most the ``k`` best-ranked images per query; ``None`` shows all.
        images_per_row: Wrap a query's images onto several rows of this many; ``None``
            puts each query's images on one row.
        title_column: The column that identifies a query; each distinct value gets its
            own block of images with the value (wrapped) as its title.

    Returns:
        A figure with one image axes per shown result.

    Raises:
        ValueError: ``results`` is not a non-empty DataFrame with the columns
            ``title_column``, ``rank``, ``path`` and ``score`` (numbers); ``k`` or
            ``images_per_row`` is not a positive whole number.
        ImageLoadError: an image in the ``path`` column cannot be read.

    Example:
        >>> import numpy as np, pandas as pd
        >>> results = pd.DataFrame({
        ...     "query": ["a chest X-ray"] * 2, "rank": [1, 2],
        ...     "path": [np.zeros((8, 8)), np.ones((8, 8))], "score": [0.31, 0.27],
        ... })
        >>> fig = plot_gallery(results)
        >>> [ax.get_title() for ax in fig.axes]
        ['#1 · 0.310', '#2 · 0.270']
    """
    if not (hasattr(results, "columns") and hasattr(results, "groupby")):
        raise ValueError(
            f"results must be the pandas DataFrame returned by mmkd_utils.tasks.retrieval.search, "
            f"got {type(results).__name__}."
        )
    if not isinstance(title_column, str):
        raise ValueError(f"title_column must be a column name (a string), got {title_column!r}.")
    required = (title_column, *_GALLERY_COLUMNS)
    missing = [c for c in required if c not in results.columns]
    if missing:
        raise ValueError(
            f"results is missing the column(s) {', '.join(map(repr, missing))}; it has "
            f"{[str(c) for c in results.columns]}. Pass the DataFrame from "
            f"mmkd_utils.tasks.retrieval.search (columns query, rank, path, score, optional "
            f"label)" + (", or set title_column." if title_column in missing else ".")
        )
    if len(results) == 0:
        raise ValueError("results is empty: the search returned no images to show.")
    k = _check_count(k, "k")
    images_per_row = _check_count(images_per_row, "images_per_row")
    import pandas as pd

    try:
        scores = pd.to_numeric(results["score"]).to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"results['score'] must hold numbers: {exc}") from exc
    has_label = "label" in results.columns

    groups: list[tuple[str, list[tuple[str, Any, int]]]] = []
    table = results.reset_index(drop=True).assign(_score=scores)
    for query, group in table.groupby(title_column, sort=False, dropna=False):
        group = group.sort_values("rank", kind="stable")
        if k is not None:
            group = group.head(k)
        items = []
        for row_index, row in group.iterrows():
            rank = row["rank"]
            if isinstance(rank, numbers.Real) and float(rank).is_integer():
                rank = int(rank)
            title = f"#{rank} · {row['_score']:.3f}"
            if has_label and not pd.isna(row["label"]):
                title += "\n" + textwrap.shorten(str(row["label"]), width=40, placeholder="…")
            items.append((title, row["path"], int(row_index)))
        groups.append((str(query), items))

    n_cols = images_per_row or max(len(items) for _, items in groups)
    n_cols = min(n_cols, max(len(items) for _, items in groups))
    pixels = [[_gallery_image(path, index) for _, path, index in items] for _, items in groups]
    titles = [textwrap.fill(query, width=max(30, 18 * n_cols)) or query for query, _ in groups]
    block_rows = [int(np.ceil(len(items) / n_cols)) for _, items in groups]
    heights = [
        2.3 * rows + 0.3 * (t.count("\n") + 1) for rows, t in zip(block_rows, titles, strict=True)
    ]
    fig = _NotebookFigure(figsize=(max(4.0, 2.2 * n_cols), sum(heights)), layout="constrained")
    blocks = fig.subfigures(len(groups), 1, squeeze=False, height_ratios=heights)[:, 0]
    for block, title, rows, (_, items), images in zip(
        blocks, titles, block_rows, groups, pixels, strict=True
    ):
        block.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
        for j, ((image_title, _, _), (array, kwargs)) in enumerate(zip(items, images, strict=True)):
            image_ax = block.add_subplot(rows, n_cols, j + 1)
            image_ax.imshow(_shrink(array, GALLERY_IMAGE_SIZE), **kwargs)
            image_ax.set_axis_off()
            image_ax.set_title(image_title, fontsize=9)
    return fig


__all__ += [
    "COLUMN_WRAP_WIDTH",
    "EMBEDDING_METHODS",
    "GALLERY_IMAGE_SIZE",
    "THUMBNAIL_SIZE",
    "MissingDependencyError",
    "embed_2d",
    "plot_embedding_map",
    "plot_gallery",
    "plot_similarity_heatmap",
]


# --------------------------------------------------------------------------- linear probe


def plot_probe_curve(*args: Any, **kwargs: Any) -> Figure:
    """Plot linear-probe accuracy against shots per class (see ``mmkd_utils.tasks.probe``).

    A lazy re-export of :func:`mmkd_utils.tasks.probe.plot_probe_curve` (imported on the first
    call, so importing this module does not import the probe code). Introduced in
    ``notebooks/05_retrieval_and_linear_probe.ipynb``.

    Example:
        >>> from mmkd_utils.tasks.probe import linear_probe  # doctest: +SKIP
        >>> result = linear_probe(train_x, train_y, test_x, test_y)  # doctest: +SKIP
        >>> fig = plot_probe_curve(result, zero_shot_accuracy=0.71)  # doctest: +SKIP
    """
    from mmkd_utils.tasks.probe import plot_probe_curve as _plot_probe_curve

    return _plot_probe_curve(*args, **kwargs)


__all__ += ["plot_probe_curve"]


# --------------------------------------------------------------------------- model comparison


def plot_model_comparison(*args: Any, **kwargs: Any) -> Figure:
    """Grouped bars of several models' probabilities (see ``mmkd_utils.tasks.compare``).

    A lazy re-export of :func:`mmkd_utils.tasks.compare.plot_model_comparison` (imported on the
    first call). Introduced in ``notebooks/07_compare_models.ipynb``.

    Example:
        >>> table = compare_models(models, images, prompts)  # doctest: +SKIP
        >>> fig = plot_model_comparison(table, image="xray.png")  # doctest: +SKIP
    """
    from mmkd_utils.tasks.compare import plot_model_comparison as _plot_model_comparison

    return _plot_model_comparison(*args, **kwargs)


__all__ += ["plot_model_comparison"]
