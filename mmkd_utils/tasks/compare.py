"""Several models, the same images and prompts: one table of probabilities, and its plot.

:func:`compare_models` runs each model's own ``zero_shot`` on the same images and prompts
(or on the same task: each model builds its own classifier of the same classes) and puts
the probabilities side by side; :func:`summarize_comparison` keeps one row per image;
:func:`plot_model_comparison` draws grouped bars, one bar per model. The models can be
any :class:`~mmkd_utils.model.loading.MMKDModel`, e.g. those of
:func:`~mmkd_utils.model.registry.list_models`.

The probabilities of different models are not calibrated against each other: each model
has its own temperature (``logit_scale``) and embedding space, so compare what each
model ranks first, not how sure it is. A handful of images shows how models differ, not
which is better; for that, evaluate each on a labelled folder
(:func:`~mmkd_utils.tasks.evaluation.evaluate_folder`).

pandas and matplotlib are imported when the functions run.

Introduced in ``notebooks/07_compare_models.ipynb``.

Example:
    >>> from mmkd_utils import compare_models, load_model
    >>> models = {name: load_model(name) for name in ["mmkd-clip-b16", "biomedclip"]}
    ... # doctest: +SKIP
    >>> table = compare_models(models, ["xray.png"], ["A chest X-ray.", "A brain MRI."])
    ... # doctest: +SKIP
    >>> list(table.columns)  # doctest: +SKIP
    ['image', 'prompt', 'p_mmkd-clip-b16', 'p_biomedclip', 'top1_mmkd-clip-b16',
     'top1_biomedclip', 'agreement']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmkd_utils.errors import PromptError
from mmkd_utils.images.decode import ImageInput, to_rgb
from mmkd_utils.model.classifier import ZeroShotClassifier
from mmkd_utils.prompts import check_prompts

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mmkd_utils.model.loading import MMKDModel

#: Prefix of the probability column of each model (``p_<model>``) ...
PROB_PREFIX = "p_"
#: ... and of its top-1 column (``top1_<model>``).
TOP1_PREFIX = "top1_"
#: Bar colours of the models, in order (the first is the house blue).
MODEL_COLORS = ("#3b75af", "#e1812c", "#3a923a", "#c03d3e", "#9372b2", "#845b53")

__all__ = [
    "MODEL_COLORS",
    "PROB_PREFIX",
    "TOP1_PREFIX",
    "compare_models",
    "model_columns",
    "plot_model_comparison",
    "summarize_comparison",
]


# --------------------------------------------------------------------------- inputs


def _named_models(models: Mapping[str, MMKDModel] | Sequence[MMKDModel]) -> dict[str, Any]:
    """``{name: model}`` from a mapping, or from a list (names from ``model_name``)."""
    if isinstance(models, Mapping):
        named = dict(models)
    elif isinstance(models, (str, bytes)) or not isinstance(models, Sequence):
        raise TypeError(
            f"models must be a dict {{name: model}} or a list of models, not "
            f"{type(models).__name__}; e.g. {{'mmkd-clip-b16': load_model('mmkd-clip-b16')}}."
        )
    else:
        named = {}
        for i, model in enumerate(models):
            name = getattr(model, "model_name", None) or f"model_{i}"
            if name in named:
                raise ValueError(
                    f"Two models in the list are called {name!r}; pass a dict "
                    "{name: model} with a different name for each."
                )
            named[name] = model
    if not named:
        raise ValueError("models is empty: pass at least one model.")
    for name, model in named.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Model names must be non-empty strings, got {name!r}.")
        if not callable(getattr(model, "zero_shot", None)):
            raise TypeError(
                f"models[{name!r}] is a {type(model).__name__}, not a model with zero_shot(); "
                "pass what load_model() returns."
            )
    return named


def _image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "mode"):
        return [images]
    items = list(images)
    if not items:
        raise ValueError("images is empty: pass at least one image.")
    return items


def _image_names(items: list[ImageInput], image_names: Sequence[str] | None) -> list[str]:
    if image_names is None:
        names = [
            Path(image).name if isinstance(image, (str, os.PathLike)) else f"image {i}"
            for i, image in enumerate(items)
        ]
    else:
        if isinstance(image_names, str):
            raise ValueError("image_names must be a list with one name per image, not a string.")
        names = [str(name) for name in image_names]
        if len(names) != len(items):
            raise ValueError(
                f"image_names has {len(names)} entries for {len(items)} images; pass one "
                "name per image."
            )
    seen: set[str] = set()
    twice = [n for n in names if n in seen or seen.add(n)]
    if twice:
        raise ValueError(
            f"Two images are called {twice[0]!r} (images from different folders?); pass "
            "image_names= with a different name for each image."
        )
    return names


def _as_task(prompts: Any, templates: Sequence[str] | None) -> bool:
    """True when ``prompts`` (with ``templates``) describes classes rather than prompts."""
    if isinstance(prompts, ZeroShotClassifier):
        raise PromptError(
            "A ZeroShotClassifier belongs to the model that built it and cannot be shared; "
            "pass its task name or its classes (and templates) so that each model builds "
            "its own."
        )
    return isinstance(prompts, (str, Mapping)) or templates is not None


# --------------------------------------------------------------------------- table


def compare_models(
    models: Mapping[str, MMKDModel] | Sequence[MMKDModel],
    images: ImageInput | Sequence[ImageInput],
    prompts: str | Sequence[str] | Mapping[str, Sequence[str]],
    *,
    templates: Sequence[str] | None = None,
    image_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Zero-shot probabilities of several models side by side, one row per image × prompt.

    Args:
        models: ``{name: model}``, or a list of models (named by their ``model_name``,
            which :func:`~mmkd_utils.load_model` sets for registered models).
        images: Paths, PIL images or numpy arrays (read once, then given to every model).
        prompts: A list of prompts (each model embeds them); or classes, built by each
            model with :meth:`~mmkd_utils.model.loading.MMKDModel.classifier`: a task name of
            the prompt banks (``"chest_xray/rsna_pneumonia"``), a mapping
            ``{class: [synonyms]}``, or a list of class names together with
            ``templates``. The ``prompt`` column then holds the class names.
        templates: Templates with ``{}`` for the class name (see ``classifier``).
        image_names: One name per image for the ``image`` column (default: file names,
            or ``"image <i>"``); they must be unique.

    Returns:
        A DataFrame with columns ``image``, ``prompt``, ``p_<model>`` for every model
        (that model's own ``zero_shot`` probability: each image's values sum to 1 per
        model), then, per image and repeated on each of its rows, ``top1_<model>`` (the
        prompt the model ranks first) and ``agreement`` (True when every model ranks the
        same prompt first). Rows are in image order, then prompt order.

    Raises:
        ValueError / TypeError: empty or malformed ``models``, ``images`` or names.
        PromptError: bad prompts, or a ``ZeroShotClassifier`` (it belongs to one model).

    Example:
        >>> table = compare_models({"a": clip_a, "b": clip_b}, ["xray.png", "mri.jpg"],
        ...                        ["A chest X-ray.", "A brain MRI."])  # doctest: +SKIP
        >>> table.shape  # doctest: +SKIP
        (4, 7)
    """
    import pandas as pd

    named = _named_models(models)
    items = _image_list(images)
    names = _image_names(items, image_names)
    rgb = [to_rgb(image) for image in items]  # decoded once, shared by every model
    task = _as_task(prompts, templates)
    if not task:
        prompts = check_prompts(prompts)

    labels: list[str] | None = None
    probs: dict[str, np.ndarray] = {}
    for name, model in named.items():
        if task:
            classifier = model.classifier(prompts, templates)
            model_labels, target = list(classifier.class_names), classifier
        else:
            model_labels, target = list(prompts), prompts
        if labels is None:
            labels = model_labels
        elif model_labels != labels:  # pragma: no cover - same task, same classes
            raise PromptError(f"Model {name!r} built other classes: {model_labels}.")
        probs[name] = model.zero_shot(rgb, target).detach().cpu().double().numpy()
    assert labels is not None

    n_images, n_labels = len(names), len(labels)
    table = pd.DataFrame(
        {
            "image": np.repeat(names, n_labels),
            "prompt": np.tile(np.asarray(labels, dtype=object), n_images),
        }
    )
    for name, p in probs.items():
        table[PROB_PREFIX + name] = p.reshape(-1)
    top1 = {name: [labels[j] for j in p.argmax(axis=1)] for name, p in probs.items()}
    for name, firsts in top1.items():
        table[TOP1_PREFIX + name] = np.repeat(np.asarray(firsts, dtype=object), n_labels)
    agree = [len({top1[name][i] for name in top1}) == 1 for i in range(n_images)]
    table["agreement"] = np.repeat(agree, n_labels)
    table.attrs["models"] = list(named)
    return table


