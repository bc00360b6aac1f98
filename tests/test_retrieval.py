"""Tests for :mod:`mmkd_utils.tasks.retrieval`: search and similarity_matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from support import TINY

from mmkd_utils import MMKDError
from mmkd_utils import search as exported
from mmkd_utils.tasks.retrieval import SEARCH_COLUMNS, RetrievalError, search, similarity_matrix

IMAGES = sorted((TINY / "images").iterdir())
TEXTS = ["A chest X-ray.", "A fundus photograph.", "A histopathology slide."]


@dataclass
class FakeEmbeddings:
    """The fields of ``embed_folder``'s FolderEmbeddings that search reads."""

    paths: list[Path]
    labels: list[str | None]
    embeddings: torch.Tensor


def reference(queries: np.ndarray, index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: cosine matrix in numpy, stable argsort (equal scores in index order)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    x = index / np.linalg.norm(index, axis=1, keepdims=True)
    sims = q @ x.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def ids_and_scores(table, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    ids = table["path"].to_numpy().astype(int).reshape(n_queries, -1)
    return ids, table["score"].to_numpy().reshape(n_queries, -1)


# --------------------------------------------------------------------------- ranking


def test_ranks_match_a_brute_force_reference():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(7, 16)) * rng.uniform(0.1, 5.0, size=(7, 1))  # not unit length
    index = rng.normal(size=(50, 16)) * rng.uniform(0.1, 5.0, size=(50, 1))
    table = search(queries, index, k=10)
    assert list(table.columns) == list(SEARCH_COLUMNS)
    assert table["query"].tolist() == [q for q in range(7) for _ in range(10)]
    assert table["rank"].tolist() == list(range(1, 11)) * 7
    ids, scores = ids_and_scores(table, 7)
    ref_ids, ref_scores = reference(queries, index, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 3, 5, 9, 30])
def test_equal_scores_are_ranked_in_index_order(dtype, k):
    # Entries ±1 with four nonzeros per row: unit rows have entries ±0.5, so every cosine
    # is a sum of ±0.25 and exact; duplicated rows give exactly tied scores.
    base = np.array(
        [
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, -1, -1, 0, 0, 0, 0],
            [0, 0, 1, 1, 1, 1, 0, 0],
            [1, 0, 1, 0, 1, 0, 1, 0],
        ],
        dtype=np.float64,
    )
    rng = np.random.default_rng(1)
    index = base[rng.integers(0, len(base), size=30)] * 2.0
    queries = base[[0, 2, 3, 1]]
    table = search(torch.from_numpy(queries).to(dtype), torch.from_numpy(index).to(dtype), k=k)
    ids, scores = ids_and_scores(table, len(queries))
    ref_ids, ref_scores = reference(queries, index, k)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)
    sims = reference(queries, index, 30)[1]
    if k < 30:  # the test really has ties across the k-th place
        assert (sims[:, k - 1] == sims[:, k]).any()


def test_k_larger_than_the_index_returns_every_row():
    index = torch.eye(4)
    table = search(torch.ones(2, 4), index, k=100)
    assert len(table) == 8
    assert table.groupby("query")["path"].apply(sorted).tolist() == [[0, 1, 2, 3]] * 2


def test_paths_name_the_rows_of_a_tensor_index():
    table = search(torch.tensor([0.0, 1.0, 0.0]), torch.eye(3), k=2, paths=["a", "b", "c"])
    assert table["path"].tolist() == ["b", "a"]  # "a" and "c" tie at 0: index order
    assert table["score"].tolist() == [1.0, 0.0]
    assert table["query"].tolist() == [0, 0]


def test_an_embedding_set_gives_paths_and_labels():
    rng = np.random.default_rng(2)
    emb = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(6, 8))).float(), dim=1)
    paths = [Path("root") / cls / f"{i}.png" for i, cls in enumerate("aabbcc")]
    index = FakeEmbeddings(paths, list("aabbcc"), emb)
    table = search(emb[[4]], index, k=3)
    assert list(table.columns) == [*SEARCH_COLUMNS, "label"]
    assert table["path"].iloc[0] == str(paths[4])
    assert table["score"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    by_path = {str(p): label for p, label in zip(paths, "aabbcc", strict=True)}
    assert table["label"].tolist() == [by_path[p] for p in table["path"]]
    unlabelled = FakeEmbeddings(paths, [None] * 6, emb)
    assert "label" not in search(emb[[0]], unlabelled, k=2).columns
    # An embedding set as queries: each query is named by its path.
    assert search(index, index, k=1)["query"].tolist() == [str(p) for p in paths]


def test_similarity_matrix_is_the_cosine_matrix():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(6, 5))
    expected = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (
        b / np.linalg.norm(b, axis=1, keepdims=True)
    ).T
    sims = similarity_matrix(a, torch.from_numpy(b).float())
    assert sims.dtype == torch.float64 and sims.shape == (4, 6)
    np.testing.assert_allclose(sims.numpy(), expected, atol=1e-6)
    assert similarity_matrix(torch.ones(3), torch.ones(2, 3)).shape == (1, 2)


# --------------------------------------------------------------------------- with the model


def test_text_queries_equal_searching_with_their_embeddings(tiny_model):
    image_emb = tiny_model.encode_images(IMAGES)
    index = FakeEmbeddings(list(IMAGES), [p.suffix for p in IMAGES], image_emb)
    by_text = search(TEXTS, index, k=3, model=tiny_model)
    by_embedding = search(tiny_model.encode_texts(TEXTS), index, k=3)
    assert by_text["query"].tolist() == [t for t in TEXTS for _ in range(3)]
    for column in ("rank", "path", "label"):
        assert by_text[column].tolist() == by_embedding[column].tolist()
    np.testing.assert_allclose(by_text["score"], by_embedding["score"], atol=1e-6)
    one = search(TEXTS[1], index, k=2, model=tiny_model)  # one string = one text query
    assert one["query"].tolist() == [TEXTS[1]] * 2
    assert one["path"].tolist() == by_text["path"].tolist()[3:5]
    assert exported is search


