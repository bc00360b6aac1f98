"""Several models, the same images and prompts: one table of zero-shot probabilities.

Probabilities of different models are not calibrated against each other (each has its own
``logit_scale``): compare what each ranks first, not how sure it is. Used in notebook 07;
the plot is :func:`mmkd_utils.plotting.plot_model_comparison`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmkd_utils.errors import ArgumentError, ArgumentTypeError, PromptError
from mmkd_utils.images.decode import to_rgb
from mmkd_utils.model.classifier import ZeroShotClassifier
from mmkd_utils.prompts import check_prompts

#: Prefixes of each model's probability column (``p_<model>``) and top-1 column.
PROB_PREFIX, TOP1_PREFIX = "p_", "top1_"


def _named_models(models: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """``{name: model}`` from a mapping, or from a list (named by their ``model_name``)."""
    if isinstance(models, (str, bytes)) or not isinstance(models, (Mapping, Sequence)):
        raise ArgumentTypeError(
            f"models is a {type(models).__name__}: pass a dict {{name: model}} or a list of models."
        )
    if not isinstance(models, Mapping):
        names = [getattr(m, "model_name", None) or f"model_{i}" for i, m in enumerate(models)]
        if len(set(names)) < len(names):
            raise ArgumentError(
                f"Models share a name ({names}): pass a dict with a different name for each."
            )
        models = dict(zip(names, models, strict=True))
    if not models:
        raise ArgumentError("models is empty: pass at least one model.")
    for name, model in models.items():
        if not isinstance(name, str) or not name.strip():
            raise ArgumentError(f"Model name {name!r}: name each model with a non-empty string.")
        if not callable(getattr(model, "zero_shot", None)):
            raise ArgumentTypeError(f"models[{name!r}] has no zero_shot(): pass a loaded model.")
    return dict(models)


def _image_names(images: Any, image_names: Sequence[str] | None) -> tuple[list, list[str]]:
    """The images as a list, and one unique name per image (default: file names)."""
    one = isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "mode")
    items = [images] if one else list(images)
    if image_names is None:
        image_names = [
            Path(image).name if isinstance(image, (str, os.PathLike)) else f"image {i}"
            for i, image in enumerate(items)
        ]
    names = [] if isinstance(image_names, str) else [str(name) for name in image_names]
    if not items or len(names) != len(items) or len(set(names)) < len(names):
        raise ArgumentError(
            f"images and image_names need one different name per image: {len(items)} images "
            f"named {names}; pass image_names= (at least one image)."
        )
    return items, names


def compare_models(models, images, prompts, *, templates=None, image_names=None) -> pd.DataFrame:
    """Zero-shot probabilities of several models side by side, one row per image × prompt.

    ``models``: ``{name: model}`` or a list (named by ``model_name``); ``images``: paths, PIL
    images or arrays, named by ``image_names`` (default: file names). ``prompts``: a list of
    prompts, or a task name, ``{class: [synonyms]}`` or class names with ``templates`` (each
    model builds its own classifier). Columns: ``image``, ``prompt``, ``p_<model>`` (sums to 1
    per image), ``top1_<model>`` and ``agreement`` (all models rank the same prompt first).

    Example:
        >>> compare_models([clip], [xray, imgs / "ct_head.png"], ["An X-ray.", "A CT."]).shape
        (4, 5)
    """
    named = _named_models(models)
    items, names = _image_names(images, image_names)
    if isinstance(prompts, ZeroShotClassifier):
        raise PromptError(
            "A ZeroShotClassifier belongs to the model that built it: pass its task or classes."
        )
    task = isinstance(prompts, (str, Mapping)) or templates is not None
    labels = None if task else check_prompts(prompts)
    rgb = [to_rgb(image) for image in items]  # decoded once, shared by every model
    probs = {}
    for name, model in named.items():
        target = model.classifier(prompts, templates) if task else labels
        labels = list(target.class_names) if task else labels
        probs[name] = model.zero_shot(rgb, target).detach().cpu().double().numpy()

    image = pd.Series(np.repeat(names, len(labels)), dtype=object)  # paths: maybe not UTF-8
    table = pd.DataFrame({"image": image, "prompt": labels * len(names)})
    for name, p in probs.items():
        table[PROB_PREFIX + name] = p.reshape(-1)
    for name, p in probs.items():
        firsts = np.asarray(labels, dtype=object)[p.argmax(axis=1)]
        table[TOP1_PREFIX + name] = np.repeat(firsts, len(labels))
    table["agreement"] = table[[TOP1_PREFIX + name for name in probs]].nunique(axis=1) == 1
    return table


def model_columns(table: pd.DataFrame) -> list[str]:
    """The model names of a :func:`compare_models` table, in column order.

    Example:
        >>> model_columns(pd.DataFrame(columns=["image", "prompt", "p_a", "p_b"]))
        ['a', 'b']
    """
    columns = [str(c) for c in getattr(table, "columns", ())]
    models = [c[len(PROB_PREFIX) :] for c in columns if c.startswith(PROB_PREFIX)]
    if not models or not {"image", "prompt"} <= set(columns):
        raise ArgumentError(f"table has the columns {columns}: pass what compare_models() returns.")
    return models


def summarize_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """One row per image: ``top1_<model>``, ``p_top1_<model>`` (its probability), ``agreement``.

    Example:
        >>> table = compare_models({"a": clip}, [xray], ["A chest X-ray.", "A CT."])
        >>> summarize_comparison(table).columns.tolist()
        ['top1_a', 'p_top1_a', 'agreement']
    """
    models = model_columns(table)
    groups = table.set_index("prompt").groupby("image", sort=False)
    summary = pd.DataFrame()
    for name in models:  # each model's most probable prompt per image, and its probability
        summary[TOP1_PREFIX + name] = groups[PROB_PREFIX + name].idxmax()
        summary[PROB_PREFIX + TOP1_PREFIX + name] = groups[PROB_PREFIX + name].max()
    summary["agreement"] = summary[[TOP1_PREFIX + name for name in models]].nunique(axis=1) == 1
    return summary
