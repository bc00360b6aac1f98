"""Tests for the embedding maps, similarity heat map and retrieval gallery of plotting."""

from __future__ import annotations

import sys
import types

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox
from PIL import Image
from support import fresh_fact

from mmkd_utils import plotting
from mmkd_utils.errors import ImageLoadError, MissingDependencyError, MMKDError, PromptError
from mmkd_utils.plotting import (
    THUMBNAIL_SIZE,
    plot_embedding_map,
    plot_gallery,
    plot_similarity_heatmap,
)
from mmkd_utils.tasks.maps import embed_2d

matplotlib.use("Agg")  # headless; only the tests pick a backend, never the package

LABELS = ["CT", "MRI", "CT", "X-ray", "MRI", "CT", "X-ray", "MRI"]


@pytest.fixture(autouse=True)
def no_new_pyplot_figures():
    """Every call in this module leaves pyplot exactly as it was."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


@pytest.fixture
def points() -> np.ndarray:
    """Three well separated clusters of 8 points in 16 dimensions."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5.0, size=(3, 16))
    return np.concatenate([c + rng.normal(size=(8, 16)) for c in centres])


def scatter_coords(ax) -> np.ndarray:
    """All scatter points of an Axes, in drawing order."""
    return np.concatenate([c.get_offsets() for c in ax.collections])


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def thumbnail_boxes(ax) -> list[AnnotationBbox]:
    return [a for a in ax.artists if isinstance(a, AnnotationBbox)]


# --------------------------------------------------------------------------- embed_2d


def test_pca_coordinates_equal_sklearn_pca(points):
    from sklearn.decomposition import PCA

    expected = PCA(n_components=2).fit_transform(points)
    coords = embed_2d(points, "pca")
    assert coords.shape == (24, 2)
    assert coords.dtype == np.float64
    np.testing.assert_allclose(coords, expected, rtol=1e-10, atol=1e-10)


def test_tsne_is_reproducible_and_uses_the_documented_settings(points):
    from sklearn.manifold import TSNE

    first = embed_2d(points, "tsne", random_state=3)
    second = embed_2d(points, "t-SNE", random_state=3)
    assert first.shape == (24, 2)
    np.testing.assert_array_equal(first, second)
    expected = TSNE(perplexity=23 / 3, init="pca", random_state=3).fit_transform(points)
    np.testing.assert_allclose(first, expected, rtol=1e-6)


def test_tsne_works_at_its_smallest_size_and_with_an_explicit_perplexity(points):
    assert embed_2d(points[:4], "tsne").shape == (4, 2)
    assert embed_2d(points, "tsne", perplexity=5).shape == (24, 2)


def test_torch_and_list_inputs_give_the_same_coordinates(points):
    torch = pytest.importorskip("torch")
    expected = embed_2d(points, "pca")
    np.testing.assert_allclose(embed_2d(torch.tensor(points), "pca"), expected)
    np.testing.assert_allclose(embed_2d(points.tolist(), "pca"), expected)
    grad = torch.tensor(points, dtype=torch.float32, requires_grad=True)
    np.testing.assert_allclose(embed_2d(grad, "pca"), expected, atol=1e-4)


def test_missing_umap_raises_a_clear_import_error(points, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # makes `import umap` fail
    with pytest.raises(MissingDependencyError) as info:
        embed_2d(points, "umap")
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value, MMKDError)
    message = str(info.value)
    assert 'pip install "mmkd-utils[umap]"' in message
    assert "pip install umap-learn" in message


