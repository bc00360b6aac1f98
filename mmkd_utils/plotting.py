"""The notebooks' plots: Figures that pyplot does not manage (nothing is left open or shown)."""

from __future__ import annotations

import io
import math
import numbers
import textwrap
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from PIL import Image
from scipy.ndimage import zoom
from scipy.special import softmax
from sklearn.metrics import ConfusionMatrixDisplay
from sklearn.metrics.pairwise import cosine_similarity

from mmkd_utils.errors import ArgumentError, ImageLoadError, ProbeError, PromptError
from mmkd_utils.images import to_rgb
from mmkd_utils.tasks.compare import model_columns
from mmkd_utils.tasks.maps import EMBEDDING_METHODS, as_floats, embed_2d

#: Labels longer than this many characters are wrapped (heat map columns: 24).
LABEL_WRAP_WIDTH, COLUMN_WRAP_WIDTH = 40, 24
#: Largest side, in pixels, of map thumbnails and of gallery images.
THUMBNAIL_SIZE, GALLERY_IMAGE_SIZE = 32, 384


class _Figure(Figure):
    """A Figure that Jupyter shows as a PNG, even if pyplot was never imported."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def _axes(ax: Any, width: float, height: float) -> tuple[Figure, Any]:
    """``ax`` and its figure, or a new figure of that size with one Axes."""
    fig = _Figure(figsize=(width, height), layout="constrained") if ax is None else ax.figure
    return fig, fig.add_subplot() if ax is None else ax


def _probs(values: Any, ndim: int) -> np.ndarray:
    """``values`` as :func:`~mmkd_utils.tasks.maps.as_floats` between 0 and 1."""
    probs = as_floats(values, "probs", ndim)
    if not -1e-4 <= probs.min() <= probs.max() <= 1 + 1e-4:
        raise ArgumentError(
            f"probs must hold probabilities between 0 and 1, not {probs.min():.4g} to "
            f"{probs.max():.4g}; apply softmax first, e.g. logits.softmax(dim=-1)."
        )
    return probs


def _listed(values: Any, n: int, name: str, what: str, error: type = ArgumentError) -> list:
    """``values`` as a list of ``n`` items (not one string or image), else ``error``."""
    if isinstance(values, (str, Image.Image)) or not hasattr(values, "__iter__"):
        kind = f"a {type(values).__name__} ({values!r:.30})"
        raise error(f"{name} must be a list, not one string or {kind}; e.g. [{name[:-1]}].")
    items = list(values)
    if len(items) != n:
        raise error(f"{name} has {len(items)} entries but {what}; pass one each, in order.")
    return items


def _labels(labels: Any, n: int, what: str, name: str = "labels", text: bool = True) -> list:
    """``n`` labels: non-blank strings (``text``) or single values, else a PromptError."""
    items = _listed(getattr(labels, "tolist", lambda: labels)(), n, name, what, PromptError)
    for i, item in enumerate(items):
        if not isinstance(item, str if text else Hashable) or (text and not item.strip()):
            kind = "blank" if isinstance(item, str) else f"a {type(item).__name__}"
            raise PromptError(f"{name}[{i}] is {kind} ({item!r:.40}); {name} must be 1-D.")
    return items


def _count(value: Any, name: str) -> int | None:
    """None, or ``value`` as a whole number of at least 1; else an ArgumentError."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise ArgumentError(f"{name} must be a positive whole number or None, got {value!r}.")
    if value is not None and value < 1:
        raise ArgumentError(f"{name} must be at least 1, got {value}; or None for all.")
    return None if value is None else int(value)


def _pixels(image: Any, name: str, size: int = 0) -> tuple[np.ndarray, dict]:
    """``(array, imshow keywords)`` of an image, ≤ ``size`` pixels a side; gray stays gray."""
    try:
        image = to_rgb(image) if isinstance(image, str) or hasattr(image, "__fspath__") else image
    except ImageLoadError as err:
        raise ImageLoadError(f"{name}: {err}") from None
    if isinstance(image, Image.Image) and image.mode not in ("L", "I", "I;16", "F", "RGB", "RGBA"):
        alpha = "A" in image.mode or "transparency" in image.info
        image = image.convert("L" if image.mode == "1" else "RGBA" if alpha else "RGB")
    array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or array.size == 0:
        raise ImageLoadError(f"{name} is empty or not pixel numbers; pass a PIL image or array.")
    array = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        hint = "H x W, H x W x 3 or 4; channels first? tensor.permute(1, 2, 0)"
        raise ImageLoadError(f"{name} has shape {array.shape}; pass {hint}.")
    if size and max(array.shape[:2]) > size:
        scale = size / max(array.shape[:2])
        array = zoom(array, (scale, scale, 1)[: array.ndim], order=1)
    if array.ndim == 3:
        return array, {}
    high = 255 if array.dtype == np.uint8 else 1 if 0 <= array.min() <= array.max() <= 1 else 0
    return array, {"cmap": "gray", "norm": Normalize(0, high) if high else None}