def model_columns(table: pd.DataFrame) -> list[str]:
    """The model names of a :func:`compare_models` table, in column order.

    Example:
        >>> model_columns(table)  # doctest: +SKIP
        ['mmkd-clip-b16', 'unimed-clip-b16', 'biomedclip']
    """
    missing = [c for c in ("image", "prompt") if c not in getattr(table, "columns", ())]
    models = [
        str(c)[len(PROB_PREFIX) :]
        for c in getattr(table, "columns", ())
        if str(c).startswith(PROB_PREFIX)
    ]
    if missing or not models:
        raise ValueError(
            "table must be what compare_models() returned: columns 'image', 'prompt' and "
            f"one 'p_<model>' per model (missing: {missing or ['p_<model>']})."
        )
    return models


def summarize_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """One row per image: each model's top-1 prompt and its probability, and ``agreement``.

    Columns: ``top1_<model>`` and ``p_top1_<model>`` for every model, then ``agreement``;
    the index is the image name.

    Example:
        >>> summarize_comparison(table)  # doctest: +SKIP
                  top1_a          p_top1_a  top1_b          p_top1_b  agreement
        image
        xray.png  A chest X-ray.  0.97      A chest X-ray.  0.88      True
    """
    import pandas as pd

    models = model_columns(table)
    rows = []
    for image, group in table.groupby("image", sort=False):
        row: dict[str, Any] = {"image": image}
        for name in models:
            column = group[PROB_PREFIX + name].to_numpy()
            best = int(np.argmax(column))
            row[TOP1_PREFIX + name] = group["prompt"].iloc[best]
            row[PROB_PREFIX + TOP1_PREFIX + name] = float(column[best])
        row["agreement"] = len({row[TOP1_PREFIX + name] for name in models}) == 1
        rows.append(row)
    return pd.DataFrame(rows).set_index("image")