def test_a_foreign_umap_package_is_reported(points, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", types.ModuleType("umap"))
    with pytest.raises(MissingDependencyError, match=r"not umap-learn.*pip uninstall umap"):
        embed_2d(points, "umap")


def test_missing_umap_error_comes_before_any_drawing(points, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)
    fig = Figure()
    ax = fig.add_subplot()
    with pytest.raises(ImportError, match="umap-learn"):
        plot_embedding_map(points, method="umap", ax=ax)
    assert len(ax.collections) == 0


def test_umap_runs_reproducibly_when_installed(points):
    pytest.importorskip("umap", reason="umap-learn is optional: pip install umap-learn")
    first = embed_2d(points, "umap", random_state=0)
    second = embed_2d(points, "UMAP", random_state=0)
    assert first.shape == (24, 2)
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    fig = plot_embedding_map(points, method="umap")
    assert "UMAP" in fig.axes[0].get_title()


# --------------------------------------------------------------------------- plot_embedding_map


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_map_draws_the_embed_2d_coordinates_with_the_method_in_the_title(points, method):
    fig = plot_embedding_map(points, method=method)
    ax = fig.axes[0]
    assert isinstance(fig, Figure)
    np.testing.assert_allclose(scatter_coords(ax), embed_2d(points, method))
    assert {"pca": "PCA", "tsne": "t-SNE"}[method] in ax.get_title()
    assert ax.get_legend() is None  # no labels: one colour, no legend
    assert len(ax.collections) == 1


def test_same_input_gives_the_same_picture(points):
    first = plot_embedding_map(points, LABELS * 3, method="tsne")._repr_png_()
    second = plot_embedding_map(points, LABELS * 3, method="tsne")._repr_png_()
    assert first == second


def test_legend_entries_are_the_unique_labels_in_order_of_appearance(points):
    ax = plot_embedding_map(points, np.array(LABELS * 3)).axes[0]
    assert legend_texts(ax) == ["CT", "MRI", "X-ray"]
    colors = [tuple(c.get_facecolor()[0]) for c in ax.collections]
    assert len(set(colors)) == 3
    # each label's points are the rows with that label
    coords = embed_2d(points)
    for collection, label in zip(ax.collections, ["CT", "MRI", "X-ray"], strict=True):
        rows = [i for i, value in enumerate(LABELS * 3) if value == label]
        np.testing.assert_allclose(collection.get_offsets(), coords[rows])


def test_numeric_and_torch_labels_are_grouped_by_value(points):
    torch = pytest.importorskip("torch")
    labels = torch.tensor([2, 0, 1] * 8)
    assert legend_texts(plot_embedding_map(points, labels).axes[0]) == ["2", "0", "1"]


def test_many_labels_get_distinct_styles_and_a_legend_outside_the_axes():
    rng = np.random.default_rng(1)
    labels = [f"class {i}" for i in range(25)] * 2
    ax = plot_embedding_map(rng.normal(size=(50, 8)), labels).axes[0]
    assert legend_texts(ax) == [f"class {i}" for i in range(25)]
    styles = {
        (tuple(c.get_facecolor()[0]), c.get_paths()[0].vertices.tobytes()) for c in ax.collections
    }
    assert len(styles) == 25
    anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert anchor.x0 > 1.0


def test_thumbnails_add_one_framed_annotation_box_per_point(points, tmp_path):
    path = tmp_path / "scan.png"
    Image.fromarray(np.full((200, 100), 90, dtype=np.uint8)).save(path)
    thumbnails = [np.random.default_rng(i).random((120, 90)) for i in range(23)] + [path]
    labels = LABELS * 3
    ax = plot_embedding_map(points, labels, thumbnails=thumbnails).axes[0]

    boxes = thumbnail_boxes(ax)
    assert len(boxes) == 24
    coords = embed_2d(points)
    colour_of = {
        label: to_rgba(c.get_facecolor()[0], alpha=1.0)
        for label, c in zip(["CT", "MRI", "X-ray"], ax.collections, strict=True)
    }
    for i, box in enumerate(boxes):
        assert box.xy == pytest.approx(tuple(coords[i]))
        assert max(box.offsetbox.get_data().shape[:2]) <= THUMBNAIL_SIZE
        assert to_rgba(box.patch.get_edgecolor(), alpha=1.0) == colour_of[labels[i]]
    assert boxes[-1].offsetbox.get_data().shape == (THUMBNAIL_SIZE, THUMBNAIL_SIZE // 2, 3)
    assert ax.figure._repr_png_().startswith(b"\x89PNG")


def test_thumbnails_without_labels_and_small_images_keep_their_size(points):
    ax = plot_embedding_map(points, thumbnails=[np.zeros((10, 12, 3))] * 24).axes[0]
    assert len(thumbnail_boxes(ax)) == 24
    assert thumbnail_boxes(ax)[0].offsetbox.get_data().shape == (10, 12, 3)


def test_map_into_an_existing_axes_returns_its_figure(points):
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plot_embedding_map(points, LABELS * 3, ax=right) is fig
    assert len(left.collections) == 0 and len(right.collections) == 3


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(lambda p: embed_2d(p[:1]), ValueError, r"embeddings has 1 row.*at least 2",
                     id="one point pca"),
        pytest.param(lambda p: embed_2d(p[:3], "tsne"), ValueError,
                     r"embeddings has 3 row.*t-SNE.*at least 4", id="three points tsne"),
        pytest.param(lambda p: embed_2d(p[:3], "umap"), ValueError,
                     r"embeddings has 3 row.*UMAP.*at least 4", id="three points umap"),
        pytest.param(lambda p: embed_2d(np.where(p == p[2, 3], np.nan, p)), ValueError,
                     r"embeddings holds 1 non-finite.*row 2 \(column 3\)", id="nan"),
        pytest.param(lambda p: embed_2d(p[0]), ValueError,
                     r"embeddings must be 2-D.*embeddings\[None\]", id="1-D"),
        pytest.param(lambda p: embed_2d(p[:, :1]), ValueError, r"embeddings has 1 column",
                     id="one column"),
        pytest.param(lambda p: embed_2d(np.ones((5, 4))), ValueError,
                     r"all 5 rows of embeddings are identical", id="identical rows"),
        pytest.param(lambda p: embed_2d([["a", "b"], ["c", "d"]]), ValueError,
                     r"embeddings must be numbers", id="text"),
        pytest.param(lambda p: embed_2d(p, "lda"), ValueError,
                     r"method must be one of 'pca', 'tsne' or 'umap', got 'lda'", id="method"),
        pytest.param(lambda p: embed_2d(p, None), ValueError, r"method must be one of",
                     id="method None"),
        pytest.param(lambda p: embed_2d(p, "tsne", perplexity=24), ValueError,
                     r"perplexity must be above 0 and below the number of points \(24\)",
                     id="perplexity too large"),
        pytest.param(lambda p: embed_2d(p, "tsne", perplexity=0), ValueError,
                     r"perplexity must be above 0", id="perplexity 0"),
        pytest.param(lambda p: embed_2d(p, "tsne", perplexity="5"), ValueError,
                     r"perplexity must be a number", id="perplexity str"),
        pytest.param(lambda p: embed_2d(p, "pca", perplexity=5), ValueError,
                     r"perplexity only applies to method='tsne'", id="perplexity with pca"),
        pytest.param(lambda p: embed_2d(p, "tsne", random_state=-1), ValueError,
                     r"random_state must be a whole number", id="random_state negative"),
        pytest.param(lambda p: embed_2d(p, "tsne", random_state=1.5), ValueError,
                     r"random_state must be a whole number", id="random_state float"),
        pytest.param(lambda p: plot_embedding_map(p, ["CT", "MRI"]), ValueError,
                     r"labels has 2 entries but embeddings has 24 rows", id="labels length"),
        pytest.param(lambda p: plot_embedding_map(p, "CT"), ValueError,
                     r"labels must be a list.*not one string", id="labels str"),
        pytest.param(lambda p: plot_embedding_map(p, np.zeros((24, 2))), ValueError,
                     r"labels\[0\] is a list.*labels must be 1-D", id="labels 2-D"),
        pytest.param(lambda p: plot_embedding_map(p, thumbnails=[np.zeros((4, 4))] * 3),
                     ValueError, r"thumbnails has 3 entries but embeddings has 24 rows",
                     id="thumbnails length"),
        pytest.param(lambda p: plot_embedding_map(p, thumbnails="scan.png"), ValueError,
                     r"thumbnails must be a list", id="thumbnails str"),
        pytest.param(lambda p: plot_embedding_map(p, thumbnails=[np.zeros((3, 8, 8))] * 24),
                     ImageLoadError, r"thumbnails\[0\] has shape \(3, 8, 8\).*permute",
                     id="channels-first thumbnail"),
        pytest.param(lambda p: plot_embedding_map(p, thumbnails=["missing.png"] * 24),
                     ImageLoadError, r"thumbnails\[0\]: Image missing.png does not exist",
                     id="missing thumbnail file"),
        pytest.param(lambda p: plot_embedding_map(p, method="kmeans"), ValueError,
                     r"method must be one of", id="map method"),
        pytest.param(lambda p: plot_embedding_map(p[:3], method="tsne"), ValueError,
                     r"embeddings has 3 row", id="map too few points"),
    ],
)  # fmt: skip
def test_bad_map_input_raises_naming_the_argument(points, call, error, match):
    with pytest.raises(error, match=match):
        call(points)


