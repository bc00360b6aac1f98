"""Probabilities are finite and sum to 1 for every accepted input, in every precision.

fp16 and bf16 run with CPU autocast here; a half-precision forward pass that overflows is
computed again in fp32 (one :class:`PrecisionFallbackWarning`), so NaN never reaches
the user.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from support import TINY, TINY_CHECKPOINT, TINY_TEXT

from mmkd_utils import PrecisionFallbackWarning, load_model, to_rgb

PROMPTS = ["A chest X-ray.", "A fundus photograph.", "An MRI of the brain."]
IMAGES = [TINY / "images" / "rgb_noise.png", np.full((20, 12), 3000, dtype=np.uint16)]


@pytest.fixture(scope="module")
def half_models(tmp_path_factory):
    """The tiny model in fp16 and bf16 (CPU autocast), loaded once."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MMKD_HOME", str(tmp_path_factory.mktemp("half_home")))
    try:
        yield {
            p: load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu", precision=p)
            for p in ("fp16", "bf16")
        }
    finally:
        mp.undo()


def assert_probabilities(probs: torch.Tensor, shape: tuple[int, int]) -> None:
    assert probs.shape == shape and probs.dtype == torch.float32
    assert torch.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(shape[0]), atol=1e-5)


_SHAPES = st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(
    lambda hw: st.sampled_from([hw, (*hw, 3), (*hw, 4)])
)
_IMAGES = st.one_of(
    arrays(np.uint8, _SHAPES),
    arrays(np.uint16, _SHAPES),
    arrays(np.float32, _SHAPES, elements={"allow_nan": True, "allow_infinity": True}),
    arrays(np.float64, _SHAPES, elements={"allow_nan": True, "allow_infinity": True}),
)
_PROMPTS = st.lists(st.text(min_size=1, max_size=60).filter(str.strip), min_size=1, max_size=4)


@settings(max_examples=12, deadline=None)
@given(st.lists(_IMAGES, min_size=1, max_size=3), _PROMPTS)
def test_any_accepted_input_gives_probabilities(tiny_model, images, prompts):
    """NaN, infinite and extreme pixel values, odd shapes, any text: still probabilities."""
    assert_probabilities(tiny_model.zero_shot(images, prompts), (len(images), len(prompts)))


def test_value_ranges_wider_than_float64_are_rescaled_not_blanked(tiny_model):
    """max - min overflows to inf here; the image must still span 0..255."""
    extreme = np.array([[5.4e299, -1.79e308], [0.0, 1.79e308]])
    grey = np.asarray(to_rgb(extreme))[..., 0]
    assert grey.tolist() == [[128, 0], [128, 255]]
    assert_probabilities(tiny_model.zero_shot([extreme], PROMPTS), (1, 3))


def test_cpu_autocast_supports_both_half_types():
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cpu", dtype=dtype):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_zero_shot_on_cpu(half_models, tiny_model, precision):
    clip = half_models[precision]
    assert clip.precision == precision
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionFallbackWarning)  # no overflow here
        probs = clip.zero_shot(IMAGES, PROMPTS)
    assert_probabilities(probs, (2, 3))
    assert torch.allclose(probs, tiny_model.zero_shot(IMAGES, PROMPTS), atol=0.05)


def _nan_under_autocast(encode):
    """``encode``, but NaN whenever autocast is on (an fp16 overflow, simulated)."""

    def wrapped(batch):
        out = encode(batch)
        return torch.full_like(out, float("nan")) if torch.is_autocast_enabled("cpu") else out

    return wrapped


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_non_finite_half_precision_batches_are_recomputed_in_fp32(
    half_models, tiny_model, monkeypatch, precision
):
    clip = half_models[precision]
    monkeypatch.setattr(clip, "_precision_warned", False)
    monkeypatch.setattr(clip.model, "encode_image", _nan_under_autocast(clip.model.encode_image))
    monkeypatch.setattr(clip.model, "encode_text", _nan_under_autocast(clip.model.encode_text))
    with pytest.warns(PrecisionFallbackWarning, match=f"{precision}.*precision='fp32'") as caught:
        images = clip.encode_images(IMAGES, batch_size=1)  # two batches, one warning
        texts = clip.encode_texts(PROMPTS)
        probs = clip.zero_shot(IMAGES, PROMPTS)
    assert len(caught) == 1
    torch.testing.assert_close(images, tiny_model.encode_images(IMAGES), atol=1e-5, rtol=0)
    torch.testing.assert_close(texts, tiny_model.encode_texts(PROMPTS), atol=1e-5, rtol=0)
    assert_probabilities(probs, (2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionFallbackWarning)
        clip.zero_shot(IMAGES, PROMPTS)  # warned once per model, not per call
