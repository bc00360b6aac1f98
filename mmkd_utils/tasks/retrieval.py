"""Search a set of image embeddings with texts, images or embeddings: cosine top-k.

:func:`search` ranks the rows of an *index* (the embeddings of an image folder, e.g. from
:func:`mmkd_utils.tasks.embeddings.embed_folder`, or any ``[N, D]`` tensor or array) by their
cosine similarity to each query and returns the ``k`` best per query as one table.
Queries are texts (text-to-image search), images (image-to-image search) or ready
embeddings. :func:`similarity_matrix` gives the full cosine matrix behind it.

Strings are always texts: to search with an image file, pass it as a
:class:`pathlib.Path` (or a PIL image or numpy array).

Introduced in ``notebooks/05_retrieval_and_linear_probe.ipynb``.

Example:
    >>> from mmkd_utils import load_model, search
    >>> from mmkd_utils.tasks.embeddings import embed_folder
    >>> clip = load_model()  # doctest: +SKIP
    >>> index = embed_folder(clip, "data/chest")  # doctest: +SKIP
    >>> search(["A chest X-ray with pneumonia."], index, k=3, model=clip)  # doctest: +SKIP
                              query  rank                       path     score      label
    0  A chest X-ray with pneumonia.     1  data/chest/pneumonia/a.png  0.412  pneumonia
    ...
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from mmkd_utils.errors import RetrievalError
from mmkd_utils.tasks.evaluation import IMAGE_SUFFIXES

if TYPE_CHECKING:
    import pandas as pd

    from mmkd_utils.model.loading import MMKDModel

#: Columns of the table :func:`search` returns (``label`` is added when the index has labels).
SEARCH_COLUMNS = ("query", "rank", "path", "score")

__all__ = ["SEARCH_COLUMNS", "RetrievalError", "search", "similarity_matrix"]


# --------------------------------------------------------------------------- embeddings


def _is_embedding_set(obj: Any) -> bool:
    """True for a FolderEmbeddings-like object: it has ``.paths`` and ``.embeddings``."""
    return hasattr(obj, "embeddings") and hasattr(obj, "paths")


def _as_matrix(values: Any, name: str) -> torch.Tensor:
    """Embeddings as a float CPU tensor [N, D] (1-D becomes one row), checked finite, nonzero."""
    if _is_embedding_set(values):
        values = values.embeddings
    if isinstance(values, torch.Tensor):
        tensor = values.detach().cpu()
    elif isinstance(values, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(values))
    else:
        raise RetrievalError(
            f"{name} must be embeddings (a torch tensor or numpy array [N, D], or an "
            f"embed_folder result), not {type(values).__name__}."
        )
    if tensor.dtype != torch.float64:
        if tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise RetrievalError(f"{name} must hold real numbers, not {tensor.dtype}.")
        tensor = tensor.float()
    if tensor.ndim == 1:
        tensor = tensor[None]
    if tensor.ndim != 2:
        raise RetrievalError(
            f"{name} must be 2-D embeddings [N, D], but has shape {tuple(tensor.shape)}."
        )
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise RetrievalError(f"{name} is empty (shape {tuple(tensor.shape)}).")
    bad = ~torch.isfinite(tensor).all(dim=1)
    if bad.any():
        rows = torch.nonzero(bad).flatten().tolist()
        raise RetrievalError(
            f"{name} has non-finite values (NaN or inf) in {len(rows)} row(s), the first "
            f"being row {rows[0]}; re-compute those embeddings."
        )
    zero = tensor.norm(dim=1) == 0
    if zero.any():
        rows = torch.nonzero(zero).flatten().tolist()
        raise RetrievalError(
            f"{name} has {len(rows)} all-zero row(s), the first being row {rows[0]}; the "
            "cosine similarity of a zero vector is undefined."
        )
    return tensor


def _check_dims(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise RetrievalError(
            f"{name_a} has {a.shape[1]}-d embeddings but {name_b} has {b.shape[1]}-d "
            "embeddings: both must come from the same model."
        )


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine matrix of two checked matrices (float64 if either is, else float32)."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    return (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T


def similarity_matrix(a: Any, b: Any) -> torch.Tensor:
    """Cosine similarities [N, M] between the rows of ``a`` [N, D] and of ``b`` [M, D].

    Both sides are L2-normalised here (embeddings that already are stay the same), so
    any embeddings can be passed: tensors, numpy arrays or ``embed_folder`` results; a
    1-D vector counts as one row. The result is float64 if either input is, else float32.

    Raises:
        RetrievalError: a side is not 2-D, is empty, holds NaN/inf or an all-zero row, or
            the two embedding sizes differ (the message names both).

    Example:
        >>> import torch
        >>> similarity_matrix(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        tensor([[1., 0.]])
    """
    left, right = _as_matrix(a, "a"), _as_matrix(b, "b")
    _check_dims(left, right, "a", "b")
    return _cosine(left, right)


# --------------------------------------------------------------------------- index


def _resolve_index(index: Any, paths: Sequence[Any] | None) -> tuple[torch.Tensor, list, list]:
    """Embeddings, one name per row (path or integer id) and labels ([] when none)."""
    if _is_embedding_set(index):
        if paths is not None:
            raise RetrievalError(
                "paths= is only for an index given as a tensor or array; this index "
                "already has its own paths."
            )
        embeddings = _as_matrix(index.embeddings, "index")
        names = [str(p) for p in index.paths]
        if len(names) != embeddings.shape[0]:
            raise RetrievalError(
                f"The index has {len(names)} paths but {embeddings.shape[0]} embeddings."
            )
        labels = list(getattr(index, "labels", None) or [])
        if labels and len(labels) != len(names):
            raise RetrievalError(f"The index has {len(labels)} labels but {len(names)} paths.")
        if all(label is None for label in labels):
            labels = []
        return embeddings, names, labels
    embeddings = _as_matrix(index, "index")
    n = embeddings.shape[0]
    if paths is None:
        return embeddings, list(range(n)), []
    if isinstance(paths, (str, os.PathLike)):
        raise RetrievalError("paths must be a list with one name per index row, not one string.")
    names = [str(p) for p in paths]
    if len(names) != n:
        raise RetrievalError(
            f"paths has {len(names)} entries but the index has {n} rows; pass one name per row."
        )
    return embeddings, names, []


# --------------------------------------------------------------------------- queries


def _image_query_name(image: Any, position: int) -> str | int:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    filename = getattr(image, "filename", "")
    return str(filename) if filename else position


def _kind(item: Any) -> str | None:
    if isinstance(item, str):
        return "text"
    if isinstance(item, (os.PathLike, Image.Image, np.ndarray)):
        return "image"
    return None


def _warn_file_like_texts(texts: list[str]) -> None:
    for text in texts:
        if text.strip().lower().endswith(IMAGE_SUFFIXES):
            warnings.warn(
                f"The query {text!r} looks like an image file name, but strings are searched "
                f"as text. To search with the image, pass pathlib.Path({text!r}).",
                stacklevel=4,
            )


def _need_model(model: Any, what: str, dim: int) -> None:
    if model is None:
        raise RetrievalError(
            f"Embedding {what} queries needs the model: pass model=<the MMKDModel that "
            "embedded the index>, e.g. search(queries, index, model=clip)."
        )
    model_dim = getattr(model, "embed_dim", None)
    if model_dim is not None and int(model_dim) != dim:
        raise RetrievalError(
            f"The model embeds {what} queries in {model_dim} dimensions but the index has "
            f"{dim}-d embeddings: both must come from the same model."
        )


def _resolve_queries(
    queries: Any, model: MMKDModel | None, dim: int
) -> tuple[torch.Tensor, list[Any]]:
    """Query embeddings and one name per query (text, image name or query index)."""
    if _is_embedding_set(queries):
        return _as_matrix(queries.embeddings, "queries"), [str(p) for p in queries.paths]
    if isinstance(queries, (torch.Tensor, np.ndarray)):
        embeddings = _as_matrix(queries, "queries")
        return embeddings, list(range(embeddings.shape[0]))
    if isinstance(queries, str) or _kind(queries) == "image":
        items = [queries]
    else:
        try:
            items = list(queries)
        except TypeError:
            raise RetrievalError(
                f"queries must be texts, images or embeddings, not {type(queries).__name__}."
            ) from None
    if not items:
        raise RetrievalError("queries is empty: pass at least one text, image or embedding.")
    kinds = [_kind(item) for item in items]
    for position, (item, kind) in enumerate(zip(items, kinds, strict=True)):
        if kind is None:
            hint = " Stack embeddings into one tensor [Q, D]." if torch.is_tensor(item) else ""
            raise RetrievalError(
                f"queries[{position}] is a {type(item).__name__}; a query list holds texts "
                f"(str) or images (pathlib.Path, PIL image, numpy array).{hint}"
            )
    if len(set(kinds)) > 1:
        texts = [i for i, kind in enumerate(kinds) if kind == "text"]
        images = [i for i, kind in enumerate(kinds) if kind == "image"]
        raise RetrievalError(
            f"queries mixes texts (items {texts[:5]}) and images (items {images[:5]}); search "
            "them in separate calls. Strings are always texts: pass image files as "
            "pathlib.Path."
        )
    if kinds[0] == "text":
        _need_model(model, "text", dim)
        _warn_file_like_texts(items)
        return model.encode_texts(items), list(items)
    _need_model(model, "image", dim)
    names = [_image_query_name(item, i) for i, item in enumerate(items)]
    return model.encode_images(items), names


# --------------------------------------------------------------------------- search


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise RetrievalError(f"k={k!r}: pass a positive whole number of results per query.")
    return int(k)


def _stable_topk(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k scores and indices per row, highest first; equal scores in index order.

    ``torch.topk`` neither orders equal values nor says which of several equal values
    at the k-th place it keeps, so the kept ones are re-ordered by (score, index) and
    the rows with a tie across the k-th place are redone with a stable sort.
    """
    values, ids = torch.topk(sims, k, dim=1, largest=True, sorted=True)
    by_index = torch.argsort(ids, dim=1)
    values, ids = values.gather(1, by_index), ids.gather(1, by_index)
    by_score = torch.sort(values, dim=1, descending=True, stable=True).indices
    values, ids = values.gather(1, by_score), ids.gather(1, by_score)
    tied = (sims >= values[:, -1:]).sum(dim=1) > k
    for row in torch.nonzero(tied).flatten().tolist():
        order = torch.sort(sims[row], descending=True, stable=True).indices[:k]
        ids[row], values[row] = order, sims[row, order]
    return values, ids


def search(
    queries: Any,
    index: Any,
    k: int = 5,
    *,
    model: MMKDModel | None = None,
    paths: Sequence[str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """The ``k`` index entries most similar (cosine) to each query, as one table.

    Args:
        queries: What to search with: a string or list of strings (texts, embedded with
            ``model.encode_texts``); an image or list of images (``pathlib.Path``, PIL
            image or numpy array, embedded with ``model.encode_images``); or ready
            embeddings: a tensor/array [Q, D] (a 1-D vector is one query) or an
            ``embed_folder`` result. Strings are always texts; texts and images cannot
            be mixed in one call.
        index: What to search in: an ``embed_folder`` result (anything with ``.paths``
            and ``.embeddings``, and optionally ``.labels``) or a tensor/array [N, D].
        k: Results per query, at least 1; more than N gives all N (no error).
        model: The :class:`~mmkd_utils.model.loading.MMKDModel` that embedded the index;
            needed for text and image queries.
        paths: One name per row of a tensor/array index; without it the ``path`` column
            holds the row numbers 0..N-1.

    Returns:
        A DataFrame with columns ``query`` (the text, the image's path, or the query's
        position for embeddings and unnamed images), ``rank`` (1..k), ``path`` (as a
        string, or the row number), ``score`` (cosine similarity in [-1, 1]) and ``label``
        if the index has labels; grouped by query in the order given, then by rank.
        Equal scores are ranked by index order (the earlier row first), so results are
        reproducible. Both sides are L2-normalised before comparing; scores are computed
        in float32 (float64 if either side is float64).

    Raises:
        RetrievalError: text or image queries without ``model``; texts and images mixed;
            ``k`` < 1; embedding sizes that differ (the message names both); a malformed
            index or query embeddings.

    Example:
        >>> import torch
        >>> index = torch.eye(3)
        >>> search(torch.tensor([[1.0, 0.2, 0.0]]), index, k=2, paths=["a.png", "b.png", "c.png"])
           query  rank   path     score
        0      0     1  a.png  0.980581
        1      0     2  b.png  0.196116
    """
    import pandas as pd

    k = _check_k(k)
    index_emb, names, labels = _resolve_index(index, paths)
    query_emb, query_names = _resolve_queries(queries, model, index_emb.shape[1])
    _check_dims(query_emb, index_emb, "queries", "the index")
    sims = _cosine(query_emb, index_emb)
    k = min(k, index_emb.shape[0])
    scores, ids = _stable_topk(sims, k)

    flat_ids = ids.reshape(-1).tolist()
    columns: dict[str, Any] = {
        "query": [name for name in query_names for _ in range(k)],
        "rank": np.tile(np.arange(1, k + 1), len(query_names)),
        "path": [names[i] for i in flat_ids],
        "score": scores.reshape(-1).double().numpy(),
    }
    if labels:
        columns["label"] = [labels[i] for i in flat_ids]
    return pd.DataFrame(columns)