# --------------------------------------------------------------------------- heat map


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def cell_texts(ax) -> np.ndarray:
    """Cell texts as an array indexed [row, column], from their positions."""
    rows = int(max(t.get_position()[1] for t in ax.texts)) + 1
    cols = int(max(t.get_position()[0] for t in ax.texts)) + 1
    table = np.empty((rows, cols), dtype=object)
    for text in ax.texts:
        x, y = text.get_position()
        table[int(y), int(x)] = text
    return table


@pytest.fixture
def pairs():
    rng = np.random.default_rng(2)
    return rng.normal(size=(5, 32)) * 3.0, rng.normal(size=(4, 32)) * 0.5


def test_heatmap_cells_show_the_cosine_matrix_rounded(pairs):
    images, texts = pairs
    image_names = [f"image_{i}.png" for i in range(5)]
    prompts = ["a CT", "an MRI", "an X-ray", "a fundus photograph"]
    fig = plot_similarity_heatmap(images, texts, image_names, prompts)
    ax = fig.axes[0]
    expected = cosine(images, texts)
    table = cell_texts(ax)
    assert table.shape == (5, 4)
    got = [[t.get_text() for t in row] for row in table]
    assert got == [[f"{round(v, 2) + 0.0:.2f}" for v in row] for row in expected]
    np.testing.assert_allclose(ax.images[0].get_array(), expected)
    assert [t.get_text() for t in ax.get_yticklabels()] == image_names
    assert [t.get_text() for t in ax.get_xticklabels()] == prompts
    assert "cosine" in ax.get_title().lower()
    assert len(fig.axes) == 2  # the heat map and its colour bar