def _wrap(text: Any, width: int = LABEL_WRAP_WIDTH) -> str:
    return textwrap.fill(str(text), width) or str(text)


def plot_probability_bars(probs: Any, labels: Any, top_k: int | None = None, ax=None) -> Figure:
    """One image's label probabilities as horizontal bars, the largest at the top.

    ``probs``: one row of ``logits.softmax(dim=-1)``; ``labels``: the prompts, same order;
    ``top_k``: keep only the largest; ``ax``: draw into this Axes.

    Example:
        >>> fig = plot_probability_bars([0.1, 0.9], ["a brain MRI", "a chest X-ray"])
        >>> [t.get_text() for t in fig.axes[0].texts]
        ['0.900', '0.100']
    """
    probs = _probs(probs, ndim=1)
    labels = _labels(labels, len(probs), f"probs has {len(probs)}")
    k = min(_count(top_k, "top_k") or len(probs), len(probs))
    order = np.argsort(-probs, kind="stable")[:k]  # largest first; ties keep their order
    names = [_wrap(labels[i]) for i in order]
    lines = sum(name.count("\n") + 1 for name in names)
    fig, ax = _axes(ax, 7.0, max(1.8, 0.8 + 0.28 * lines + 0.12 * k))
    ys, values = np.arange(k)[::-1], probs[order].clip(0, 1)  # the largest at the top
    ax.barh(ys, values, height=0.7, color="#3b75af")
    for y, p in zip(ys, values, strict=True):
        inside = p > 0.82  # no room on the right: write the value inside the bar
        x, align, colour = (p - 0.01, "right", "white") if inside else (p + 0.01, "left", "black")
        ax.text(x, y, f"{p:.3f}", ha=align, va="center", color=colour, fontsize=9)
    ax.set_yticks(ys, names, fontsize=9)
    ax.set(xlim=(0.0, 1.0), ylim=(-0.6, k - 0.4), xlabel="probability")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_predictions(images, probs, labels, top_k: int | None = 5, titles=None) -> Figure:
    """Each image (path, PIL image or array) next to its top-k probability bars, one row each.

    Example:
        >>> fig = plot_predictions([xray], [[0.8, 0.2]], ["X-ray", "MRI"], titles=["xray"])
        >>> len(fig.axes)
        2
    """
    probs = _probs(probs, ndim=2)
    n, m = probs.shape
    labels = _labels(labels, m, f"each row of probs has {m}")
    k = min(_count(top_k, "top_k") or m, m)
    images = _listed(images, n, "images", f"probs has {n} rows")
    titles = [""] * n if titles is None else _listed(titles, n, "titles", f"there are {n} images")
    pixels = [_pixels(image, f"images[{i}]") for i, image in enumerate(images)]
    fig = _Figure(figsize=(11.0, max(2.6, 0.8 + 0.4 * k) * n), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False, width_ratios=[1.0, 1.6])
    for (left, right), (array, style), row, title in zip(axes, pixels, probs, titles, strict=True):
        left.imshow(array, **style)
        left.set_axis_off()
        left.set_title(str(title), fontsize=10)
        plot_probability_bars(row, labels, top_k=k, ax=right)
    return fig