# --------------------------------------------------------------------------- plot


def _draw_panel(ax: Axes, group: pd.DataFrame, models: list[str], title: str) -> None:
    from mmkd_utils.plotting import _wrap

    labels = list(group["prompt"])
    n_labels, n_models = len(labels), len(models)
    height = 0.8 / n_models
    ys = np.arange(n_labels)[::-1].astype(float)  # the first prompt at the top
    for k, name in enumerate(models):
        values = np.clip(group[PROB_PREFIX + name].to_numpy(dtype=float), 0.0, 1.0)
        offset = 0.4 - height * (k + 0.5)  # first model on top within each group
        ax.barh(
            ys + offset,
            values,
            height=height * 0.92,
            color=MODEL_COLORS[k % len(MODEL_COLORS)],
            label=name,
        )
        best = int(np.argmax(values))  # mark each model's top-1 prompt
        inside = values[best] > 0.85  # no room on the right: write inside the bar
        ax.text(
            values[best] + (-0.01 if inside else 0.01),
            ys[best] + offset,
            "top-1 ▶" if inside else "◀ top-1",
            va="center",
            ha="right" if inside else "left",
            fontsize=7,
            color="white" if inside else MODEL_COLORS[k % len(MODEL_COLORS)],
        )
    ax.set_yticks(ys)
    ax.set_yticklabels([_wrap(label) for label in labels], fontsize=9)
    ax.set_ylim(-0.6, n_labels - 0.4)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("probability")
    ax.set_title(title, fontsize=10)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)


def plot_model_comparison(table: pd.DataFrame, *, image: str | int | None = None) -> Figure:
    """Grouped bars per image: the prompts on the y axis, one bar per model.

    Draws the table of :func:`compare_models`: one panel per image (or only ``image``,
    given by name or position), and in each panel one group of bars per prompt, one bar
    per model, coloured as in the legend (above the panels); each model's top-1 prompt is
    marked. The panel title says whether the models agree on the top-1 prompt.
    Probabilities of different models are not calibrated against each other: read the
    ranking, not the heights.

    Also available as :func:`mmkd_utils.plotting.plot_model_comparison` (a lazy
    re-export). As every plot of :mod:`mmkd_utils.plotting`, the figure is built without
    pyplot (nothing is left open) and shows itself in Jupyter.

    Returns:
        The figure: ``n_images × n_prompts × n_models`` bars.

    Raises:
        ValueError: ``table`` is not a comparison table, or ``image`` is not one of its
            images.

    Example:
        >>> fig = plot_model_comparison(table, image="xray.png")  # doctest: +SKIP
        >>> fig.savefig("comparison.png")  # doctest: +SKIP
    """
    from mmkd_utils.plotting import _line_count, _NotebookFigure

    models = model_columns(table)
    images = list(dict.fromkeys(table["image"]))
    if image is not None:
        if isinstance(image, (int, np.integer)) and not isinstance(image, bool):
            if not -len(images) <= int(image) < len(images):
                raise ValueError(f"image={image} is out of range: the table has {len(images)}.")
            images = [images[int(image)]]
        elif image in images:
            images = [image]
        else:
            shown = ", ".join(repr(i) for i in images[:10])
            raise ValueError(f"image={image!r} is not in the table; its images are {shown}.")
    groups = [table[table["image"] == name] for name in images]
    heights = [
        max(2.0, 0.9 + 0.22 * _line_count(list(g["prompt"])) + 0.16 * len(g) * len(models))
        for g in groups
    ]
    fig = _NotebookFigure(figsize=(9.0, sum(heights) + 0.5), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, name, group in zip(axes, images, groups, strict=True):
        title = str(name)
        if "agreement" in group.columns:
            agree = bool(group["agreement"].iloc[0])
            title += " — top-1 " + ("the same for every model" if agree else "differs")
        _draw_panel(ax, group, models, title)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside upper center", ncols=len(models), frameon=False)
    return fig