def test_heatmap_normalises_defensively_and_accepts_torch(pairs):
    torch = pytest.importorskip("torch")
    images, texts = pairs
    raw = plot_similarity_heatmap(images, texts, list("abcde"), list("wxyz")).axes[0]
    scaled = plot_similarity_heatmap(
        torch.tensor(images * 100.0), torch.tensor(texts / 7.0), list("abcde"), list("wxyz")
    ).axes[0]
    np.testing.assert_allclose(raw.images[0].get_array(), scaled.images[0].get_array())


def test_heatmap_text_colour_is_readable_on_dark_and_light_cells():
    images = np.array([[1.0, 0.0], [0.0, 1.0]])
    texts = np.array([[1.0, 0.0], [0.0, 1.0]])
    table = cell_texts(plot_similarity_heatmap(images, texts, ["a", "b"], ["x", "y"]).axes[0])
    assert table[0, 0].get_color() == "black"  # 1.00: bright yellow in viridis
    assert table[0, 1].get_color() == "white"  # 0.00: dark purple
    assert table[0, 1].get_text() == "0.00"


def test_heatmap_wraps_long_text_labels(pairs):
    images, texts = pairs
    long_prompt = "a chest radiograph showing a right lower lobe consolidation due to pneumonia"
    ax = plot_similarity_heatmap(images, texts, list("abcde"), [long_prompt, "b", "c", "d"]).axes[0]
    wrapped = ax.get_xticklabels()[0].get_text()
    assert "\n" in wrapped
    assert all(len(line) <= plotting.COLUMN_WRAP_WIDTH for line in wrapped.splitlines())
    assert wrapped.replace("\n", " ") == long_prompt


def test_probabilities_mode_shows_row_softmax_that_sums_to_one(pairs):
    images, texts = pairs
    ax = plot_similarity_heatmap(
        images, texts, list("abcde"), list("wxyz"), probabilities=True, logit_scale=100.0
    ).axes[0]
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown.sum(axis=1), 1.0)
    logits = 100.0 * cosine(images, texts)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(shown, expected / expected.sum(axis=1, keepdims=True))
    assert [[t.get_text() for t in row] for row in cell_texts(ax)] == [
        [f"{round(v, 2) + 0.0:.2f}" for v in row] for row in shown
    ]
    assert "softmax" in ax.get_title().lower()
    assert "100" in ax.get_title()