def test_image_queries_find_themselves_first(tiny_model):
    index_emb = tiny_model.encode_images(IMAGES)
    with Image.open(IMAGES[2]) as opened:
        opened.load()
        queries = [IMAGES[0], opened, np.asarray(Image.open(IMAGES[3]).convert("RGB"))]
        table = search(queries, index_emb, k=2, model=tiny_model, paths=IMAGES)
    assert table["query"].tolist() == [str(IMAGES[0])] * 2 + [str(IMAGES[2])] * 2 + [2, 2]
    assert table.loc[table["rank"] == 1, "path"].tolist() == [str(IMAGES[i]) for i in (0, 2, 3)]
    assert np.allclose(table.loc[table["rank"] == 1, "score"], 1.0, atol=1e-5)
    single = search(IMAGES[4], index_emb, k=1, model=tiny_model)  # one Path = one image query
    assert single["path"].tolist() == [4]


def test_a_text_that_looks_like_a_file_name_warns(tiny_model):
    with pytest.warns(UserWarning, match=r"pathlib\.Path"):
        search(["xray.png"], tiny_model.encode_images(IMAGES[:2]), k=1, model=tiny_model)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("queries", "index", "kwargs", "match"),
    [
        (["A chest X-ray."], torch.eye(4), {}, r"model="),
        ("A chest X-ray.", torch.eye(4), {}, r"model="),
        ([IMAGES[0]], torch.eye(4), {}, r"model="),
        (torch.ones(2, 3), torch.ones(5, 4), {}, r"3-d.*4-d"),
        (torch.ones(2, 4), torch.ones(5, 4), {"k": 0}, r"k=0"),
        (torch.ones(2, 4), torch.ones(5, 4), {"k": -3}, r"k=-3"),
        (torch.ones(2, 4), torch.ones(5, 4), {"k": 2.5}, r"k=2.5"),
        (torch.ones(2, 4), torch.ones(5, 4), {"k": True}, r"k=True"),
        (["a text", IMAGES[0]], torch.eye(4), {}, r"mixes texts .*images"),
        ([], torch.eye(4), {}, r"empty"),
        ([torch.ones(4)], torch.eye(4), {}, r"Stack"),
        (42, torch.eye(4), {}, r"not int"),
        (torch.ones(2, 4), torch.ones(0, 4), {}, r"index is empty"),
        (torch.ones(2, 4, 1), torch.eye(4), {}, r"queries must be 2-D"),
        (torch.tensor([[1.0, float("nan")]]), torch.eye(2), {}, r"queries has non-finite"),
        (torch.ones(1, 2), torch.tensor([[1.0, 0.0], [0.0, 0.0]]), {}, r"all-zero.*row 1"),
        (torch.ones(1, 2), [[1.0, 0.0]], {}, r"index must be embeddings"),
        (torch.ones(1, 2), torch.eye(2), {"paths": ["a"]}, r"paths has 1 entries"),
        (torch.ones(1, 2), torch.eye(2), {"paths": "ab"}, r"not one string"),
    ],
)
def test_errors(queries, index, kwargs, match):
    with pytest.raises(RetrievalError, match=match) as info:
        search(queries, index, **kwargs)
    assert isinstance(info.value, MMKDError) and isinstance(info.value, ValueError)


def test_errors_with_a_model(tiny_model):
    with pytest.raises(RetrievalError, match=r"64 dimensions.*32-d"):
        search(["A chest X-ray."], torch.ones(3, 32), model=tiny_model)
    index = FakeEmbeddings([Path("a.png")], ["a"], torch.ones(1, 64))
    with pytest.raises(RetrievalError, match=r"already has its own paths"):
        search(torch.ones(1, 64), index, paths=["b.png"])
    with pytest.raises(RetrievalError, match=r"a has 1-d embeddings but b has 2-d"):
        similarity_matrix(torch.ones(2, 1), torch.ones(2, 2))


# --------------------------------------------------------------------------- property


def _nonzero_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = matrix.astype(np.float32)
    matrix[(matrix == 0).all(axis=1), 0] = 1.0
    return matrix


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    dim=st.integers(1, 6),
    n_queries=st.integers(1, 4),
    n_index=st.integers(1, 12),
)
def test_scores_are_the_top_k_of_the_cosine_matrix(data, dim, n_queries, n_index):
    values = st.integers(-3, 3)
    queries = _nonzero_rows(data.draw(arrays(np.int8, (n_queries, dim), elements=values)))
    index = _nonzero_rows(data.draw(arrays(np.int8, (n_index, dim), elements=values)))
    k = data.draw(st.integers(1, n_index + 3))
    table = search(queries, index, k=k)
    kept = min(k, n_index)
    assert len(table) == n_queries * kept
    full = similarity_matrix(queries, index).numpy()
    ids, scores = ids_and_scores(table, n_queries)
    for row in range(n_queries):
        assert len(set(ids[row])) == kept
        np.testing.assert_allclose(scores[row], full[row, ids[row]], atol=1e-6)
        np.testing.assert_allclose(scores[row], np.sort(full[row])[::-1][:kept], atol=1e-6)
        assert (np.diff(scores[row]) <= 0).all()
        same = np.diff(scores[row]) == 0
        assert (np.diff(ids[row])[same] > 0).all()  # exact ties in index order
