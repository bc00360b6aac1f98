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

from mmkd_utils.errors import ImageLoadError, PromptError

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


def _as_float_array(values: Any, name: str) -> np.ndarray:
    """Turn a list, numpy array or torch tensor into a float64 numpy array."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch tensor, without torch
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be numbers (a list, numpy array or torch tensor of "
            f"probabilities); could not convert it: {exc}"
        ) from exc
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

    Paths (any format :func:`mmkd_utils.images.to_rgb` reads) are loaded as RGB.

    Gray images get ``cmap="gray"`` and, for uint8 / bool / [0, 1] float data, a fixed
    value range, so a dark image stays dark instead of being stretched to full contrast.
    """
    if isinstance(image, (str, os.PathLike)):
        from .images import to_rgb

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