def test_probabilities_accept_a_torch_logit_scale(pairs):
    torch = pytest.importorskip("torch")
    images, texts = pairs
    ax = plot_similarity_heatmap(
        images, texts, list("abcde"), list("wxyz"), probabilities=True,
        logit_scale=torch.tensor(50.0, requires_grad=True),
    ).axes[0]  # fmt: skip
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()).sum(axis=1), 1.0)


def test_heatmap_into_an_existing_axes(pairs):
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_similarity_heatmap(*pairs, list("abcde"), list("wxyz"), ax=ax) is fig
    assert len(ax.texts) == 20


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(dict(text_embeddings=np.ones((4, 8))), ValueError,
                     r"image_embeddings has 32 dimensions per row but text_embeddings has 8",
                     id="dims differ"),
        pytest.param(dict(image_embeddings=np.ones(32)), ValueError,
                     r"image_embeddings must be 2-D", id="1-D images"),
        pytest.param(dict(text_embeddings=np.full((4, 32), np.inf)), ValueError,
                     r"text_embeddings holds 128 non-finite", id="inf texts"),
        pytest.param(dict(text_embeddings=np.vstack([np.ones((3, 32)), np.zeros((1, 32))])),
                     ValueError, r"text_embeddings\[3\] is all zeros", id="zero text row"),
        pytest.param(dict(image_labels=["a"]), ValueError,
                     r"image_labels has 1 entries but image_embeddings has 5 rows",
                     id="image labels length"),
        pytest.param(dict(image_labels="scan.png"), ValueError,
                     r"image_labels must be a list.*'scan.png'", id="image labels str"),
        pytest.param(dict(text_labels=["x", "y"]), PromptError,
                     r"text_labels has 2 entries but text_embeddings has 4 rows",
                     id="text labels length"),
        pytest.param(dict(text_labels=None), PromptError, r"text_labels must be a list",
                     id="text labels None"),
        pytest.param(dict(probabilities=True), ValueError,
                     r"probabilities=True needs logit_scale", id="no logit_scale"),
        pytest.param(dict(logit_scale=100.0), ValueError,
                     r"logit_scale is only used with probabilities=True", id="unused scale"),
        pytest.param(dict(probabilities=True, logit_scale=-1.0), ValueError,
                     r"logit_scale must be a finite number above 0", id="negative scale"),
        pytest.param(dict(probabilities=True, logit_scale="100"), ValueError,
                     r"logit_scale must be one positive number", id="str scale"),
    ],
)  # fmt: skip
def test_bad_heatmap_input_raises_naming_the_argument(pairs, kwargs, error, match):
    images, texts = pairs
    arguments = dict(
        image_embeddings=images,
        text_embeddings=texts,
        image_labels=list("abcde"),
        text_labels=list("wxyz"),
    )
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        plot_similarity_heatmap(**arguments)


# --------------------------------------------------------------------------- gallery


def results_table(n_queries: int = 2, k: int = 3, label: bool = True) -> pd.DataFrame:
    """A table shaped like mmkd_utils.tasks.retrieval.search output, images as arrays."""
    rng = np.random.default_rng(3)
    rows = []
    for q in range(n_queries):
        for rank in range(1, k + 1):
            row = {
                "query": f"query {q}: a chest X-ray with a right lower lobe pneumonia",
                "rank": rank,
                "path": rng.random((20, 30)),
                "score": 0.5 - 0.1 * rank + q / 100,
            }
            if label:
                row["label"] = "pneumonia" if rank % 2 else "normal"
            rows.append(row)
    return pd.DataFrame(rows)


def test_gallery_has_one_image_axes_per_result_titled_with_rank_score_and_label():
    results = results_table()
    fig = plot_gallery(results)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6
    assert all(len(ax.images) == 1 and not ax.axison for ax in fig.axes)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "#1 · 0.400\npneumonia"
    for ax, (_, row) in zip(fig.axes, results.iterrows(), strict=True):
        assert f"#{row['rank']} · {row['score']:.3f}" in ax.get_title()
        assert row["label"] in ax.get_title()
    blocks = [block.get_suptitle() for block in fig.subfigs]
    assert [b.replace("\n", " ") for b in blocks] == list(results["query"].unique())
    assert fig._repr_png_().startswith(b"\x89PNG")


