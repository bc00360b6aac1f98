"""Tests for :mod:`mmkd_utils.plotting` (probability bars and prediction grids)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from PIL import Image
from support import fresh_fact

from mmkd_utils.errors import ArgumentError, ImageLoadError, MMKDError, PromptError
from mmkd_utils.plotting import (
    LABEL_WRAP_WIDTH,
    plot_benchmark,
    plot_few_shot,
    plot_predictions,
    plot_probability_bars,
)

matplotlib.use("Agg")  # headless; only the tests pick a backend, never the package

PROBS = [0.05, 0.6, 0.1, 0.25]
LABELS = ["a brain MRI", "a chest X-ray", "a skin lesion", "a knee CT"]


# --------------------------------------------------------------------------- helpers


def bar_widths(ax) -> list[float]:
    """Bar widths read back from the Axes, top bar first."""
    bars = sorted(ax.patches, key=lambda p: p.get_y(), reverse=True)
    return [bar.get_width() for bar in bars]


def bar_texts(ax) -> list[str]:
    """Value texts written on the bars, top first."""
    return [t.get_text() for t in sorted(ax.texts, key=lambda t: t.get_position()[1], reverse=True)]


def tick_labels(ax) -> list[str]:
    """Y tick labels, top first."""
    pairs = zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()], strict=True)
    return [text for _, text in sorted(pairs, reverse=True)]


def only_axes(fig: Figure):
    assert len(fig.axes) == 1
    return fig.axes[0]


@pytest.fixture
def no_new_pyplot_figures():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


# --------------------------------------------------------------------------- bars


def test_bars_sorted_highest_first_with_matching_labels_and_texts(no_new_pyplot_figures):
    fig = plot_probability_bars(np.array(PROBS), LABELS)
    ax = only_axes(fig)

    assert isinstance(fig, Figure)
    assert bar_widths(ax) == pytest.approx([0.6, 0.25, 0.1, 0.05])
    assert tick_labels(ax) == ["a chest X-ray", "a knee CT", "a skin lesion", "a brain MRI"]
    assert bar_texts(ax) == ["0.600", "0.250", "0.100", "0.050"]
    # each value text sits at its own bar's height
    bar_ys = sorted(p.get_y() + p.get_height() / 2 for p in ax.patches)
    text_ys = sorted(t.get_position()[1] for t in ax.texts)
    assert text_ys == pytest.approx(bar_ys)


def test_x_axis_runs_from_0_to_1():
    ax = only_axes(plot_probability_bars([0.3, 0.2], ["a", "b"]))
    assert ax.get_xlim() == (0.0, 1.0)


def test_value_text_inside_a_nearly_full_bar_stays_within_the_axis():
    ax = only_axes(plot_probability_bars([0.99, 0.01], ["a", "b"]))
    assert bar_texts(ax) == ["0.990", "0.010"]
    for text in ax.texts:
        assert 0.0 <= text.get_position()[0] <= 1.0


def test_ties_keep_the_input_order():
    ax = only_axes(plot_probability_bars([0.25, 0.5, 0.25], ["first", "big", "second"]))
    assert tick_labels(ax) == ["big", "first", "second"]


def test_long_labels_are_wrapped_without_losing_words():
    long_label = (
        "a chest radiograph showing a right lower lobe consolidation consistent with "
        "community acquired pneumonia"
    )
    ax = only_axes(plot_probability_bars([0.4, 0.6], [long_label, "short"]))
    wrapped = tick_labels(ax)[1]
    assert "\n" in wrapped
    assert all(len(line) <= LABEL_WRAP_WIDTH for line in wrapped.splitlines())
    assert wrapped.replace("\n", " ") == long_label
    assert tick_labels(ax)[0] == "short"


@pytest.mark.parametrize(
    ("top_k", "expected"),
    [(1, [0.6]), (2, [0.6, 0.25]), (4, [0.6, 0.25, 0.1, 0.05]), (99, [0.6, 0.25, 0.1, 0.05])],
)
def test_top_k_limits_the_bars_to_the_largest(top_k, expected):
    ax = only_axes(plot_probability_bars(PROBS, LABELS, top_k=top_k))
    assert len(ax.patches) == len(expected)
    assert len(ax.texts) == len(expected)
    assert len(ax.get_yticklabels()) == len(expected)
    assert bar_widths(ax) == pytest.approx(expected)


def test_top_k_none_shows_all_and_numpy_int_is_accepted():
    assert len(only_axes(plot_probability_bars(PROBS, LABELS, top_k=None)).patches) == 4
    assert len(only_axes(plot_probability_bars(PROBS, LABELS, top_k=np.int64(3))).patches) == 3


def test_new_figure_is_taller_for_more_bars():
    few = plot_probability_bars([0.5, 0.5], ["a", "b"])
    many = plot_probability_bars(np.full(12, 1 / 12), [f"label {i}" for i in range(12)])
    assert many.get_size_inches()[1] > few.get_size_inches()[1]


def test_drawing_into_an_existing_axes_returns_its_figure(no_new_pyplot_figures):
    fig = Figure()
    ax_left, ax_right = fig.subplots(1, 2)
    returned = plot_probability_bars(PROBS, LABELS, ax=ax_right)
    assert returned is ax_right.figure
    assert returned is fig
    assert len(fig.axes) == 2
    assert len(ax_right.patches) == 4
    assert len(ax_left.patches) == 0


def test_drawing_into_a_pyplot_axes_returns_that_figure():
    fig, ax = plt.subplots()
    try:
        assert plot_probability_bars(PROBS, LABELS, ax=ax) is fig
        assert plt.get_fignums() == [fig.number]  # no extra figure was opened
    finally:
        plt.close(fig)


def test_figure_renders_itself_as_png_for_jupyter():
    fig = plot_probability_bars(PROBS, LABELS)
    png = fig._repr_png_()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_importing_the_module_does_not_import_pyplot_or_pick_a_backend(fresh_imports):
    assert fresh_fact(fresh_imports, "plotting")["imported"] == []
    assert fresh_fact(fresh_imports, "bar_charts")["imported"] == []  # nor do the calls
    # Nor does it need grad-cam (extra saliency): there it cannot be imported at all.
    assert fresh_fact(fresh_imports, "saliency")["imported"] == []


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(list, id="list"),
        pytest.param(tuple, id="tuple"),
        pytest.param(lambda p: np.asarray(p, dtype=np.float32), id="numpy-float32"),
        pytest.param(lambda p: np.asarray(p, dtype=np.float64), id="numpy-float64"),
        pytest.param("torch", id="torch-float32"),
        pytest.param("torch-grad", id="torch-requires-grad"),
        pytest.param("torch-bf16", id="torch-bfloat16"),
    ],
)
def test_list_numpy_and_torch_inputs_give_the_same_bars(convert):
    if isinstance(convert, str):
        torch = pytest.importorskip("torch")
        tensor = torch.tensor(PROBS, dtype=torch.float32)
        if convert == "torch-grad":
            tensor = tensor.clone().requires_grad_(True)
        elif convert == "torch-bf16":
            tensor = tensor.to(torch.bfloat16)
        probs = tensor
    else:
        probs = convert(PROBS)
    ax = only_axes(plot_probability_bars(probs, LABELS))
    assert bar_widths(ax) == pytest.approx([0.6, 0.25, 0.1, 0.05], abs=5e-3)
    assert tick_labels(ax) == ["a chest X-ray", "a knee CT", "a skin lesion", "a brain MRI"]


def test_a_softmax_row_from_torch_works():
    torch = pytest.importorskip("torch")
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    probs = logits.softmax(dim=-1)[0]
    ax = only_axes(plot_probability_bars(probs, ["x", "y", "z"]))
    assert bar_widths(ax) == pytest.approx(sorted(probs.tolist(), reverse=True), rel=1e-6)


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=20))
@settings(max_examples=60, deadline=None)
def test_bar_widths_top_to_bottom_are_the_inputs_sorted_descending(values):
    labels = [f"label {i}" for i in range(len(values))]
    ax = only_axes(plot_probability_bars(values, labels))
    assert bar_widths(ax) == sorted(values, reverse=True)
    assert bar_texts(ax) == [f"{v:.3f}" for v in sorted(values, reverse=True)]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("probs", "labels", "top_k", "error", "match"),
    [
        pytest.param([[0.5, 0.5]], ["a", "b"], None, ValueError, r"probs must be 1-D.*probs\[0\]",
                     id="2-D probs"),
        pytest.param(0.5, ["a"], None, ValueError, r"probs must be 1-D", id="scalar probs"),
        pytest.param([], [], None, ValueError, r"probs is empty", id="empty probs"),
        pytest.param([0.5, float("nan")], ["a", "b"], None, ValueError,
                     r"probs holds 1 non-finite.*index 1", id="nan"),
        pytest.param([float("inf"), 0.5], ["a", "b"], None, ValueError, r"probs.*non-finite",
                     id="inf"),
        pytest.param([3.2, -1.0], ["a", "b"], None, ValueError, r"probs.*between 0 and 1.*softmax",
                     id="logits"),
        pytest.param(["high", "low"], ["a", "b"], None, ValueError, r"probs must be numbers",
                     id="text probs"),
        pytest.param([0.2, 0.3, 0.5], ["a", "b"], None, PromptError,
                     r"labels has 2 entries but probs has 3", id="length mismatch"),
        pytest.param([1.0], "a chest X-ray", None, PromptError, r"labels must be a list.*not one",
                     id="labels is a string"),
        pytest.param([1.0], None, None, PromptError, r"labels must be a list", id="labels None"),
        pytest.param([0.5, 0.5], ["a", 3], None, PromptError, r"labels\[1\] is a int",
                     id="label not str"),
        pytest.param([0.5, 0.5], ["a", "  "], None, PromptError, r"labels\[1\] is blank",
                     id="blank label"),
        pytest.param(PROBS, LABELS, 0, ValueError, r"top_k must be at least 1", id="top_k 0"),
        pytest.param(PROBS, LABELS, -2, ValueError, r"top_k must be at least 1", id="top_k<0"),
        pytest.param(PROBS, LABELS, 2.5, ValueError, r"top_k must be a positive whole",
                     id="top_k float"),
        pytest.param(PROBS, LABELS, "3", ValueError, r"top_k must be a positive whole",
                     id="top_k str"),
        pytest.param(PROBS, LABELS, True, ValueError, r"top_k must be a positive whole",
                     id="top_k bool"),
    ],
)  # fmt: skip
def test_bad_input_to_bars_raises_naming_the_argument(
    probs, labels, top_k, error, match, no_new_pyplot_figures
):
    with pytest.raises(error, match=match) as info:
        plot_probability_bars(probs, labels, top_k=top_k)
    assert isinstance(info.value, ValueError)
    if error is PromptError:
        assert isinstance(info.value, MMKDError)
    else:
        assert not isinstance(info.value, PromptError)


def test_bad_input_leaves_the_given_axes_empty():
    fig = Figure()
    ax = fig.add_subplot()
    with pytest.raises(PromptError):
        plot_probability_bars([0.5, 0.5], ["only one"], ax=ax)
    assert len(ax.patches) == 0 and len(ax.texts) == 0


# --------------------------------------------------------------------------- predictions


def images_of_every_kind():
    """(image, expected array shape, expected to be shown in gray)."""
    palette = Image.new("P", (12, 10))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return [
        (Image.new("RGB", (30, 20), "red"), (20, 30, 3), False),
        (Image.new("L", (16, 24), 128), (24, 16), True),
        (palette, (10, 12, 3), False),
        (Image.new("RGBA", (8, 8)), (8, 8, 4), False),
        (Image.new("1", (5, 7)), (7, 5), True),
        (np.random.default_rng(0).random((9, 11)), (9, 11), True),
        (np.zeros((6, 4, 1), dtype=np.uint8), (6, 4), True),
        (np.zeros((6, 4, 3), dtype=np.uint8), (6, 4, 3), False),
    ]


def test_predictions_one_row_per_image_with_image_and_bars(no_new_pyplot_figures):
    cases = images_of_every_kind()
    n = len(cases)
    labels = [f"finding {j}" for j in range(7)]
    probs = np.random.default_rng(1).dirichlet(np.ones(len(labels)), size=n)
    titles = [f"image_{i}.png" for i in range(n)]

    fig = plot_predictions([c[0] for c in cases], probs, labels, top_k=3, titles=titles)

    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * n
    for i, (_, shape, gray) in enumerate(cases):
        image_ax, bar_ax = fig.axes[2 * i], fig.axes[2 * i + 1]
        assert len(image_ax.images) == 1
        shown = image_ax.images[0]
        assert shown.get_array().shape == shape
        assert (shown.get_cmap().name == "gray") == gray
        assert image_ax.get_title() == titles[i]
        assert not image_ax.axison
        assert len(image_ax.patches) == 0

        assert len(bar_ax.patches) == 3
        assert bar_widths(bar_ax) == pytest.approx(sorted(probs[i], reverse=True)[:3])
        top = [labels[j] for j in np.argsort(-probs[i], kind="stable")[:3]]
        assert tick_labels(bar_ax) == top


def test_predictions_gray_uint8_keeps_its_brightness():
    dark = np.full((5, 5), 20, dtype=np.uint8)
    fig = plot_predictions([dark], [[1.0]], ["a"])
    assert fig.axes[0].images[0].get_clim() == (0, 255)


def test_predictions_accept_torch_probs_and_hwc_tensor_images():
    torch = pytest.importorskip("torch")
    probs = torch.tensor([[0.1, 0.9], [0.7, 0.3]])
    images = [torch.zeros(4, 6, 3), torch.ones(5, 5)]
    fig = plot_predictions(images, probs, ["a", "b"], top_k=None)
    assert [ax.images[0].get_array().shape for ax in fig.axes[::2]] == [(4, 6, 3), (5, 5)]
    assert bar_widths(fig.axes[1]) == pytest.approx([0.9, 0.1])
    assert bar_widths(fig.axes[3]) == pytest.approx([0.7, 0.3])


def test_predictions_without_titles_and_top_k_larger_than_labels():
    fig = plot_predictions([np.zeros((3, 3))], [[0.2, 0.8]], ["a", "b"], top_k=10)
    assert fig.axes[0].get_title() == ""
    assert len(fig.axes[1].patches) == 2


def test_predictions_figure_height_grows_with_the_number_of_images():
    def height(n):
        fig = plot_predictions([np.zeros((4, 4))] * n, np.full((n, 2), 0.5), ["a", "b"])
        return fig.get_size_inches()[1]

    assert height(1) < height(2) < height(4)


def test_predictions_figure_renders_as_png():
    fig = plot_predictions([np.zeros((4, 4))], [[0.5, 0.5]], ["a", "b"], titles=["x.png"])
    assert fig._repr_png_().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(dict(probs=[0.5, 0.5]), ValueError, r"probs must be 2-D.*probs\[None\]",
                     id="1-D probs"),
        pytest.param(dict(probs=np.full((1, 2, 1), 0.5)), ValueError, r"probs must be 2-D",
                     id="3-D probs"),
        pytest.param(dict(probs=np.zeros((1, 0))), ValueError, r"probs has shape \(1, 0\)",
                     id="no labels in probs"),
        pytest.param(dict(probs=[[0.5, float("nan")]]), ValueError, r"probs.*non-finite",
                     id="nan probs"),
        pytest.param(dict(probs=[[4.0, -2.0]]), ValueError, r"probs.*softmax", id="logits"),
        pytest.param(dict(images=[]), ValueError, r"images has 0 entries but probs has 1 rows",
                     id="too few images"),
        pytest.param(dict(images=[np.zeros((4, 4))] * 2), ValueError,
                     r"images has 2 entries but probs has 1 rows", id="too many images"),
        pytest.param(dict(images=np.zeros((4, 4))), ValueError,
                     r"images has 4 entries but probs has 1 rows", id="one bare array"),
        pytest.param(dict(images=Image.new("RGB", (4, 4))), ValueError,
                     r"images must be a list.*\[image\]", id="one bare PIL image"),
        pytest.param(dict(labels=["a"]), PromptError,
                     r"labels has 1 entries but each row of probs", id="labels too short"),
        pytest.param(dict(labels="a"), PromptError, r"labels must be a list", id="labels str"),
        pytest.param(dict(titles=["x", "y"]), ValueError, r"titles has 2 entries but there are 1",
                     id="titles mismatch"),
        pytest.param(dict(titles="x.png"), ValueError, r"titles must be a list",
                     id="titles str"),
        pytest.param(dict(top_k=0), ValueError, r"top_k must be at least 1", id="top_k 0"),
        pytest.param(dict(images=[np.zeros((3, 8, 8))]), ImageLoadError,
                     r"images\[0\] has shape \(3, 8, 8\).*permute", id="channels-first"),
        pytest.param(dict(images=[np.zeros(5)]), ImageLoadError, r"images\[0\] has shape",
                     id="1-D image"),
        pytest.param(dict(images=[np.zeros((0, 4))]), ImageLoadError, r"images\[0\] is empty",
                     id="empty image"),
        pytest.param(dict(images=["cat.png"]), ImageLoadError,
                     r"cat.png does not exist", id="missing path"),
    ],
)  # fmt: skip
def test_bad_input_to_predictions_raises_naming_the_argument(
    kwargs, error, match, no_new_pyplot_figures
):
    arguments = dict(images=[np.zeros((4, 4))], probs=[[0.5, 0.5]], labels=["a", "b"])
    arguments.update(kwargs)
    with pytest.raises(error, match=match) as info:
        plot_predictions(**arguments)
    assert isinstance(info.value, ValueError)


def test_plot_predictions_accepts_file_paths(tmp_path):
    from PIL import Image as PILImage

    path = tmp_path / "sixteen_bit.png"
    PILImage.fromarray(np.linspace(0, 3000, 64 * 32).reshape(32, 64).astype(np.uint16)).save(path)
    fig = plot_predictions([path, str(path)], np.array([[0.7, 0.3], [0.4, 0.6]]), ["a", "b"])
    shown = fig.axes[0].images[0].get_array()
    assert shown.shape == (32, 64, 3)
    assert int(np.max(shown)) == 255  # loaded through to_rgb: rescaled, not clipped


# --------------------------------------------------------------------------- benchmarks


def results_table(rows: list[tuple]) -> pd.DataFrame:
    """A results_frame-like table from (model, dataset, method, shots, seed, value, low, high)."""
    columns = ["model", "dataset", "method", "shots", "seed", "value", "low", "high"]
    return pd.DataFrame(rows, columns=columns).assign(metric="auc")


ZERO_SHOT = results_table([
    ("m1", "path", "zero-shot", None, None, 0.80, 0.70, 0.90),
    ("m2", "path", "zero-shot", None, None, 0.60, 0.55, 0.66),
    ("m1", "derma", "zero-shot", None, None, 0.70, 0.65, 0.72),
    ("m2", "derma", "zero-shot", None, None, 0.90, 0.85, 0.95),
    ("m3", "derma", "zero-shot", None, None, 0.50, 0.40, 0.60),
])  # fmt: skip


def bar_spans(container) -> np.ndarray:
    """[n, 2]: (low, high) of each error bar of an errorbar container, from the drawn segments."""
    return np.array([(seg[0][1], seg[1][1]) for seg in container.lines[2][0].get_segments()])


def test_benchmark_draws_each_result_with_its_interval_per_dataset_and_model():
    ax = only_axes(plot_benchmark(ZERO_SHOT))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["path", "derma"]
    assert ax.get_xlim() == (-0.5, 1.5)
    assert [c.get_label() for c in ax.containers] == ["m1", "m2", "m3"]
    for container, model in zip(ax.containers, ["m1", "m2", "m3"], strict=True):
        mine = ZERO_SHOT[ZERO_SHOT["model"] == model]
        assert bar_spans(container) == pytest.approx(mine[["low", "high"]].to_numpy())
        x = container.lines[0].get_xdata()
        columns = mine["dataset"].map({"path": 0, "derma": 1}).to_numpy()
        assert np.all(np.abs(x - columns) < 0.4)  # offset within its dataset's column
    x_derma = sorted(c.lines[0].get_xdata()[-1] for c in ax.containers)
    assert len(set(np.round(x_derma, 6))) == 3  # three models side by side, not on top
    chance = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert [list(line.get_ydata()) for line in chance] == [[0.5, 0.5]]


def test_benchmark_chance_line_only_for_auc_and_probes_are_their_own_series():
    table = pd.concat(
        [ZERO_SHOT, results_table([("m1", "path", "linear probe", 16, 0, 0.9, 0.8, 1)])]
    )
    acc = table.assign(metric="acc")
    ax = only_axes(plot_benchmark(acc, "acc"))
    assert not [line for line in ax.lines if line.get_linestyle() == ":"]
    assert ax.get_ylabel() == "acc"
    assert [c.get_label() for c in ax.containers] == ["m1", "m2", "m3", "m1, linear probe k=16"]


def test_benchmark_point_outside_its_interval_gets_no_negative_bar():
    table = results_table([("m1", "path", "zero-shot", None, None, 0.95, 0.96, 0.99)])
    ((low, high),) = bar_spans(only_axes(plot_benchmark(table)).containers[0])
    assert (low, high) == pytest.approx((0.95, 0.99))


@pytest.mark.parametrize(
    "frame, match",
    [
        pytest.param(ZERO_SHOT.drop(columns="low"), r"columns", id="missing column"),
        pytest.param(ZERO_SHOT.to_dict(), r"columns", id="not a table"),
        pytest.param(ZERO_SHOT.assign(metric="acc"), r"metric='auc'.*acc", id="metric absent"),
    ],
)
def test_benchmark_bad_frame_raises_naming_the_problem(frame, match):
    with pytest.raises(ArgumentError, match=match) as info:
        plot_benchmark(frame)
    assert isinstance(info.value, ValueError)


FEW_SHOT = results_table(
    [("m1", "derma", "linear probe", k, seed, 0.6 + 0.05 * i + 0.01 * seed, 0.5, 0.95)
     for i, k in enumerate([1, 2, 4, 8, 16, "all"]) for seed in (0, 1, 2)]
    + [("m2", "derma", "linear probe", k, 0, 0.7, 0.6, 0.8) for k in (1, 4)]
    + [("m1", "derma", "zero-shot", None, None, 0.65, 0.61, 0.69)]
)  # fmt: skip


def test_few_shot_curve_log2_axis_all_at_the_right_seeds_means_and_zero_shot_band():
    ax = only_axes(plot_few_shot(FEW_SHOT))
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16", "all"]
    assert list(ax.get_xticks()) == [1, 2, 4, 8, 16, 32]  # "all" one doubling after 16
    assert ax.get_xlim()[1] > 32
    m1, m2 = ax.containers  # one errorbar per model: every seed a point with its interval
    assert len(m1.lines[0].get_xdata()) == 18 and len(m2.lines[0].get_xdata()) == 2
    assert bar_spans(m1) == pytest.approx(np.tile([0.5, 0.95], (18, 1)))
    mean = next(line for line in ax.lines if line.get_label() == "m1: mean of seeds")
    assert list(mean.get_xdata()) == [1, 2, 4, 8, 16, 32]
    assert list(mean.get_ydata()) == pytest.approx([0.61 + 0.05 * i for i in range(6)])
    zero = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in zero] == [[0.65, 0.65]]  # m2 has none
    (band,) = ax.patches
    ys = band.get_patch_transform().transform(band.get_path().vertices)[:, 1]  # data y
    assert (ys.min(), ys.max()) == pytest.approx((0.61, 0.69))
    assert "derma" in ax.get_title() and ax.get_ylabel() == "test auc"


def test_few_shot_draws_into_a_given_axes_and_without_all():
    fig = plt.figure()
    ax = fig.add_subplot()
    probes = FEW_SHOT[FEW_SHOT["shots"].isin([1, 2, 4])]
    assert plot_few_shot(probes, ax=ax) is fig
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4"]
    plt.close(fig)


@pytest.mark.parametrize(
    "frame, match",
    [
        pytest.param(FEW_SHOT.drop(columns="seed"), r"columns", id="missing column"),
        pytest.param(FEW_SHOT[FEW_SHOT["method"] == "zero-shot"], r"0 probe rows", id="no probes"),
        pytest.param(pd.concat([FEW_SHOT, FEW_SHOT.assign(dataset="path")]), r"one dataset",
                     id="two datasets"),
        pytest.param(FEW_SHOT.assign(metric="acc"), r"0 probe rows of 'auc'", id="metric absent"),
    ],
)  # fmt: skip
def test_few_shot_bad_frame_raises_naming_the_problem(frame, match):
    with pytest.raises(ArgumentError, match=match) as info:
        plot_few_shot(frame)
    assert isinstance(info.value, ValueError)
