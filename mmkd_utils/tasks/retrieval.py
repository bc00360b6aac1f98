"""Search image embeddings with texts, images or embeddings: cosine similarity, top k.

The index is an :func:`~mmkd_utils.tasks.embeddings.embed_folder` result or any [N, D]
tensor or array. Strings are always texts: pass an image file as a :class:`pathlib.Path`.
Introduced in ``notebooks/05_retrieval_and_linear_probe.ipynb``.
"""

from __future__ import annotations

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

__all__ = ["SEARCH_COLUMNS", "RetrievalError", "search", "similarity_matrix"]


def _matrix(values: Any, name: str) -> torch.Tensor:
    """Embeddings as a float CPU tensor [N, D] (a vector is one row): finite, no zero row."""
    t = getattr(values, "embeddings", values)
    t = torch.from_numpy(np.ascontiguousarray(t)) if isinstance(t, np.ndarray) else t
    if not torch.is_tensor(t) or t.dtype.is_complex or t.dtype == torch.bool:
        raise RetrievalError(
            f"{name} must be embeddings (a torch tensor or numpy array [N, D] of real numbers, "
            f"or an embed_folder result), not {type(t).__name__}."
        )
    t = t.detach().cpu()[None] if t.ndim == 1 else t.detach().cpu()
    if t.ndim != 2 or 0 in t.shape:
        problem = f"is empty (shape {tuple(t.shape)})" if t.ndim == 2 else "must be 2-D"
        raise RetrievalError(f"{name} {problem}: pass embeddings [N, D], not {tuple(t.shape)}.")
    t = t if t.dtype == torch.float64 else t.float()
    nonfinite, zero = ~torch.isfinite(t).all(1), t.norm(dim=1) == 0
    for bad, what in ((nonfinite, "non-finite values (NaN or inf)"), (zero, "all-zero rows")):
        if bad.any():
            rows = torch.nonzero(bad).flatten().tolist()
            raise RetrievalError(
                f"{name} has {what} in {len(rows)} row(s), the first being row {rows[0]}; "
                "re-compute those embeddings."
            )
    return t


def _cosine(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> torch.Tensor:
    if a.shape[1] != b.shape[1]:
        raise RetrievalError(
            f"{name_a} has {a.shape[1]}-d embeddings but {name_b} has {b.shape[1]}-d "
            "embeddings: both must come from the same model."
        )
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


def _index(index: Any, paths: Any) -> tuple[torch.Tensor, list, list]:
    """Embeddings, one name per row (a path or the row number) and labels ([] if none)."""
    emb, own = _matrix(index, "index"), getattr(index, "paths", None)
    if own is not None and paths is not None:
        raise RetrievalError("paths= is for a tensor index; this one already has its own paths.")
    if isinstance(paths, (str, os.PathLike)):
        raise RetrievalError("paths must be a list with one name per index row, not one string.")
    paths = own if own is not None else paths
    names = list(range(len(emb))) if paths is None else [str(p) for p in paths]
    if len(names) != len(emb):
        raise RetrievalError(
            f"paths has {len(names)} entries but the index has {len(emb)} rows; pass one per row."
        )
    labels = list(getattr(index, "labels", None) or [])
    return emb, names, labels if any(label is not None for label in labels) else []


def _queries(queries: Any, model: Any, dim: int) -> tuple[torch.Tensor, list]:
    """Query embeddings and one name per query (the text, image path or position)."""
    if torch.is_tensor(queries) or isinstance(queries, np.ndarray) or hasattr(queries, "paths"):
        emb, named = _matrix(queries, "queries"), hasattr(queries, "paths")
        return emb, [str(p) for p in queries.paths] if named else list(range(len(emb)))
    one = isinstance(queries, (str, os.PathLike, Image.Image)) or not isinstance(queries, Iterable)
    items, images = [queries] if one else list(queries), (os.PathLike, Image.Image, np.ndarray)
    kinds = {
        "text" if isinstance(q, str) else "image" if isinstance(q, images) else type(q).__name__
        for q in items
    }
    if kinds not in ({"text"}, {"image"}):
        odd = sorted(kinds - {"text", "image"})
        what = "mixes texts and images" if kinds == {"text", "image"} else "is empty"
        what = f"must be texts, images or embeddings, not {odd[0]}" if odd else what
        raise RetrievalError(
            f"queries {what}: search with texts (str) or images (pathlib.Path, PIL image, numpy "
            "array), in separate calls; strings are always texts. Stack embeddings into one "
            "tensor [Q, D]."
        )
    kind = kinds.pop()
    if model is None or getattr(model, "embed_dim", dim) != dim:
        raise RetrievalError(
            f"Embedding {kind} queries needs the model that embedded the {dim}-d index: "
            "pass model=<that MMKDModel>, e.g. search(queries, index, model=clip)."
            if model is None
            else f"The model embeds {kind} queries in {model.embed_dim} dimensions but "
            f"the index has {dim}-d embeddings: both must come from the same model."
        )
    if kind == "image":
        names = [
            str(q) if isinstance(q, os.PathLike) else getattr(q, "filename", "") or i
            for i, q in enumerate(items)
        ]
        return model.encode_images(items), names
    for text in (t for t in items if t.strip().lower().endswith(IMAGE_SUFFIXES)):
        warnings.warn(
            f"The query {text!r} is searched as text; to search with that image file, pass "
            f"pathlib.Path({text!r}).",
            stacklevel=3,
        )
    return model.encode_texts(items), items


def search(
    queries: Any,
    index: Any,
    k: int = 5,
    *,
    model: Any = None,
    paths: Sequence[str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """The ``k`` index rows most similar (cosine) to each query: one table, in query order.

    ``queries`` are texts, images (``pathlib.Path``, PIL, numpy; both need ``model``) or
    embeddings; ``paths`` names the rows of a tensor index. Columns: :data:`SEARCH_COLUMNS`
    and ``label`` if the index has labels; equal scores keep index order.

    Example:
        >>> search(torch.tensor([[1.0, 0.2, 0.0]]), torch.eye(3), k=2, paths=["a", "b", "c"])
           query  rank path     score
        0      0     1    a  0.980581
        1      0     2    b  0.196116
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise RetrievalError(f"k={k!r}: pass a positive whole number of results per query.")
    index_emb, names, labels = _index(index, paths)
    query_emb, query_names = _queries(queries, model, index_emb.shape[1])
    sims = _cosine(query_emb, index_emb, "queries", "the index")
    scores, ids = torch.sort(sims, dim=1, descending=True, stable=True)
    k = min(int(k), len(names))
    ids = ids[:, :k].flatten().tolist()
    return pd.DataFrame(
        {
            "query": [name for name in query_names for _ in range(k)],
            "rank": np.tile(np.arange(1, k + 1), len(query_names)),
            "path": [names[i] for i in ids],
            "score": scores[:, :k].flatten().double().numpy(),
            **({"label": [labels[i] for i in ids]} if labels else {}),
        }
    )