def plot_confusion_matrix(confusion, *, normalize=False, ax=None, labels=None) -> Figure:
    """The confusion matrix (rows true) of an ``EvaluationResult``, of its ``.confusion``, or of
    square counts with ``labels``; ``normalize`` divides each row by its total.

    Example:
        >>> fig = plot_confusion_matrix([[5, 1], [2, 7]], labels=["normal", "pneumonia"])
        >>> [t.get_text() for t in fig.axes[0].texts]
        ['5', '1', '2', '7']
    """
    confusion = getattr(confusion, "confusion", confusion)  # an EvaluationResult
    counts = as_floats(confusion, "confusion")
    if counts.shape[0] != counts.shape[1] or (counts < 0).any():
        raise ArgumentError(f"confusion must be square, non-negative counts, not {counts.shape}.")
    if labels is None and not hasattr(confusion, "index"):
        raise PromptError("labels is missing: pass the class names, e.g. labels=['a', 'b'].")
    given, n = (confusion.index if labels is None else labels), len(counts)
    names = [str(x) for x in _labels(given, n, f"confusion has {n} rows", text=labels is not None)]
    totals = counts.sum(axis=1, keepdims=True)
    values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    if not normalize:
        values = counts.astype(int) if (counts == counts.round()).all() else counts
    fig, ax = _axes(ax, min(16.0, 3 + 0.75 * n), min(16.0, 2.5 + 0.6 * n))
    shown = ConfusionMatrixDisplay(values, display_labels=names)
    shown.plot(ax=ax, cmap="Blues", xticks_rotation=45, values_format=".2f" if normalize else None)
    for text in shown.text_[totals[:, 0] == 0].ravel() if normalize else []:
        text.set_text("–")  # a class without images
    ax.set_title("Confusion matrix (row-normalised)" if normalize else "Confusion matrix")
    return fig