def test_gallery_k_limits_and_rank_orders_the_images():
    results = results_table(k=4).sample(frac=1.0, random_state=0)  # shuffled rows
    fig = plot_gallery(results, k=2)
    assert len(fig.axes) == 4
    ranks = [ax.get_title().split(" ")[0] for ax in fig.axes]
    assert ranks == ["#1", "#2", "#1", "#2"]


def test_gallery_wraps_images_onto_rows_and_works_without_labels():
    fig = plot_gallery(results_table(n_queries=1, k=5, label=False), images_per_row=2)
    assert len(fig.axes) == 5
    assert all("\n" not in ax.get_title() for ax in fig.axes)
    geometry = [ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes]
    assert set(geometry) == {(3, 2)}


def test_gallery_loads_file_paths_and_uses_title_column(tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(path)
        paths.append(str(path))
    results = pd.DataFrame(
        {"text": ["a CT", "a CT"], "rank": [1, 2], "path": paths, "score": [0.3, 0.2]}
    )
    fig = plot_gallery(results, title_column="text")
    assert [ax.images[0].get_array().shape for ax in fig.axes] == [(16, 16, 3)] * 2
    assert fig.subfigs[0].get_suptitle() == "a CT"


def test_gallery_accepts_the_output_of_retrieval_search(tmp_path):
    retrieval = pytest.importorskip("mmkd_utils.tasks.retrieval")
    paths = []
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((8, 8), 60 * i, dtype=np.uint8)).save(path)
        paths.append(str(path))
    results = retrieval.search(np.eye(4)[:2] + 0.1, np.eye(4), k=3, paths=paths)
    fig = plot_gallery(results)
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title().startswith("#1 · ")


