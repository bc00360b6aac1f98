"""Every PIL mode and numpy dtype becomes an 8-bit RGB image, rescaled, never clipped."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from mmkd_utils import ImageLoadError, to_rgb
from mmkd_utils.images.pixels import array_to_image, linear_to_uint8, open_image


def _gradient(dtype, top):
    return (np.linspace(0, top, 64 * 48).reshape(48, 64)).astype(dtype)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (20, 10), 7),
        Image.new("LA", (20, 10), (7, 100)),
        Image.new("P", (20, 10), 3),
        Image.new("RGB", (20, 10), (1, 2, 3)),
        Image.new("RGBA", (20, 10), (1, 2, 3, 0)),
        Image.new("CMYK", (20, 10), (0, 50, 100, 0)),
        Image.new("1", (20, 10), 1),
        Image.fromarray(_gradient(np.uint16, 4000)[:10, :20]),  # I;16
        Image.fromarray(_gradient(np.int32, 70000)[:10, :20]),  # I
        Image.fromarray(_gradient(np.float32, 3.5)[:10, :20]),  # F
    ],
    ids=lambda im: im.mode,
)
def test_every_mode_becomes_rgb_of_the_same_size(image):
    out = to_rgb(image)
    assert out.mode == "RGB"
    assert out.size == (20, 10)


@pytest.mark.parametrize(
    "array",
    [
        _gradient(np.uint16, 4000),
        _gradient(np.int32, 70000),
        _gradient(np.float32, 3.5),
        _gradient(np.float64, -1.0),
        _gradient(np.int16, -3000),
    ],
    ids=["uint16", "int32", "float32", "float64-negative", "int16-negative"],
)
def test_high_depth_is_rescaled_to_full_range(array):
    for image in (array, Image.fromarray(array) if array.dtype != np.float64 else array):
        if isinstance(image, Image.Image) and image.mode not in ("I;16", "I", "F"):
            continue
        out = np.asarray(to_rgb(image))
        assert out.min() == 0 and out.max() == 255
        # Monotone in the input: a gradient stays a gradient (no clipping at 255).
        gray = out[..., 0].astype(int).ravel()
        order = np.argsort(np.asarray(array, dtype=np.float64).ravel(), kind="stable")
        assert np.all(np.diff(gray[order]) >= 0)
        # A value at 1/4 of the range lands near 1/4 of 255, not saturated.
        lo, hi = float(np.min(array)), float(np.max(array))
        idx = np.argmin(np.abs(np.asarray(array, dtype=np.float64) - (lo + (hi - lo) / 4)))
        assert abs(int(gray[idx]) - 64) <= 2


def test_sixteen_bit_png_file_is_not_clipped(tmp_path):
    path = tmp_path / "sixteen.png"
    Image.fromarray(_gradient(np.uint16, 1000)).save(path)
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(to_rgb(path))
    assert out.max() == 255 and out.min() == 0
    assert len(np.unique(out)) > 200  # a real gradient, not a white picture


def test_alpha_is_dropped_like_the_published_demo():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (10, 20, 30)
    assert to_rgb(np.full((4, 4, 4), 9, dtype=np.uint8)).getpixel((0, 0)) == (9, 9, 9)


def test_uint8_arrays_are_used_as_they_are():
    arr = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert np.array_equal(np.asarray(to_rgb(arr)), arr)
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert np.array_equal(np.asarray(to_rgb(gray))[..., 1], gray)
    assert np.array_equal(np.asarray(to_rgb(gray[..., None]))[..., 2], gray)


def test_non_finite_and_constant_arrays():
    arr = np.array([[np.nan, 1.0], [np.inf, 3.0]])
    out = np.asarray(to_rgb(arr))[..., 0]
    assert out.tolist() == [[0, 0], [0, 255]]
    assert np.asarray(to_rgb(np.full((3, 3), 7.0))).max() == 0
    assert np.asarray(to_rgb(np.full((3, 3), np.nan))).max() == 0
    assert np.asarray(to_rgb(np.ones((2, 2), dtype=bool))).min() == 255


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 32, 32)), "channels-first.*moveaxis"),
        (np.zeros((0, 5)), "empty"),
        (np.zeros((2, 2, 2, 2)), "4 dimensions"),
        (np.zeros(5), "1 dimensions"),
        (np.array([["a", "b"]]), "dtype"),
        (np.zeros((2, 2), dtype=complex), "dtype"),
    ],
)
def test_bad_arrays_raise_clear_errors(array, message):
    with pytest.raises(ImageLoadError, match=message):
        to_rgb(array)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match="ghost.png does not exist"):
        to_rgb(tmp_path / "ghost.png")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image")
    with pytest.raises(ImageLoadError, match="notes.png is not an image"):
        to_rgb(str(path))


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageLoadError, match="cut.png"):
        open_image(path)


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageLoadError, match="is a folder"):
        to_rgb(tmp_path)


def test_wrong_type():
    with pytest.raises(ImageLoadError, match="type int"):
        to_rgb(3)


_SHAPES = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda hw: st.sampled_from([hw, (*hw, 1), (*hw, 3), (*hw, 4)])
)
_ARRAYS = st.one_of(
    arrays(np.uint8, _SHAPES),
    arrays(np.uint16, _SHAPES),
    arrays(np.int32, _SHAPES),
    arrays(np.float32, _SHAPES, elements={"allow_nan": True, "allow_infinity": True}),
    arrays(np.float64, _SHAPES, elements={"allow_nan": True, "allow_infinity": True}),
)


@settings(max_examples=80, deadline=None)
@given(_ARRAYS)
def test_any_numeric_array_becomes_rgb(array):
    out = array_to_image(array)
    assert out.mode == "RGB"
    assert out.size == (array.shape[1], array.shape[0])
    colour = array[..., :3] if array.ndim == 3 and array.shape[-1] == 4 else array
    finite = colour[np.isfinite(colour.astype(np.float64))]
    if array.dtype != np.uint8 and finite.size > 1:
        if finite.min() != finite.max():  # rescaled from its own range (alpha ignored)
            values = np.asarray(out)
            assert values.min() == 0 and values.max() == 255


def test_linear_to_uint8_clips_outside_the_range():
    values = np.array([-50.0, 0.0, 25.0, 100.0, 1e9, np.nan, -np.inf])
    assert linear_to_uint8(values, 0.0, 100.0).tolist() == [0, 0, 64, 255, 255, 0, 0]
    assert linear_to_uint8(values, 5.0, 5.0).max() == 0
