"""Devices, precision, prompts, environment variables and the converted-copy cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import TINY, TINY_CHECKPOINT, TINY_TEXT

from mmkd_utils import (
    CheckpointError,
    DownloadError,
    ImageLoadError,
    PromptError,
    TextEncoderError,
    load_model,
)
from mmkd_utils.config import cache_dir
from mmkd_utils.model.device import resolve_device, resolve_precision
from mmkd_utils.model.loading import converted_folder
from mmkd_utils.prompts import check_prompts


def test_auto_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"


def test_unavailable_devices_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu-please")


def test_auto_precision(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", cuda) == "fp16"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="fp8"):
        resolve_precision("fp8", cuda)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([], "empty"),
        (["ok", "   "], r"prompts\[1\] is empty"),
        (["ok", 3], r"prompts\[1\] is a int"),
        (None, "string or a list"),
        ([""], r"prompts\[0\]"),
    ],
)
def test_bad_prompts(prompts, message, tiny_model):
    with pytest.raises(PromptError, match=message):
        check_prompts(prompts)
    with pytest.raises(PromptError, match=message):
        tiny_model.zero_shot([TINY / "images" / "rgb_noise.png"], prompts)


def test_empty_image_list(tiny_model):
    with pytest.raises(ImageLoadError, match="images is empty"):
        tiny_model.zero_shot([], ["a"])
    with pytest.raises(ImageLoadError, match="not int"):
        tiny_model.encode_images(5)


def test_missing_image_names_the_file(tiny_model, tmp_path):
    with pytest.raises(ImageLoadError, match="missing.png"):
        tiny_model.zero_shot([TINY / "images" / "rgb_noise.png", tmp_path / "missing.png"], ["a"])


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "4"])
def test_bad_batch_size(batch_size, tiny_model):
    with pytest.raises(ValueError, match="batch_size"):
        tiny_model.encode_texts(["a"], batch_size=batch_size)


def test_long_prompt_is_truncated_with_a_warning_naming_it(tiny_model):
    long = "lung " * 300
    with pytest.warns(UserWarning, match=r"Prompt 1 \('lung lung.*only the first 256"):
        ids = tiny_model.tokenize(["short one", long])
    assert ids.shape[1] == 256
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model.tokenize(["short one"])  # no warning for a normal prompt


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=80).filter(str.strip), min_size=1, max_size=5))
def test_any_text_gives_finite_probabilities(tiny_model, prompts):
    import numpy as np

    probs = tiny_model.zero_shot([np.zeros((16, 16), dtype=np.uint8)], prompts)
    assert probs.shape == (1, len(prompts))
    assert torch.isfinite(probs).all()
    assert abs(float(probs.sum()) - 1.0) < 1e-5


def test_environment_variables_choose_the_weights(monkeypatch):
    monkeypatch.setenv("MMKD_CHECKPOINT", str(TINY_CHECKPOINT))
    monkeypatch.setenv("MMKD_TEXT_ENCODER", str(TINY_TEXT))
    clip = load_model(device="cpu")
    assert clip.source == str(TINY_CHECKPOINT)
    assert clip.embed_dim == 64


def test_missing_environment_checkpoint(monkeypatch, tmp_path):
    monkeypatch.setenv("MMKD_CHECKPOINT", str(tmp_path / "gone.pth"))
    with pytest.raises(CheckpointError, match="MMKD_CHECKPOINT points to .*gone.pth"):
        load_model(device="cpu")


def test_no_weights_and_no_network_says_where_to_put_them(monkeypatch):
    """With nothing cached, load_model downloads; offline that fails with a clear message."""
    monkeypatch.setattr("mmkd_utils.config.DRIVE_URL", "http://127.0.0.1:9/MMKD_B16.pth")
    monkeypatch.setattr(
        "mmkd_utils.download.paths.DRIVE_URL", "http://127.0.0.1:9/MMKD_B16.pth", raising=False
    )
    from mmkd_utils.config import default_checkpoint_path

    with pytest.raises(DownloadError) as err:
        load_model(text_encoder=TINY_TEXT, device="cpu")
    assert str(default_checkpoint_path()) in str(err.value)
    assert not default_checkpoint_path().exists()


def test_text_encoder_offline_hub_id_gives_clear_error():
    with pytest.raises(TextEncoderError, match="MMKD_TEXT_ENCODER"):
        load_model(TINY_CHECKPOINT, text_encoder="someone/not-in-the-cache", device="cpu")


def test_text_encoder_folder_that_does_not_exist(tmp_path):
    with pytest.raises(TextEncoderError, match="no such folder"):
        load_model(TINY_CHECKPOINT, text_encoder=tmp_path / "nothing" / "here", device="cpu")


def test_biomedbert_weights_are_never_downloaded(monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("BiomedBERT weights were requested")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    clip = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    assert clip.encode_texts(["x"]).shape == (1, 64)


def test_unwritable_cache_still_loads_with_a_warning(monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("MMKD_HOME below a file cannot be created")
    monkeypatch.setenv("MMKD_HOME", str(blocker / "home"))
    with pytest.warns(UserWarning, match="Could not cache a converted copy"):
        clip = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    assert clip.encode_texts(["x"]).shape == (1, 64)


def test_broken_converted_copy_is_rebuilt_not_used(reference):
    load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    folder = converted_folder(TINY_CHECKPOINT, TINY_TEXT)
    weights = folder / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="could not be used"):
        clip = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    prompts = [str(p) for p in reference["prompts"]]
    assert (
        float(
            (clip.encode_texts(prompts) - torch.from_numpy(reference["text_features"])).abs().max()
        )
        <= 1e-5
    )
    assert weights.stat().st_size > 1000  # rebuilt in place


@pytest.mark.parametrize("where", ["anywhere", "in MMKD_HOME"])
def test_changed_checkpoint_gets_a_new_converted_copy(tmp_path, where):
    copy = (cache_dir() if where == "in MMKD_HOME" else tmp_path) / "ckpt.pth"
    copy.parent.mkdir(parents=True, exist_ok=True)
    sd = torch.load(TINY_CHECKPOINT, weights_only=True)
    torch.save(sd, copy)
    load_model(copy, text_encoder=TINY_TEXT, device="cpu")
    first, size = converted_folder(copy, TINY_TEXT), copy.stat().st_size
    sd["state_dict"]["module.logit_scale"] = torch.tensor(1.0)
    torch.save(sd, copy)
    assert copy.stat().st_size == size  # new weights, same size: only the file's time differs
    second = converted_folder(copy, TINY_TEXT)
    assert first != second
    clip = load_model(copy, text_encoder=TINY_TEXT, device="cpu")
    assert abs(clip.logit_scale - torch.e) < 1e-5
    assert Path(second).is_dir()


def test_skip_returns_what_worked_and_reports_every_failure(tiny_model, tmp_path):
    from mmkd_utils import SkippedImagesWarning

    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    good = [TINY / "images" / "rgb_noise.png", TINY / "images" / "tall_rgb.jpg"]
    inputs = [good[0], bad, tmp_path / "missing.png", good[1]]
    with pytest.raises(ImageLoadError, match="bad.png"):
        tiny_model.encode_images(inputs)
    with pytest.warns(SkippedImagesWarning) as record:
        feats = tiny_model.encode_images(inputs, on_error="skip", batch_size=3)
    failures = record[0].message.failures
    assert [i for i, _, _ in failures] == [1, 2]
    assert "bad.png" in failures[0][1] and "not an image" in failures[0][2]
    assert "missing.png" in str(record[0].message)
    assert torch.allclose(feats, tiny_model.encode_images(good), atol=1e-6)
    with pytest.warns(SkippedImagesWarning):
        probs = tiny_model.zero_shot(inputs, ["a", "b"], on_error="skip")
    assert probs.shape == (2, 2)
    with pytest.raises(ImageLoadError, match="None of the 2 images"):
        tiny_model.encode_images([bad, bad], on_error="skip")
    with pytest.raises(ValueError, match="on_error"):
        tiny_model.encode_images(good, on_error="ignore")


def test_fingerprint_identifies_the_weights(tiny_model, tmp_path):
    same = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    assert same.fingerprint == tiny_model.fingerprint
    assert len(tiny_model.fingerprint) == 64
    sd = torch.load(TINY_CHECKPOINT, weights_only=True)
    sd["state_dict"]["module.visual.ln_post.bias"][0] += 1e-3
    changed = tmp_path / "changed.pth"
    torch.save(sd, changed)
    other = load_model(changed, text_encoder=TINY_TEXT, device="cpu")
    assert other.fingerprint != tiny_model.fingerprint


def test_auto_image_batch_size(monkeypatch):
    from mmkd_utils.model.device import BYTES_PER_IMAGE, auto_image_batch_size

    assert auto_image_batch_size(torch.device("cpu")) == 32
    assert auto_image_batch_size(torch.device("mps")) == 32
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (20 * BYTES_PER_IMAGE, 0))
    assert auto_image_batch_size(cuda) == 10  # half of the free memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (10**13, 0))
    assert auto_image_batch_size(cuda) == 256  # capped
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (1, 0))
    assert auto_image_batch_size(cuda) == 1


def test_cuda_batches_come_in_pinned_memory(tiny_model, monkeypatch):
    import mmkd_utils.model.clip as clip_module

    calls = []
    real = clip_module.image_batches

    def spy(*args, **kwargs):
        calls.append(kwargs["pin_memory"])
        return real(*args, **{**kwargs, "pin_memory": False})

    monkeypatch.setattr(clip_module, "image_batches", spy)
    tiny_model.encode_images([np.zeros((8, 8), np.uint8)])
    monkeypatch.setattr(tiny_model, "device", torch.device("cuda"))
    monkeypatch.setattr(tiny_model, "encode_pixels", lambda pixels: torch.zeros(len(pixels), 64))
    tiny_model.encode_images([np.zeros((8, 8), np.uint8)])
    assert calls == [False, True]


def test_default_batch_size_comes_from_the_device(tiny_model):
    assert tiny_model.image_batch_size == 32
    assert tiny_model.encode_texts(["a"]).requires_grad is False


# -- encode_images batches with the one image pipeline -----------------------------------


def test_usable_cpus_follows_the_affinity_mask(monkeypatch):
    import os

    from mmkd_utils.images.pipeline import usable_cpus

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cpus() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cpus() == 1


def _demo_like_images():
    from PIL import Image

    rng = np.random.default_rng(7)
    shapes = [(300, 500, 3), (256, 256), (90, 400, 3), (512, 300), (224, 224, 3), (33, 35, 3)]
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    images.append(Image.fromarray(images[0]).convert("P"))
    images.append(TINY / "images" / "rgb_noise.png")
    return images


def test_encode_images_equals_encode_pixels_batch_by_batch(tiny_model):
    from mmkd_utils.images.decode import to_rgb

    images = _demo_like_images()
    pixels = torch.stack([tiny_model.preprocess(to_rgb(img)) for img in images])
    expected = torch.cat(
        [tiny_model.encode_pixels(pixels[:5]), tiny_model.encode_pixels(pixels[5:])]
    )
    assert torch.equal(tiny_model.encode_images(images, batch_size=5), expected)
    # Other batch sizes: the same up to float rounding of the batched matrix products.
    torch.testing.assert_close(
        tiny_model.encode_images(images, batch_size=3), expected, atol=1e-6, rtol=0
    )


def test_first_bad_image_in_order_is_raised(tiny_model):
    good = np.zeros((8, 8, 3), np.uint8)
    images = [good, np.zeros((2, 2, 2, 2)), good, np.zeros((0, 4))]
    with pytest.raises(ImageLoadError, match="4 dimensions"):
        tiny_model.encode_images(images)
    with pytest.raises(ImageLoadError, match="4 dimensions"):
        tiny_model.encode_images(images, batch_size=1)
    with pytest.warns(UserWarning) as record:
        feats = tiny_model.encode_images(images, on_error="skip", batch_size=2)
    assert feats.shape[0] == 2
    failures = record[0].message.failures
    assert [i for i, _, _ in failures] == [1, 3]
    assert "4 dimensions" in failures[0][2] and "(0, 4)" in failures[1][2]


def test_an_image_listed_twice_gives_the_same_row(tiny_model, tmp_path):
    from PIL import Image

    path = tmp_path / "lazy.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    lazy = Image.open(path)  # not loaded yet
    other = np.zeros((16, 16), np.uint8)
    feats = tiny_model.encode_images([lazy, other, lazy, lazy, other])
    for a, b in ((0, 2), (0, 3), (1, 4)):
        torch.testing.assert_close(feats[a], feats[b], atol=1e-6, rtol=0)
    expected = tiny_model.encode_pixels(
        tiny_model.preprocess(Image.open(path).convert("RGB"))[None]
    )
    torch.testing.assert_close(feats[:1], expected, atol=1e-6, rtol=0)
