"""The loader reproduces the original MMKD-CLIP code on the tiny upstream checkpoint."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from support import TINY, TINY_CHECKPOINT, TINY_TEXT, fresh_fact

import mmkd_utils
from mmkd_utils import load_model
from mmkd_utils.model.loading import converted_folder

TOL = 1e-5
# The reference resizes before converting to RGB; for a palette image that resizes the
# palette indices. The loader converts first (see tests below), so that row differs.
SAME_ORDER = ["gray_gradient.png", "rgb_noise.png", "rgba_blocks.png", "tall_rgb.jpg"]


def _close(a, b, tol=TOL):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) <= tol


def _check_against_reference(clip, ref):
    prompts = [str(p) for p in ref["prompts"]]
    names = [str(n) for n in ref["images"]]
    ids = clip.tokenize(prompts).numpy()
    assert ids.shape[1] < ref["token_ids"].shape[1]
    assert np.array_equal(ids, ref["token_ids"][:, : ids.shape[1]])
    assert not ref["token_ids"][:, ids.shape[1] :].any()

    assert _close(clip.encode_texts(prompts), ref["text_features"])
    assert _close(clip.encode_pixels(torch.from_numpy(ref["pixel"])), ref["image_features"])

    rows = [names.index(n) for n in SAME_ORDER]
    probs = clip.zero_shot([TINY / "images" / n for n in SAME_ORDER], prompts)
    assert _close(probs, ref["probs"][rows])
    feats = clip.encode_images([TINY / "images" / n for n in SAME_ORDER])
    assert _close(feats, ref["image_features"][rows])


def test_first_load_matches_reference(tiny_model, reference):
    _check_against_reference(tiny_model, reference)


def test_load_from_converted_cache_matches_reference(tiny_model, reference, monkeypatch):
    first = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    folder = converted_folder(TINY_CHECKPOINT, TINY_TEXT)
    assert (folder / "open_clip_model.safetensors").is_file()

    # The second load must not read (unpickle) the .pth at all.
    def refuse(*args, **kwargs):
        raise AssertionError("the .pth was read although a converted copy exists")

    monkeypatch.setattr("mmkd_utils.model.loading.read_checkpoint", refuse)
    second = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    buffers = dict(second.model.named_buffers())
    assert all(b.device.type == "cpu" for b in buffers.values())
    _check_against_reference(second, reference)
    _check_against_reference(first, reference)
    # Loading the converted folder itself gives the same model.
    _check_against_reference(load_model(folder, device="cpu"), reference)


def test_converted_folder_loads_with_plain_open_clip(tiny_model, reference):
    load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    folder = converted_folder(TINY_CHECKPOINT, TINY_TEXT)
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["hf_model_pretrained"] is False
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    with torch.no_grad():
        text = model.encode_text(tokenizer([str(p) for p in reference["prompts"]]), normalize=True)
        image = model.encode_image(torch.from_numpy(reference["pixel"]), normalize=True)
    assert _close(text, reference["text_features"])
    assert _close(image, reference["image_features"])


def test_palette_image_is_converted_to_rgb_before_resizing(tiny_model, reference):
    """The documented difference: P images are converted to RGB first (colours, not indices)."""
    names = [str(n) for n in reference["images"]]
    row = names.index("palette.png")
    img = Image.open(TINY / "images" / "palette.png")
    assert img.mode == "P"
    expected = tiny_model.encode_pixels(tiny_model.preprocess(img.convert("RGB"))[None])
    assert _close(tiny_model.encode_images(img), expected)
    # ...and that really differs from the reference's resize-the-indices result.
    assert not np.allclose(
        tiny_model.preprocess(img.convert("RGB")).numpy(), reference["pixel"][row], atol=1e-3
    )


def test_longest_padding_equals_256_padding(tiny_model, reference):
    prompts = [str(p) for p in reference["prompts"]] + ["short", "a " * 40]
    padded = tiny_model.tokenizer(prompts)  # open_clip's tokenizer pads to 256
    assert padded.shape[1] == 256
    with torch.no_grad():
        full = torch.nn.functional.normalize(tiny_model.model.encode_text(padded), dim=-1)
    for batch_size in (None, 1, 4):
        fast = tiny_model.encode_texts(prompts, batch_size=batch_size)
        assert _close(fast, full)
    assert tiny_model.tokenize(prompts).shape[1] < 256


def test_zero_shot_rows_are_probabilities(tiny_model):
    images = sorted((TINY / "images").iterdir())
    probs = tiny_model.zero_shot(images, ["a", "b", "c"])
    assert probs.shape == (len(images), 3)
    assert probs.dtype == torch.float32
    assert torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(images)), atol=1e-6)
    # One image alone is a batch of one, and a single prompt string is one prompt.
    assert tiny_model.zero_shot(images[0], "a").shape == (1, 1)


def test_embeddings_are_normalised_float32_cpu(tiny_model):
    img = tiny_model.encode_images([np.zeros((30, 40), dtype=np.uint8)])
    txt = tiny_model.encode_texts(["a chest x-ray"])
    for t in (img, txt):
        assert t.dtype == torch.float32 and t.device.type == "cpu"
        assert torch.allclose(t.norm(dim=-1), torch.ones(t.shape[0]), atol=1e-5)
    assert img.shape[1] == txt.shape[1] == tiny_model.embed_dim == 64


def test_outputs_are_ordinary_tensors(tiny_model):
    """Outputs can meet parameters that require grad (no inference-mode tensors)."""
    img = tiny_model.encode_images([np.zeros((8, 8), dtype=np.uint8)])
    txt = tiny_model.encode_texts(["x"])
    logits = tiny_model.model.logit_scale.exp() * img @ txt.T
    assert logits.shape == (1, 1)
    assert not img.is_inference()


def test_package_import_has_no_side_effects(fresh_imports):
    fact = fresh_fact(fresh_imports, "package")
    assert fact == {"torch_settings_changed": False, "imported": []}
    assert fresh_fact(fresh_imports, "plotting")["imported"] == []
    assert mmkd_utils.__version__


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_precisions_give_finite_probabilities(precision, reference):
    clip = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu", precision=precision)
    assert clip.precision == precision
    probs = clip.zero_shot(
        sorted((TINY / "images").iterdir()), [str(p) for p in reference["prompts"]]
    )
    assert torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(probs.shape[0]), atol=1e-5)
