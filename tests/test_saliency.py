"""Saliency maps (:mod:`mmkd_utils.tasks.saliency`) and their plots, on the tiny model."""

from __future__ import annotations

import copy
import gc
import sys
import weakref
from types import SimpleNamespace

import matplotlib
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from scipy.stats import spearmanr
from torchvision.transforms import Compose, Resize

from mmkd_utils.errors import ArgumentError, MissingDependencyError, PromptError
from mmkd_utils.images import load_image
from mmkd_utils.plotting import plot_saliency, plot_sanity_check
from mmkd_utils.samples import sample_images
from mmkd_utils.tasks import saliency
from mmkd_utils.tasks.saliency import explain, patch_spearman, sanity_check

matplotlib.use("Agg")
METHODS = ["gradcam", "attention"]
PROMPTS = ["A chest X-ray.", "A brain MRI scan."]


def wide_image() -> Image.Image:
    """200 × 112 px: the preprocessing doubles it to 400 × 224 and keeps columns 88-312,
    i.e. original columns 44-156. A bright patch at the left edge falls outside the crop."""
    pixels = np.full((112, 200, 3), 60, np.uint8)
    pixels[40:70, 5:35] = 250
    pixels[30:60, 90:120] = 200
    return Image.fromarray(pixels)


def hooks(model) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("method", METHODS)
def test_maps_have_both_resolutions_and_the_crop_maps_back_exactly(tiny_model, method):
    result = explain(tiny_model, wide_image(), PROMPTS, method=method)

    assert result.maps.shape == (2, 224, 224)
    assert result.original_maps.shape == (2, 112, 200)
    assert result.crop_box == (44.0, 0.0, 156.0, 112.0)
    assert np.isfinite(result.maps).all() and result.maps.min() >= 0 and result.maps.max() <= 1
    inside = result.original_maps[:, :, 44:156]
    assert np.isfinite(inside).all()
    assert np.isnan(result.original_maps[:, :, :44]).all()
    assert np.isnan(result.original_maps[:, :, 156:]).all()
    # each original pixel covers 2 × 2 view pixels; bilinear at its centre is their mean
    means = result.maps.reshape(2, 112, 2, 112, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(inside, means, atol=1e-6)


def test_probabilities_are_the_models_zero_shot_and_prompts_are_kept(tiny_model):
    result = explain(tiny_model, wide_image(), PROMPTS, method="attention")

    expected = tiny_model.zero_shot(wide_image(), PROMPTS)[0].numpy()
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    assert result.prompts == tuple(PROMPTS)
    assert result.image.size == (200, 112) and result.method == "attention"


@pytest.mark.parametrize("method", METHODS)
def test_the_map_of_a_prompt_depends_on_the_prompt(tiny_model, xray_pixels, method):
    maps = explain(tiny_model, xray_pixels, PROMPTS, method=method)
    again = explain(tiny_model, xray_pixels, PROMPTS[::-1], method=method)

    assert np.abs(maps.maps[0] - maps.maps[1]).max() > 1e-3
    np.testing.assert_allclose(again.maps[::-1], maps.maps, atol=1e-5)  # each its prompt's
    np.testing.assert_allclose(again.ranges[::-1], maps.ranges, rtol=1e-4)  # before 0-1
    assert maps.ranges.shape == (2, 2) and (maps.ranges[:, 0] < maps.ranges[:, 1]).all()


@pytest.mark.parametrize("method", METHODS)
def test_a_contrast_map_explains_the_difference_of_the_similarities(tiny_model, method):
    texts = tiny_model.encode_texts(PROMPTS + ["A knee MRI."])
    fake = copy.copy(tiny_model)  # "A - rest": s of the first prompt minus the others' mean
    vectors = dict(zip(PROMPTS + ["A knee MRI."], texts, strict=True))
    vectors["A - rest"] = texts[0] - texts[1:].mean(0)
    fake.encode_texts = lambda prompts: torch.stack([vectors[p] for p in prompts])
    contrast = explain(fake, wide_image(), [*PROMPTS, "A knee MRI."], method=method, contrast=True)
    difference = explain(fake, wide_image(), ["A - rest"], method=method)
    plain = explain(fake, wide_image(), [*PROMPTS, "A knee MRI."], method=method)

    np.testing.assert_allclose(contrast.maps[0], difference.maps[0], atol=1e-5)
    assert np.abs(contrast.maps[0] - plain.maps[0]).max() > 0.05
    np.testing.assert_allclose(contrast.probabilities, plain.probabilities)
    assert contrast.method_name.endswith(", contrast")


def test_ranges_are_the_maps_values_before_scaling(tiny_model):
    texts = tiny_model.encode_texts(PROMPTS)
    doubled = copy.copy(tiny_model)  # every similarity twice as large: Grad-CAM's raw map too
    doubled.encode_texts = lambda prompts: 2 * texts
    result = explain(tiny_model, wide_image(), PROMPTS)
    twice = explain(doubled, wide_image(), PROMPTS)

    np.testing.assert_allclose(twice.maps, result.maps, atol=1e-4)
    np.testing.assert_allclose(twice.ranges, 2 * result.ranges, rtol=1e-3, atol=1e-9)
    assert (result.ranges[:, 1] < 0.5).all()  # not grad-cam's own 0-1 scale


def test_more_than_eight_prompts_are_explained_in_batches(tiny_model, xray_pixels):
    prompts = [f"A chest X-ray, view {i}." for i in range(9)]
    sizes = []  # the batch sizes the image tower gets
    hook = tiny_model.model.visual.register_forward_pre_hook(lambda m, a: sizes.append(len(a[0])))
    try:
        maps = explain(tiny_model, xray_pixels, prompts).maps
    finally:
        hook.remove()

    assert sizes[:2] == [8, 1]  # then the cosines for the probabilities, of one image
    first, last = (explain(tiny_model, xray_pixels, p).maps for p in (prompts[:8], prompts[8:]))
    np.testing.assert_allclose(maps, np.concatenate([first, last]), atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_it_works_under_the_callers_inference_mode(tiny_model, xray_pixels, method):
    expected = explain(tiny_model, xray_pixels, PROMPTS, method=method)
    with torch.inference_mode():
        result = explain(tiny_model, xray_pixels, PROMPTS, method=method)
        table = sanity_check(tiny_model, xray_pixels, PROMPTS[0], method=method)

    np.testing.assert_allclose(result.maps, expected.maps, atol=1e-6)
    np.testing.assert_allclose(table["map"].iloc[0], expected.maps[0], atol=1e-6)


def test_patch_spearman_ranks_patches_not_interpolated_pixels():
    grid = np.random.default_rng(0).permutation(196).reshape(14, 14).astype(float)
    detail = np.random.default_rng(1).random((16, 16))
    wobble = np.kron(np.ones((14, 14)), 500 * (detail - detail.mean()))  # mean 0 per patch
    a, b = np.kron(grid, np.ones((16, 16))) + wobble, np.kron(grid, np.ones((16, 16))) - wobble

    assert patch_spearman(a, b) == pytest.approx(1.0)
    assert spearmanr(a.ravel(), b.ravel())[0] < 0.5  # per pixel the opposite details count
    assert patch_spearman(a[::2, ::2], b[::2, ::2], patch=8) == pytest.approx(1.0)
    assert np.isnan(patch_spearman(a, np.zeros_like(a)))


def test_the_cascade_goes_from_the_head_through_the_blocks_to_the_input(
    tiny_model, xray_pixels, monkeypatch
):
    trained = dict(tiny_model.model.visual.named_parameters())
    changed, kept = [], []  # at each step: the weights of the copy changed, the number kept
    real_maps = saliency._maps

    def spy(visual, *args):
        names = [n for n, p in visual.named_parameters() if not torch.equal(p, trained[n])]
        changed.append({n.split(".")[0] if "resblocks" not in n else n[:23] for n in names})
        kept.append(len(trained) - len(names))
        return real_maps(visual, *args)

    monkeypatch.setattr(saliency, "_maps", spy)
    table = sanity_check(tiny_model, xray_pixels, PROMPTS[0], method="attention")

    assert table["randomised"].tolist() == [
        "none", "head", "head, block 2", "head, blocks 1–2", "everything"
    ]  # fmt: skip
    assert table["step"].tolist() == [0, 1, 2, 3, 4]
    head, top = {"ln_post", "proj"}, "transformer.resblocks.1"
    assert changed[:4] == [set(), head, head | {top}, head | {top, "transformer.resblocks.0"}]
    assert kept[-1] == 0 and kept[0] == len(trained)  # at the end no trained weight is left
    assert changed[4] - changed[3] == {"conv1", "class_embedding", "positional_embedding",
                                       "ln_pre"}  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_randomising_the_weights_changes_the_map(tiny_model, xray_pixels, method):
    before = {k: v.clone() for k, v in tiny_model.model.state_dict().items()}
    table = sanity_check(tiny_model, xray_pixels, PROMPTS[0], method=method)

    assert table["spearman"].iloc[0] == 1.0
    trained = explain(tiny_model, xray_pixels, PROMPTS[:1], method=method).maps[0]
    np.testing.assert_allclose(table["map"].iloc[0], trained, atol=1e-5)
    for randomised in table["map"].iloc[1:]:
        assert np.abs(randomised - trained).max() > 0.1
    assert (table["spearman"].iloc[1:] < 0.95).all()
    after = tiny_model.model.state_dict()  # a copy was randomised, not the user's model
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("method", METHODS)
def test_the_model_is_left_as_it_was_even_when_the_call_fails(tiny_model, xray_pixels, method):
    model, blocks = tiny_model.model, tiny_model.model.visual.transformer.resblocks
    weight = model.visual.conv1.weight
    marker = torch.ones_like(weight)
    weight.grad = marker  # a gradient of the user's own, which must survive
    model.visual.ln_post.requires_grad_(False)
    activations = []  # weak references: the activations must be freed after the call

    def remember(module, args, output):
        activations.append(weakref.ref(output))

    def fail(module, args, output):
        raise RuntimeError("stop")

    try:
        for fails in (False, True):
            mine = [b.register_forward_hook(remember) for b in blocks]
            mine += [blocks[-1].register_forward_hook(fail)] if fails else []
            try:
                explain(tiny_model, xray_pixels, PROMPTS, method=method)
            except RuntimeError as err:
                assert fails and str(err) == "stop"
            for handle in mine:
                handle.remove()
            gc.collect()
            assert hooks(model) == 0
            assert len(activations) == len(blocks) * (1 if fails else 2)  # + zero_shot's
            assert all(ref() is None for ref in activations), "activations kept alive"
            activations.clear()
            assert weight.grad is marker
            assert not any(m.training for m in model.modules())
            assert not model.visual.ln_post.weight.requires_grad and weight.requires_grad
            assert all(p.grad is None for p in model.parameters() if p is not weight)
    finally:
        weight.grad = None
        model.visual.ln_post.requires_grad_(True)


def test_bad_inputs_raise_clear_errors(tiny_model, xray_pixels, monkeypatch):
    with pytest.raises(ArgumentError, match="method must be 'gradcam' or 'attention'"):
        explain(tiny_model, xray_pixels, PROMPTS, method="lrp")
    with pytest.raises(PromptError, match="empty"):
        explain(tiny_model, xray_pixels, [])
    with pytest.raises(PromptError, match="prompt"):
        sanity_check(tiny_model, xray_pixels, "  ")
    with pytest.raises(ArgumentError, match="one prompt, not 2"):
        sanity_check(tiny_model, xray_pixels, PROMPTS)
    capped = copy.copy(tiny_model)  # torchvision's max_size shrinks some images further
    capped.preprocess = Compose([Resize(224, max_size=300), *tiny_model.preprocess.transforms[1:]])
    with pytest.raises(ArgumentError, match="max_size"):
        explain(capped, wide_image(), PROMPTS, method="attention")
    timm_like = SimpleNamespace(model=SimpleNamespace(visual=torch.nn.Linear(2, 2)))
    with pytest.raises(ArgumentError, match="VisionTransformer.*Linear"):
        explain(timm_like, xray_pixels, PROMPTS)
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "mmkd-utils\[saliency\]"'):
        explain(tiny_model, xray_pixels, PROMPTS, method="gradcam")
    assert hooks(tiny_model.model) == 0
    # Importing the package and its plots without grad-cam: tests/test_plotting.py (its
    # subprocess blocks pytorch_grad_cam).


def test_attention_fails_loudly_if_the_weights_are_not_the_ones_used(tiny_model, xray_pixels):
    def detached_view(module, args, output):  # weights that are a view of another tensor
        tokens = output[1].shape[-1]
        return output[0], torch.zeros(*output[1].shape[:-2], tokens + 1, tokens)[..., 1:, :]

    handle = tiny_model.model.visual.transformer.resblocks[0].attn.register_forward_hook(
        detached_view
    )
    try:
        with pytest.raises(NotImplementedError, match="attention weights.*method='gradcam'"):
            explain(tiny_model, xray_pixels, PROMPTS, method="attention")
    finally:
        handle.remove()


def _nifti(tmp_path):
    volume = np.zeros((40, 48, 9), np.int16)
    volume[10:30, 12:40, :] = 800
    path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 4.0, 1.0])), path)
    return path