def plot_probe_curve(result, zero_shot_accuracy=None, *, ax=None) -> Figure:
    """Accuracy of :func:`~mmkd_utils.tasks.probe.linear_probe` (mean ± std over seeds) against
    shots per class; ``zero_shot_accuracy`` (a number or ``EvaluationResult``): a dashed line.

    Example:
        >>> from types import SimpleNamespace
        >>> summary = pd.DataFrame({"shots": [1, 4, "all"], "mean_accuracy": [0.5, 0.7, 0.9]})
        >>> result = SimpleNamespace(summary=summary.assign(std=0.1), classes=("a", "b"))
        >>> plot_probe_curve(result, 0.6).axes[0].get_title()
        'Linear probe, 2 classes'
    """
    zero = getattr(zero_shot_accuracy, "accuracy", zero_shot_accuracy)
    valid = isinstance(zero, numbers.Real) and not isinstance(zero, bool) and 0 <= zero <= 1
    if zero is not None and not valid:
        raise ProbeError(f"zero_shot_accuracy={zero!r}: pass an accuracy between 0 and 1.")
    shots, summary = list(result.summary["shots"]), result.summary
    counted = [s for s in shots if s != "all"]
    last = 2.0 ** (math.floor(math.log2(max(counted))) + 1) if counted else 1.0
    xs = [last if s == "all" else float(s) for s in shots]  # "all": one doubling further
    fig, ax = _axes(ax, 6.0, 4.0)
    means, stds = summary["mean_accuracy"].to_numpy(float), summary["std"].to_numpy(float)
    ax.errorbar(xs, means, stds, marker="o", capsize=3, label="linear probe (mean ± std, seeds)")
    if zero is not None:
        ax.axhline(zero, linestyle="--", color="#c44e52", label=f"zero-shot ({zero:.3f})")
    ax.set(xscale="log", title=f"Linear probe, {len(result.classes)} classes")
    ax.set_xticks(xs, [str(s) for s in shots])  # "all" too, at its doubling
    ax.minorticks_off()
    ax.set(ylim=(0.0, 1.02), xlabel="training examples per class (shots)", ylabel="test accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def plot_benchmark(frame: pd.DataFrame, metric: str = "auc", ax=None) -> Figure:
    """A :func:`~mmkd_utils.tasks.medmnist.results_frame`'s ``metric``: a point and its 95%
    interval per result, a column per dataset, a colour per model (probes: per model, method
    and shots; pass one seed). For AUC a dotted line marks chance, 0.5.

    Example:
        >>> frame = pd.DataFrame({"model": ["m1", "m2"] * 2, "dataset": ["a", "a", "b", "b"],
        ...     "metric": "auc", "value": [0.8, 0.7, 0.6, 0.9], "low": [0.7, 0.6, 0.5, 0.8],
        ...     "high": [0.9, 0.8, 0.7, 1.0]})
        >>> ax = plot_benchmark(frame).axes[0]
        >>> [t.get_text() for t in ax.get_xticklabels()], len(ax.containers)
        (['a', 'b'], 2)
    """
    need = {"model", "dataset", "metric", "value", "low", "high"}
    if not isinstance(frame, pd.DataFrame) or need - set(frame):
        raise ArgumentError(f"frame must be a table of results_frame() with columns {need}.")
    rows = frame[frame["metric"] == metric]
    if rows.empty:
        raise ArgumentError(f"metric={metric!r}: the frame has {sorted(set(frame['metric']))}.")
    how = rows.get("method", pd.Series("zero-shot", rows.index)).astype(str)
    label = rows["model"].astype(str) + ", " + how + " k=" + rows.get("shots", how).astype(str)
    series = rows["model"].astype(str).where(how == "zero-shot", label)
    datasets, names = list(dict.fromkeys(rows["dataset"])), list(dict.fromkeys(series))
    fig, ax = _axes(ax, max(5.0, 2.5 + 1.1 * len(datasets)), 4.0)
    for k, name in enumerate(names):
        part = rows[series == name]
        x = part["dataset"].map(datasets.index).to_numpy(float)
        v, low, high = (part[c].to_numpy(float) for c in ("value", "low", "high"))
        err = np.clip([v - low, high - v], 0, None)  # a point outside its interval: no bar
        x += (k - (len(names) - 1) / 2) * 0.7 / len(names)
        ax.errorbar(x, v, err, fmt="o", capsize=3, color=colormaps["tab10"].colors[k % 10],
                    label=name)  # fmt: skip
    if metric == "auc":
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (AUC 0.5)")
    ax.set_xticks(range(len(datasets)), datasets, rotation=30 if len(datasets) > 4 else 0)
    ax.set(xlim=(-0.5, len(datasets) - 0.5), xlabel="dataset", ylabel=metric)
    ax.set_title(f"{metric}: point estimate and 95% bootstrap interval")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return fig


def plot_few_shot(frame: pd.DataFrame, metric: str = "auc", ax=None) -> Figure:
    """The few-shot curve of one dataset from a ``results_frame``: each probe's ``metric`` per
    seed (points, 95% interval bars), the mean over seeds (line), shots on a log-2 axis with
    "all" one doubling right of the largest k; zero-shot rows: a dashed line and its interval
    as a band. A colour per model.

    Example:
        >>> probes = pd.DataFrame({"model": "m", "dataset": "a", "method": "linear probe",
        ...     "shots": [1, 1, 4, 4, "all", "all"], "seed": [0, 1] * 3, "metric": "auc",
        ...     "value": [0.6, 0.7, 0.8, 0.8, 0.9, 0.9], "low": 0.5, "high": 1.0})
        >>> zero = pd.DataFrame({"model": ["m"], "dataset": "a", "method": "zero-shot",
        ...     "shots": None, "seed": None, "metric": "auc", "value": 0.75, "low": 0.7,
        ...     "high": 0.8})
        >>> ax = plot_few_shot(pd.concat([probes, zero])).axes[0]
        >>> [t.get_text() for t in ax.get_xticklabels()], ax.get_xticks().tolist()
        (['1', '4', 'all'], [1.0, 4.0, 8.0])
    """
    need = {"model", "dataset", "method", "shots", "seed", "metric", "value", "low", "high"}
    if not isinstance(frame, pd.DataFrame) or need - set(frame):
        raise ArgumentError(f"frame must be a table of results_frame() with columns {need}.")
    rows = frame[frame["metric"] == metric]
    probes = rows[rows["method"] != "zero-shot"]
    if probes.empty or rows["dataset"].nunique() != 1:
        found = f"{len(probes)} probe rows of {metric!r}, datasets {sorted(set(frame['dataset']))}"
        raise ArgumentError(f"frame has {found}: pass few_shot_medmnist results of one dataset.")
    counted = sorted({int(s) for s in probes["shots"] if s != "all"})
    last = 2.0 ** (math.floor(math.log2(max(counted, default=1))) + 1)  # where "all" stands
    ticks = counted + ["all"] * any(probes["shots"] == "all")
    fig, ax = _axes(ax, 7.5, 4.0)
    for k, model in enumerate(dict.fromkeys(rows["model"])):
        colour, mine = colormaps["tab10"].colors[k % 10], probes[probes["model"] == model]
        x = np.array([last if s == "all" else float(s) for s in mine["shots"]])
        v, low, high = (mine[c].to_numpy(float) for c in ("value", "low", "high"))
        rank = mine["seed"].rank(method="dense").to_numpy(float)  # seeds side by side
        err, label = np.clip([v - low, high - v], 0, None), f"{model}: each seed"
        ax.errorbar(x * 2 ** (0.05 * (rank - rank.mean())), v, err, fmt="o", ms=4, alpha=0.45,
                    elinewidth=1, color=colour, label=label)  # fmt: skip
        mean = pd.Series(v).groupby(x).mean()
        ax.plot(mean.index, mean.to_numpy(), "-", color=colour, label=f"{model}: mean of seeds")
        for _, zero in rows[(rows["model"] == model) & (rows["method"] == "zero-shot")].iterrows():
            ax.axhline(zero["value"], color=colour, linestyle="--", label=f"{model}: zero-shot")
            ax.axhspan(zero["low"], zero["high"], color=colour, alpha=0.12, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks([last if s == "all" else s for s in ticks], [str(s) for s in ticks])
    ax.minorticks_off()
    ax.set(xlabel="training images per class (shots)", ylabel=f"test {metric}")
    ax.set_title(f"{rows['dataset'].iloc[0]}: linear probes (95% intervals) and zero-shot")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return fig


def plot_model_comparison(table: pd.DataFrame, *, image: str | int | None = None) -> Figure:
    """Grouped bars of a :func:`~mmkd_utils.tasks.compare.compare_models` table: a panel per
    image (or only ``image``, a name or position), a bar per prompt and model; hatched: top-1.

    Example:
        >>> table = pd.DataFrame({"image": ["a.png"] * 2, "prompt": ["CT", "MRI"],
        ...                       "p_m1": [0.8, 0.2], "p_m2": [0.4, 0.6], "agreement": False})
        >>> [len(ax.patches) for ax in plot_model_comparison(table).axes]
        [4]
    """
    models, images = model_columns(table), list(dict.fromkeys(table["image"]))
    if isinstance(image, numbers.Integral) and not isinstance(image, bool):
        if not -len(images) <= image < len(images):
            raise ArgumentError(f"image={image} is out of range: the table has {len(images)}.")
        image = images[image]
    if image is not None and image not in images:
        raise ArgumentError(f"image={image!r} is not in the table; its images are {images[:9]}.")
    panel = max(2.0, 0.9 + 0.16 * len(models) * len(table) / len(images))
    images = images if image is None else [image]
    fig = _Figure(figsize=(9.0, panel * len(images) + 0.5), layout="constrained")
    palette, height = colormaps["tab10"].colors, 0.8 / len(models)
    verdict = {True: " — top-1 the same for every model", False: " — top-1 differs"}
    panels = fig.subplots(len(images), 1, squeeze=False)[:, 0]
    for ax, name in zip(panels, images, strict=True):
        group = table[table["image"] == name]
        ys = np.arange(len(group))[::-1]  # the first prompt at the top
        for k, model in enumerate(models):
            values = group[f"p_{model}"].to_numpy(float).clip(0, 1)
            y = ys + 0.4 - height * (k + 0.5)
            bars = ax.barh(y, values, 0.9 * height, color=palette[k % 10], label=model)
            bars[int(values.argmax())].set_hatch("//")  # the model's top-1 prompt
        agree = group["agreement"].iloc[0] if "agreement" in group else None
        title = f"{name}{verdict.get(agree, '')}"
        ax.set_yticks(ys, [_wrap(prompt) for prompt in group["prompt"]], fontsize=9)
        ax.set(xlim=(0, 1), xlabel="probability (hatched: each model's top-1)", title=title)
    handles, names = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside upper center", ncols=len(models), frameon=False)
    return fig


def plot_embedding_map(
    embeddings, labels=None, *, method="pca", thumbnails=None, ax=None, random_state=0,
    perplexity=None,
) -> Figure:  # fmt: skip
    """``[N, D]`` embeddings on a 2-D map (:func:`~mmkd_utils.tasks.maps.embed_2d`), one colour
    per label; ``thumbnails`` (one image per row) are drawn at their points.

    Example:
        >>> points = np.random.default_rng(0).normal(size=(6, 32))
        >>> fig = plot_embedding_map(points, ["CT", "MRI", "CT", "MRI", "X-ray", "CT"])
        >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        ['CT', 'MRI', 'X-ray']
    """
    array = as_floats(embeddings, "embeddings")
    n, rows = len(array), f"embeddings has {len(array)} rows"
    names = [None] * n if labels is None else _labels(labels, n, rows, text=False)
    thumbs = [] if thumbnails is None else _listed(thumbnails, n, "thumbnails", rows)
    thumbs = [_pixels(image, f"thumbnails[{i}]", THUMBNAIL_SIZE) for i, image in enumerate(thumbs)]
    coords = embed_2d(array, method, random_state, perplexity=perplexity)
    fig, ax = _axes(ax, 6.5 if labels is None else 8.5, 6.0)
    unique = list(dict.fromkeys(names))
    palette = colormaps["tab10" if len(unique) <= 10 else "tab20"].colors
    colours = {value: palette[i % len(palette)] for i, value in enumerate(unique)}
    for i, value in enumerate(unique):
        xy = coords[[name == value for name in names]].T
        marker = "os^Dv"[i // len(palette) % 5]  # more labels than colours: other shapes
        label = None if labels is None else str(value)
        ax.scatter(*xy, s=24, alpha=0.85, color=colours[value], marker=marker, label=label)
    if labels is not None:
        columns = math.ceil(len(unique) / 25)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, ncols=columns)
    for (pixels, style), xy, name in zip(thumbs, coords, names, strict=False):
        frame = {"edgecolor": colours[name], "linewidth": 1.5}
        ax.add_artist(AnnotationBbox(OffsetImage(pixels, **style), xy, pad=0.1, bboxprops=frame))
    title = EMBEDDING_METHODS[method.lower().replace("-", "")]
    if title == "PCA":
        share = 100 * coords.var(axis=0) / array.var(axis=0).sum()
        ax.set(xlabel=f"PC 1 ({share[0]:.0f}% of variance)", ylabel=f"PC 2 ({share[1]:.0f}%)")
    else:  # t-SNE and UMAP axes have no units
        ax.set(xlabel=f"{title} 1", ylabel=f"{title} 2", xticklabels=[], yticklabels=[])
    ax.set_title(f"{title} map of {n} embeddings")
    return fig


def plot_similarity_heatmap(
    image_embeddings, text_embeddings, image_labels, text_labels, *, probabilities=False,
    logit_scale=None, ax=None,
) -> Figure:  # fmt: skip
    """Image × text cosine similarities (or, with ``probabilities`` and the model's
    ``logit_scale``, each row's softmax) as an annotated heat map; raw features work too.

    Example:
        >>> fig = plot_similarity_heatmap([[1.0, 0], [0.6, 0.8]], [[2.0, 0], [0, 3.0]],
        ...                               ["a.png", "b.png"], ["CT", "MRI"])
        >>> [t.get_text() for t in fig.axes[0].texts]
        ['1.00', '0.00', '0.60', '0.80']
    """
    images = as_floats(image_embeddings, "image_embeddings")
    texts = as_floats(text_embeddings, "text_embeddings")
    (n, d), (m, e) = images.shape, texts.shape
    if d != e:
        problem = f"image_embeddings has {d} dimensions per row but text_embeddings has {e}"
        raise ArgumentError(f"{problem}; embed both with the same model.")
    rows = _labels(image_labels, n, f"image_embeddings has {n} rows", "image_labels", False)
    cols = _labels(text_labels, m, f"text_embeddings has {m} rows", "text_labels", False)
    if probabilities and logit_scale is None:
        raise ArgumentError("probabilities=True needs logit_scale, e.g. model.logit_scale.")
    if logit_scale is not None and not probabilities:
        raise ArgumentError("logit_scale is only used with probabilities=True.")
    for name, matrix in (("image_embeddings", images), ("text_embeddings", texts)):
        zero = np.flatnonzero(~matrix.any(axis=1))
        if len(zero):
            raise ArgumentError(f"{name}[{zero[0]}] is all zeros, so it has no cosine; drop it.")
    values, title = cosine_similarity(images, texts), "Cosine similarity of images and texts"
    if probabilities:
        scale = logit_scale.item() if hasattr(logit_scale, "item") else logit_scale
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise ArgumentError(f"logit_scale must be one positive number, got {scale!r}.")
        if not (math.isfinite(scale) and scale > 0):
            raise ArgumentError(f"logit_scale must be a finite number above 0, got {scale!r}.")
        values = softmax(scale * values, axis=1)
        title = f"Probabilities: softmax over texts of {scale:.3g} · cosine, per image"
    width = 3 + 0.8 * m + 0.08 * max(len(str(r)) for r in rows)
    fig, ax = _axes(ax, min(18.0, width), min(18.0, 2.5 + 0.45 * n))
    low, high = (0, 1) if probabilities else (values.min(), max(values.max(), values.min() + 1e-6))
    image = ax.imshow(values, cmap="viridis", vmin=low, vmax=high, aspect="auto")
    fig.colorbar(image, ax=ax, label="probability" if probabilities else "cosine similarity")
    for (i, j), value in np.ndenumerate(values):
        dark = np.dot(image.cmap(image.norm(value))[:3], (0.299, 0.587, 0.114)) < 0.5
        colour, size = "white" if dark else "black", 9 if max(n, m) <= 12 else 7
        text = f"{round(value, 2) + 0.0:.2f}"  # never "-0.00"
        ax.text(j, i, text, ha="center", va="center", color=colour, size=size)
    wrapped = [_wrap(c, COLUMN_WRAP_WIDTH) for c in cols]
    ax.set_xticks(range(m), wrapped, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), [_wrap(r) for r in rows])
    ax.set(xlabel="text", ylabel="image", title=title)
    return fig


def plot_gallery(results, *, k=None, images_per_row=None, title_column="query") -> Figure:
    """Retrieval results (:func:`~mmkd_utils.tasks.retrieval.search`): a block of images per
    query, sorted by rank, each titled ``#rank · score`` and its label.

    Example:
        >>> results = pd.DataFrame({"query": ["a chest X-ray"] * 2, "rank": [1, 2],
        ...                         "path": [xray, xray], "score": [0.31, 0.27]})
        >>> [ax.get_title() for ax in plot_gallery(results).axes]
        ['#1 · 0.310', '#2 · 0.270']
    """
    if not isinstance(results, pd.DataFrame):
        raise ArgumentError(f"results must be the pandas DataFrame of search(), not {results!r:.9}")
    needed = (title_column, "rank", "path", "score")
    missing = ", ".join(repr(c) for c in needed if c not in results)
    if missing:
        raise ArgumentError(f"results is missing the column(s) {missing}; or set title_column.")
    if results.empty:
        raise ArgumentError("results is empty: the search returned no images to show.")
    k, per_row = _count(k, "k"), _count(images_per_row, "images_per_row")
    scores = as_floats(results["score"], "results['score']", ndim=1)
    table = results.assign(score=scores).reset_index(drop=True)
    groups = table.groupby(title_column, sort=False, dropna=False)
    groups = [(query, group.sort_values("rank", kind="stable")[:k]) for query, group in groups]
    cols = min(per_row or len(table), max(len(group) for _, group in groups))
    heights = [2.3 * math.ceil(len(group) / cols) + 0.4 for _, group in groups]
    fig = _Figure(figsize=(max(4.0, 2.2 * cols), sum(heights)), layout="constrained")
    blocks = fig.subfigures(len(groups), 1, squeeze=False, height_ratios=heights)[:, 0]
    for block, (query, group) in zip(blocks, groups, strict=True):
        block.suptitle(_wrap(query, max(30, 18 * cols)), x=0.01, ha="left", fontweight="bold")
        for j, (index, row) in enumerate(group.iterrows()):
            name = f"results['path'][{index}]"
            if isinstance(row["path"], numbers.Integral):
                raise ImageLoadError(f"{name} is the row number {row['path']}: search(paths=...)")
            array, style = _pixels(row["path"], name, GALLERY_IMAGE_SIZE)
            ax = block.add_subplot(math.ceil(len(group) / cols), cols, j + 1)
            ax.imshow(array, **style)
            ax.set_axis_off()
            label = row.get("label")
            label = "" if pd.isna(label) else "\n" + textwrap.shorten(str(label), 40)
            ax.set_title(f"#{row['rank']:g} · {row['score']:.3f}{label}", fontsize=9)
    return fig


def plot_saliency(result, *, alpha: float = 0.5) -> Figure:
    """An :func:`~mmkd_utils.tasks.saliency.explain` result on one figure: the image, then
    each prompt's map over it (0–1 per map; clear where the preprocessing cut the image
    away; dashed: the crop the model sees); titles: the prompt's probability and the map's range
    before scaling (``result.ranges``).

    Example:
        >>> from mmkd_utils.tasks.saliency import explain
        >>> result = explain(clip, xray, ["A chest X-ray.", "A brain MRI."], method="attention")
        >>> fig = plot_saliency(result)
        >>> [ax.get_title().split("\\n")[0] for ax in fig.axes[:3]]
        ['image, 482 × 512 px', 'A chest X-ray.', 'A brain MRI.']
    """
    maps, prompts = np.asarray(result.original_maps, dtype=float), list(result.prompts)
    probs = np.asarray(result.probabilities, dtype=float)
    if maps.ndim != 3 or not len(maps) == len(prompts) == len(probs):
        raise ArgumentError("result must be what explain() returns: a map and a probability "
                            "for each prompt.")  # fmt: skip
    (height, width), (left, top, right, bottom) = maps.shape[1:], result.crop_box
    step = math.ceil(max(height, width) / GALLERY_IMAGE_SIZE)  # every step-th pixel shown
    array, style = _pixels(np.asarray(result.image.reduce(step)), "result.image")
    maps = maps[:, ::step, ::step]
    fig = _Figure(figsize=(3.2 * len(prompts) + 4.0, 3.9))  # no layout engine: twice as fast
    axes = fig.subplots(1, len(prompts) + 1, squeeze=False, gridspec_kw={"wspace": 0.08})[0]
    for k, ax in enumerate(axes):
        ax.imshow(array, extent=(0, width, height, 0), **style)
        ax.set_axis_off()
        if k == 0:
            ax.set_title(f"image, {width} × {height} px", fontsize=9)
            continue
        shown = ax.imshow(maps[k - 1], cmap="inferno", vmin=0, vmax=1, alpha=alpha,
                          extent=(0, width, height, 0))  # fmt: skip
        ax.plot([left, right, right, left, left], [top, top, bottom, bottom, top], "--",
                color="white", linewidth=1)  # fmt: skip
        low, high = result.ranges[k - 1]
        ax.set_title(f"{_wrap(prompts[k - 1], 30)}\np = {probs[k - 1]:.3f}, range "
                     f"{low:.2g} to {high:.2g}", fontsize=9)  # fmt: skip
    fig.colorbar(shown, ax=list(axes[1:]), shrink=0.8, label=f"{result.method_name}, 0–1 per map")
    return fig


def plot_sanity_check(table: pd.DataFrame) -> Figure:
    """A :func:`~mmkd_utils.tasks.saliency.sanity_check` table: each step's map, titled by what
    was randomised and its Spearman ρ with the trained model's map; below, ρ per step.

    Example:
        >>> from mmkd_utils.tasks.saliency import sanity_check
        >>> fig = plot_sanity_check(sanity_check(clip, xray, "A chest X-ray.", method="attention"))
        >>> [ax.get_title().split("\\n")[0] for ax in fig.axes[:3]]
        ['none', 'head', 'head, block 2']
    """
    need = {"step", "randomised", "spearman", "map"}
    if not isinstance(table, pd.DataFrame) or need - set(table) or table.empty:
        raise ArgumentError(f"table must be the DataFrame of sanity_check(), columns {need}.")
    cols = min(len(table), 7)
    rows = math.ceil(len(table) / cols)
    fig = _Figure(figsize=(max(6.0, 1.9 * cols), 2.1 * rows + 2.8), layout="constrained")
    maps, curve = fig.subfigures(2, 1, height_ratios=[2.1 * rows, 2.8])
    for k, (_, row) in enumerate(table.iterrows()):
        ax = maps.add_subplot(rows, cols, k + 1)
        ax.imshow(row["map"], cmap="inferno", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(f"{row['randomised']}\nρ = {row['spearman']:.2f}", fontsize=8)
    ax = curve.add_subplot()
    ax.plot(table["step"], table["spearman"], "o-")
    ax.axhline(0, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(table["step"])
    ax.set(xlabel="step: the head, the blocks from the top, then everything",
           ylabel="Spearman ρ (patches) with the trained map")  # fmt: skip
    ax.set(ylim=(-1.05, 1.05), title="Cascading randomisation (Adebayo et al. 2018)")
    return fig
