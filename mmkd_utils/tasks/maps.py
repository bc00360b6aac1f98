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
#: Fewest points each method can place (t-SNE's perplexity must stay below N).
MIN_POINTS = {"pca": 2, "tsne": 4, "umap": 4}
UMAP = 'pip install "mmkd-utils[umap]" (or pip install umap-learn) and restart the kernel.'


def as_matrix(values: Any, name: str) -> np.ndarray:
    """``values`` (nested list, numpy array or torch tensor) as a finite float64 ``[N, D]`` array.

    Example:
        >>> as_matrix([[1, 2], [3, 4]], "embeddings").dtype
        dtype('float64')
    """
    values = values.detach().cpu().double().numpy() if hasattr(values, "detach") else values
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ArgumentError(f"{name} must be numbers, shape [N, D]: {err}") from None
    if array.ndim != 2 or 0 in array.shape:
        raise ArgumentError(
            f"{name} must be 2-D with one row per item, shape [N, D], but has shape "
            f"{array.shape}; for one vector use x[None]."
        )
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        raise ArgumentError(
            f"{name} holds {len(bad)} non-finite value(s) (NaN or inf), the first in row "
            f"{bad[0][0]} (column {bad[0][1]}); check the images or model that made it."
        )
    return array


def embed_2d(
    embeddings: Any, method: str = "pca", random_state: int | None = 0, *, perplexity=None
) -> np.ndarray:
    """``[N, D]`` embeddings as ``[N, 2]`` map coordinates with PCA, t-SNE or UMAP.

    t-SNE starts from PCA with perplexity ``min(30, (N - 1) / 3)`` unless given; UMAP needs
    ``pip install "mmkd-utils[umap]"``. The same ``random_state`` gives the same map.

    Example:
        >>> embed_2d(np.random.default_rng(0).normal(size=(10, 64)), "tsne").shape
        (10, 2)
    """
    key = method.lower().replace("-", "") if isinstance(method, str) else None
    if key not in EMBEDDING_METHODS:
        raise ArgumentError(f"method must be one of 'pca', 'tsne' or 'umap', got {method!r}.")
    array = as_matrix(embeddings, "embeddings")
    n, d = array.shape
    if n < MIN_POINTS[key]:
        raise ArgumentError(
            f"embeddings has {n} row(s), but method={EMBEDDING_METHODS[key]!r} needs at "
            f"least {MIN_POINTS[key]} points; embed more images or use method='pca'."
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
            raise MissingDependencyError(
                f"the package 'umap' is not umap-learn: pip uninstall umap, {UMAP}"
            )
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), random_state=random_state, n_jobs=1)
    with warnings.catch_warnings():  # umap: "n_jobs value overridden", "k >= N" on tiny inputs
        warnings.filterwarnings("ignore", message=".*(n_jobs value|k >= N).*")
        return np.asarray(reducer.fit_transform(array), dtype=np.float64)