@pytest.mark.parametrize("source", ["png", "dicom", "nifti"])
def test_plot_saliency_for_grayscale_dicom_and_nifti(tiny_model, tmp_path, source):
    path = {
        "png": lambda: tmp_path / "gray.png",
        "dicom": lambda: get_testdata_file("CT_small.dcm"),
        "nifti": lambda: _nifti(tmp_path),
    }[source]()
    if source == "png":
        Image.fromarray(np.arange(120 * 90, dtype=np.uint8).reshape(90, 120), "L").save(path)
    image = load_image(path)
    result = explain(tiny_model, image, PROMPTS, method="attention")
    fig = plot_saliency(result)

    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles[0] == f"image, {image.width} × {image.height} px"
    for title, prompt, p, (low, high) in zip(
        titles[1:], PROMPTS, result.probabilities, result.ranges, strict=True
    ):
        assert title == f"{prompt}\np = {p:.3f}, range {low:.2g} to {high:.2g}"
    assert fig.axes[-1].get_ylabel() == "gradient-weighted attention, 0–1 per map"
    shown = fig.axes[1].get_images()[1].get_array()  # the map over the image
    assert shown.shape == (image.height, image.width)


def test_plot_saliency_shrinks_a_large_image_by_averaging_not_by_skipping(tiny_model):
    stripes = np.zeros((400, 800), np.uint8)
    stripes[:, 1::2] = 255  # one-pixel columns: every 3rd column alone would still be stripes
    image = Image.fromarray(stripes).convert("RGB")
    fig = plot_saliency(explain(tiny_model, image, PROMPTS, method="attention"))

    shown = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_array_equal(shown, np.asarray(image.reduce(3)))
    assert 60 < shown.mean() < 200 and shown.std() < 60


def test_plot_sanity_check_and_its_bad_input(tiny_model, xray_pixels):
    table = sanity_check(tiny_model, xray_pixels, PROMPTS[0], method="attention")
    fig = plot_sanity_check(table)

    titles = [ax.get_title().split("\n")[0] for ax in fig.axes[: len(table)]]
    assert titles == list(table["randomised"])
    np.testing.assert_allclose(fig.axes[-1].lines[0].get_ydata(), table["spearman"])
    with pytest.raises(ArgumentError, match="sanity_check"):
        plot_sanity_check(table.drop(columns="map"))


@pytest.fixture(scope="module")
def xray_pixels():
    """The sample chest X-ray, decoded once (an RGB PIL image)."""
    return load_image(sample_images("X-ray")[0])
