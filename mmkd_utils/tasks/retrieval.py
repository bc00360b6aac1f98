"""Search image embeddings with texts, images or embeddings: cosine similarity, top k."""

import numbers
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from mmkd_utils.errors import RetrievalError
from mmkd_utils.tasks.embeddings import IMAGE_SUFFIXES

#: Columns of the table :func:`search` returns (``label`` is added when the index has labels).
SEARCH_COLUMNS = ("query", "rank", "path", "score")


def _matrix(values: Any, name: str) -> torch.Tensor:
    """Embeddings as a float CPU tensor [N, D] (a vector is one row): finite, no zero row."""
    t = getattr(values, "embeddings", values)
    t = torch.from_numpy(np.ascontiguousarray(t)) if isinstance(t, np.ndarray) else t
    if not torch.is_tensor(t) or t.dtype.is_complex or t.dtype == torch.bool:
        what = getattr(t, "dtype", type(t).__name__)
        raise RetrievalError(f"{name} must be embeddings [N, D] of real numbers, not {what}.")
    t = t.detach().cpu()[None] if t.ndim == 1 else t.detach().cpu()
    if t.ndim != 2 or 0 in t.shape:
        problem = "is empty" if t.ndim == 2 else "must be 2-D"
        raise RetrievalError(f"{name} {problem}: pass embeddings [N, D], not {tuple(t.shape)}.")
    t = t if t.dtype == torch.float64 else t.float()
    for bad, what in ((~torch.isfinite(t).all(1), "non-finite"), (t.norm(dim=1) == 0, "all-zero")):
        if bad.any():
            first = int(torch.nonzero(bad)[0])
            raise RetrievalError(f"{name} has {what} rows, first row {first}: re-compute them.")
    return t


def _cosine(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> torch.Tensor:
    if a.shape[1] != b.shape[1]:
        dims = f"{name_a} has {a.shape[1]}-d embeddings but {name_b} has {b.shape[1]}-d"
        raise RetrievalError(f"{dims}: use one model for both.")
    a, b = (x.to(torch.promote_types(a.dtype, b.dtype)) for x in (a, b))
    return (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T


def similarity_matrix(a: Any, b: Any) -> torch.Tensor:
    """Cosine similarities [N, M] of the rows of ``a`` [N, D] and ``b`` [M, D] (tensors,
    arrays or ``embed_folder`` results); float64 if either input is, else float32.

    Example:
        >>> similarity_matrix(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        tensor([[1., 0.]])
    """
    return _cosine(_matrix(a, "a"), _matrix(b, "b"), "a", "b")


def _named(values: Any, name: str, paths: Any = None) -> tuple[torch.Tensor, list]:
    """Embeddings and one name per row: its path (``.paths`` or ``paths``), else its number."""
    emb, own = _matrix(values, name), getattr(values, "paths", None)
    if own is not None and paths is not None:
        raise RetrievalError("paths= is for a tensor index; this one already has its own paths.")
    if isinstance(paths, (str, os.PathLike)):
        raise RetrievalError("paths must be a list with one name per index row, not one string.")
    paths = own if own is not None else paths
    names = list(range(len(emb))) if paths is None else [str(p) for p in paths]
    if len(names) != len(emb):
        raise RetrievalError(
            f"paths has {len(names)} entries but the {name} has {len(emb)} rows; pass one per row."
        )
    return emb, names


def _queries(queries: Any, model: Any, dim: int) -> tuple[torch.Tensor, list]:
    """Query embeddings and one name per query (the text, image path or position)."""
    if torch.is_tensor(queries) or isinstance(queries, np.ndarray) or hasattr(queries, "paths"):
        return _named(queries, "queries")
    one = isinstance(queries, (str, os.PathLike, Image.Image)) or not isinstance(queries, Iterable)
    items, images = [queries] if one else list(queries), (os.PathLike, Image.Image, np.ndarray)
    kinds = {
        "text" if isinstance(q, str) else "image" if isinstance(q, images) else type(q).__name__
        for q in items
    }
    if kinds not in ({"text"}, {"image"}):
        odd = sorted(kinds - {"text", "image"})
        what = f"must be texts, images or embeddings, not {odd[0]}" if odd else "is empty"
        raise RetrievalError(
            f"queries {'mixes texts and images' if len(kinds) == 2 and not odd else what}: pass "
            "texts (str) or images (Path, PIL, numpy) in separate calls. Stack embeddings [Q, D]."
        )
    kind = kinds.pop()
    if model is None:
        raise RetrievalError(f"{kind} queries need model=<the MMKDModel of the {dim}-d index>.")
    if (got := getattr(model, "embed_dim", dim)) != dim:
        dims = f"The model embeds {kind} queries in {got} dimensions but the index is {dim}-d"
        raise RetrievalError(f"{dims}: use the model that embedded the index.")
    if kind == "image":
        names = [
            str(q) if isinstance(q, os.PathLike) else getattr(q, "filename", "") or i
            for i, q in enumerate(items)
        ]
        return model.encode_images(items), names
    for text in (t for t in items if t.strip().lower().endswith(IMAGE_SUFFIXES)):
        hint = (
            f"Query {text!r} is searched as text; for that image file pass pathlib.Path({text!r})"
        )
        warnings.warn(hint, stacklevel=3)
    return model.encode_texts(items), items


def search(
    queries: Any,
    index: Any,
    k: int = 5,
    *,
    model: Any = None,
    paths: Sequence[str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """The ``k`` index rows most similar (cosine) to each query, ties in index order: one table.

    ``queries``: texts (every str), images (``pathlib.Path``, PIL, numpy; need ``model``) or
    embeddings. ``paths`` names a tensor index's rows. Columns: :data:`SEARCH_COLUMNS` (+ label).

    Example:
        >>> search(torch.tensor([[1.0, 0.2, 0.0]]), torch.eye(3), k=2, paths=["a", "b", "c"])
           query  rank path     score
        0      0     1    a  0.980581
        1      0     2    b  0.196116
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise RetrievalError(f"k={k!r}: pass a positive whole number of results per query.")
    index_emb, names = _named(index, "index", paths)
    labels = list(getattr(index, "labels", None) or [])
    labels = labels if any(label is not None for label in labels) else []
    query_emb, query_names = _queries(queries, model, index_emb.shape[1])
    sims = _cosine(query_emb, index_emb, "queries", "the index")
    k = min(int(k), len(names))
    scores, ids = (t[:, :k].flatten() for t in sims.sort(dim=1, descending=True, stable=True))
    return pd.DataFrame(
        {
            "query": pd.Series([name for name in query_names for _ in range(k)], dtype=object),
            "rank": np.tile(np.arange(1, k + 1), len(query_names)),
            "path": pd.Series([names[i] for i in ids.tolist()], dtype=object),
            "score": scores.double().numpy(),
            **({"label": [labels[i] for i in ids.tolist()]} if labels else {}),
        }
    )
