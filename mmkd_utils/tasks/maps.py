"""2-D maps of embeddings (notebook 04): PCA, t-SNE (scikit-learn) or UMAP (``umap`` extra)."""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from mmkd_utils.errors import ArgumentError, MissingDependencyError

#: The methods :func:`embed_2d` knows, with the names used in plot titles.
EMBEDDING_METHODS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
UMAP = 'pip install "mmkd-utils[umap]" (or pip install umap-learn) and restart the kernel.'


def as_floats(values: Any, name: str, ndim: int = 2) -> np.ndarray:
    """``values`` (list, array or tensor) as a finite, non-empty float64 array of ``ndim`` dims.

    Example:
        >>> as_floats([[1, 2], [3, 4]], "embeddings").shape
        (2, 2)
    """
    values = values.detach().cpu().double().numpy() if hasattr(values, "detach") else values
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ArgumentError(f"{name} must be numbers (a list, array or tensor): {err}") from None
    if array.ndim != ndim:
        hint = f"pass one row, e.g. {name}[0]" if ndim == 1 else f"for one row use {name}[None]"
        raise ArgumentError(f"{name} must be {ndim}-D but has shape {array.shape}; {hint}.")
    if array.size == 0:
        raise ArgumentError(f"{name} is empty: {name} has shape {array.shape}; pass some values.")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        where = f"index {bad[0][0]}" if ndim == 1 else f"row {bad[0][0]} (column {bad[0][1]})"
        problem = f"{name} holds {len(bad)} non-finite value(s) (NaN or inf), the first at {where}"
        raise ArgumentError(f"{problem}; check the images or model that made it.")
    return array


def embed_2d(
    embeddings: Any, method: str = "pca", random_state: int | None = 0, *, perplexity=None
) -> np.ndarray:
    """``[N, D]`` embeddings as ``[N, 2]`` map coordinates (the same ``random_state``, the same
    map); t-SNE starts from PCA, with perplexity ``min(30, (N - 1) / 3)`` unless given.

    Example:
        >>> embed_2d(np.random.default_rng(0).normal(size=(10, 64)), "tsne").shape
        (10, 2)
    """
    key = method.lower().replace("-", "") if isinstance(method, str) else None
    if key not in EMBEDDING_METHODS:
        raise ArgumentError(f"method must be one of 'pca', 'tsne' or 'umap', got {method!r}.")
    array = as_floats(embeddings, "embeddings")
    (n, d), need = array.shape, 2 if key == "pca" else 4  # t-SNE's perplexity must stay below N
    if n < need:
        raise ArgumentError(
            f"embeddings has {n} row(s), but {EMBEDDING_METHODS[key]} needs at least {need}; "
            "embed more images (method='pca' needs 2)."
        )
    if d < 2 or (array == array[0]).all():
        bad = f"embeddings has {d} column" if d < 2 else f"all {n} rows of embeddings are identical"
        raise ArgumentError(f"{bad}: there is nothing to map; pass [N, D] image features.")
    seed = random_state if random_state is not None else 0
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ArgumentError(f"random_state must be a whole number >= 0 or None, not {seed!r}.")
    if key != "tsne" and perplexity is not None:
        raise ArgumentError(f"perplexity only applies to method='tsne', not method={method!r}.")
    if key == "pca":
        reducer = PCA(n_components=2, random_state=random_state)
    elif key == "tsne":
        perplexity = min(30.0, (n - 1) / 3) if perplexity is None else perplexity
        if isinstance(perplexity, bool) or not isinstance(perplexity, numbers.Real):
            raise ArgumentError(f"perplexity must be a number such as 5 or 30, got {perplexity!r}.")
        if not 0 < perplexity < n:
            raise ArgumentError(
                f"perplexity must be above 0 and below the number of points ({n}), got "
                f"{perplexity}; try perplexity={(n - 1) / 3:.1f} or leave it as None."
            )
        reducer = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=random_state)
    else:
        try:
            import umap  # the optional "umap" extra
        except ImportError as err:
            raise MissingDependencyError(f"method='umap' needs umap-learn ({err}): {UMAP}") from err
        if not hasattr(umap, "UMAP"):
            raise MissingDependencyError(f"'umap' is not umap-learn: pip uninstall umap; {UMAP}")
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), random_state=random_state, n_jobs=1)
    with warnings.catch_warnings():  # umap: "n_jobs value overridden", "k >= N" on tiny inputs
        warnings.filterwarnings("ignore", message=".*(n_jobs value|k >= N).*")
        return np.asarray(reducer.fit_transform(array), dtype=np.float64)