@pytest.mark.parametrize(
    ("results", "kwargs", "error", "match"),
    [
        pytest.param([1, 2], {}, ValueError, r"results must be the pandas DataFrame",
                     id="not a DataFrame"),
        pytest.param(results_table().drop(columns=["score"]), {}, ValueError,
                     r"results is missing the column\(s\) 'score'", id="no score"),
        pytest.param(results_table(), dict(title_column="caption"), ValueError,
                     r"missing the column\(s\) 'caption'.*set title_column", id="title_column"),
        pytest.param(results_table().iloc[:0], {}, ValueError, r"results is empty", id="empty"),
        pytest.param(results_table(), dict(k=0), ValueError, r"k must be at least 1",
                     id="k 0"),
        pytest.param(results_table(), dict(images_per_row=2.5), ValueError,
                     r"images_per_row must be a positive whole number", id="images_per_row float"),
        pytest.param(results_table().assign(score="high"), {}, ValueError,
                     r"results\['score'\] must be numbers", id="text scores"),
        pytest.param(results_table().assign(path="missing.png"), {}, ImageLoadError,
                     r"results\['path'\]\[0\]: Image missing.png does not exist",
                     id="missing file"),
        pytest.param(results_table().assign(path=7), {}, ImageLoadError,
                     r"results\['path'\]\[0\] is the row number 7.*paths=", id="row numbers"),
    ],
)  # fmt: skip
def test_bad_gallery_input_raises_naming_the_argument(results, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_gallery(results, **kwargs)


# --------------------------------------------------------------------------- module


def test_plotting_still_offers_embed_2d():
    assert plotting.embed_2d is embed_2d  # notebook 04 imports it from plotting


def test_new_plots_do_not_import_pyplot_or_umap(fresh_imports):
    assert fresh_fact(fresh_imports, "maps")["imported"] == []


# --------------------------------------------------------------------------- probe curve


@pytest.fixture(scope="module")
def probe_result():
    from mmkd_utils.tasks.probe import linear_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    y = np.array(["benign", "malignant", "normal"] * 20)
    x[y == "malignant"] += 2.0
    x[y == "normal"] -= 2.0
    return linear_probe(x[:45], y[:45], x[45:], y[45:], shots=(1, 2, 4, "all"), seeds=(0, 5))


def dashed_lines(ax):
    return [line for line in ax.lines if line.get_linestyle() == "--"]


def test_probe_curve_has_one_point_per_shot_count_and_the_zero_shot_line(probe_result):
    fig = plotting.plot_probe_curve(probe_result, zero_shot_accuracy=0.55)
    assert isinstance(fig, Figure) and fig._repr_png_().startswith(b"\x89PNG")
    (ax,) = fig.axes
    (container,) = ax.containers
    line = container.lines[0]
    assert list(line.get_xdata()) == [1.0, 2.0, 4.0, 8.0]  # "all" one doubling after 4
    np.testing.assert_allclose(line.get_ydata(), probe_result.summary["mean_accuracy"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "all"]
    assert ax.get_xscale() == "log"
    (dashed,) = dashed_lines(ax)
    assert list(dashed.get_ydata()) == [0.55, 0.55]


def test_probe_curve_without_zero_shot_has_no_dashed_line(probe_result):
    assert not dashed_lines(plotting.plot_probe_curve(probe_result).axes[0])


def test_probe_curve_takes_an_evaluation_result_and_an_axes(probe_result):
    fig = Figure()
    ax = fig.add_subplot()
    assert (
        plotting.plot_probe_curve(probe_result, types.SimpleNamespace(accuracy=0.4), ax=ax) is fig
    )
    assert list(dashed_lines(ax)[0].get_ydata()) == [0.4, 0.4]


@pytest.mark.parametrize("value", [1.5, -0.1, "high", True])
def test_probe_curve_rejects_a_bad_zero_shot_accuracy(probe_result, value):
    from mmkd_utils.errors import ProbeError

    with pytest.raises(ProbeError, match="zero_shot_accuracy"):
        plotting.plot_probe_curve(probe_result, value)


# --------------------------------------------------------------------------- model comparison


class FixedModel:
    """A stand-in model with given probabilities (rows: images, columns: prompts)."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, dtype=np.float32)

    def zero_shot(self, images, prompts):
        import torch

        assert len(images) == self.probs.shape[0] and len(prompts) == self.probs.shape[1]
        return torch.from_numpy(self.probs)


def comparison(models: dict, n_images: int, prompts: list[str]) -> pd.DataFrame:
    from mmkd_utils.tasks.compare import compare_models

    images = [np.full((4, 4), 40 * i, np.uint8) for i in range(n_images)]
    names = [f"img{i}.png" for i in range(n_images)]
    return compare_models(models, images, prompts, image_names=names)


def test_comparison_has_one_bar_per_model_prompt_and_image():
    rng = np.random.default_rng(0)
    prompts = ["A chest X-ray.", "An MRI scan of the brain.", "A fundus photograph."]
    models = {name: FixedModel(rng.dirichlet(np.ones(3), size=4)) for name in "abc"}
    table = comparison(models, 4, prompts)
    fig = plotting.plot_model_comparison(table)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert sum(len(ax.patches) for ax in fig.axes) == 4 * 3 * 3
    for ax in fig.axes:  # the first prompt at the top
        ticks = [t.get_text() for t in ax.get_yticklabels()]
        labels = sorted(zip(ax.get_yticks(), ticks, strict=True))
        assert [text for _, text in labels] == prompts[::-1]
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "c"]
    fig.canvas.draw()  # it renders

    one = plotting.plot_model_comparison(table, image="img1.png")
    assert len(one.axes) == 1 and len(one.axes[0].patches) == 3 * 3
    assert "img1.png" in one.axes[0].get_title()
    assert "img3.png" in plotting.plot_model_comparison(table, image=-1).axes[0].get_title()


def test_comparison_title_says_whether_models_agree():
    models = {"a": FixedModel([[0.9, 0.1], [0.9, 0.1]]), "b": FixedModel([[0.8, 0.2], [0.3, 0.7]])}
    fig = plotting.plot_model_comparison(comparison(models, 2, ["x", "y"]))
    assert "the same" in fig.axes[0].get_title() and "differs" in fig.axes[1].get_title()
    values = sorted(round(p.get_width(), 3) for p in fig.axes[1].patches)
    assert values == [0.1, 0.3, 0.7, 0.9]


def test_comparison_rejects_unknown_images_and_tables():
    table = comparison({"a": FixedModel([[0.9, 0.1]])}, 1, ["x", "y"])
    with pytest.raises(ValueError, match="not in the table"):
        plotting.plot_model_comparison(table, image="missing.png")
    with pytest.raises(ValueError, match="out of range"):
        plotting.plot_model_comparison(table, image=3)
    with pytest.raises(ValueError, match="compare_models"):
        plotting.plot_model_comparison(table[["image", "prompt"]])
