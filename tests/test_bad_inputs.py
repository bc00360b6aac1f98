"""Bad inputs: each one works with a sensible result or raises a documented, clear error.

"Clear" means: a subclass of :class:`mmkd_utils.MMKDError` whose message names the input
and says what to do (see :func:`assert_clear`). Cases covered elsewhere are not repeated:
DICOM without pixel data, compressed DICOM without a decoder, 4-D NIfTI and PNG/DICOM
decompression bombs (``test_medical.py``); empty and non-text prompts (``test_loading.py``).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_medical import write_dicom, write_nifti

from mmkd_utils import (
    EvaluationError,
    ImageLoadError,
    MMKDError,
    PromptError,
    SkippedImagesWarning,
    compare_models,
    embed_folder,
    evaluate_folder,
    load_image,
    search,
    to_rgb,
)
from mmkd_utils.errors import printable

#: Words that tell the user what to do next; every error message has one of them.
ACTION = re.compile(
    r"\b(pass|use|install|download|check|convert|remove|set|export|rename|free|leave|"
    r"delete|put|downscale|raise|open)\b",
    re.IGNORECASE,
)
FUNCTION_FIXTURE = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_clear(err: BaseException, name: str | os.PathLike) -> str:
    """``err`` is a documented error naming ``name`` and saying what to do; returns its text."""
    assert isinstance(err, MMKDError), f"{type(err).__name__} is not an MMKDError: {err}"
    message = str(err)
    shown = printable(os.fspath(name))
    assert shown in message, f"{shown!r} not named in: {message}"
    assert ACTION.search(message), f"no action in: {message}"
    print(message, file=io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))  # always printable
    return message


def is_unit_rows(feats: torch.Tensor) -> bool:
    return bool(torch.isfinite(feats).all()) and torch.allclose(
        feats.norm(dim=-1), torch.ones(feats.shape[0]), atol=1e-4
    )


# --------------------------------------------------------------------------- every format


RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (48, 40, 3), dtype=np.uint8)
FORMATS = ["png", "jpg", "tiff", "dcm", "nii", "nii.gz"]


def write_good(folder: Path, fmt: str) -> Path:
    """A valid 40×48 image of format ``fmt`` in ``folder``."""
    path = folder / f"scan.{fmt}"
    if fmt == "dcm":
        return write_dicom(path, (PIXELS[..., 0].astype(np.uint16) * 16))
    if fmt.startswith("nii"):
        return write_nifti(path, PIXELS[..., :3].astype(np.float32).transpose(1, 0, 2))
    Image.fromarray(PIXELS).save(path)
    return path


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("good")
    return {fmt: write_good(folder, fmt).read_bytes() for fmt in FORMATS}


def _damage(data: bytes, how: str) -> bytes:
    if how == "empty":
        return b""
    if how == "header_only":
        return data[:16]
    if how == "truncated":
        return data[: len(data) * 6 // 10]
    garbage = np.random.default_rng(1).integers(0, 256, 256, dtype=np.uint8).tobytes()
    middle = len(data) // 2
    return data[:middle] + garbage + data[middle + 256 :]  # "corrupt": same length


@pytest.mark.parametrize("how", ["empty", "header_only", "truncated", "corrupt"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_files_of_every_format(tmp_path, good_files, fmt, how):
    path = tmp_path / f"{how}.{fmt}"
    path.write_bytes(_damage(good_files[fmt], how))
    try:
        img = load_image(path)
    except ImageLoadError as err:
        message = assert_clear(err, path)
        if how == "empty":
            assert "empty (0 bytes)" in message
        return
    # Garbage inside the pixel data can go unnoticed (libjpeg, raw TIFF, DICOM and NIfTI
    # data have no checksum): then it is a picture of the right size. Missing bytes never.
    assert how == "corrupt", (fmt, how)
    assert img.mode == "RGB" and img.size == (40, 48)


@pytest.mark.parametrize("suffix", ["png", "jpg", "tiff", "dcm", "nii", "nii.gz"])
def test_a_text_file_with_an_image_suffix(tmp_path, suffix):
    path = tmp_path / f"notes.{suffix}"
    path.write_text("Patient notes, not an image.\n" * 30)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert_clear(info.value, path)


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    "make",
    [
        lambda d: Image.new("L", (0, 5)),
        lambda d: Image.new("RGB", (7, 0)),
        lambda d: np.zeros((0, 5), dtype=np.uint8),
        lambda d: write_dicom(d / "zero_rows.dcm", np.zeros((0, 4), dtype=np.uint16)),
        lambda d: write_nifti(d / "zero_slices.nii", np.zeros((4, 4, 0), dtype=np.float32)),
        lambda d: write_nifti(d / "zero_width.nii.gz", np.zeros((0, 4, 3), dtype=np.float32)),
    ],
    ids=["pil-0x5", "pil-7x0", "array-0x5", "dicom-0-rows", "nifti-0-slices", "nifti-0-wide"],
)
def test_zero_sized_images(tmp_path, tiny_model, make):
    image = make(tmp_path)
    with pytest.raises(ImageLoadError) as info:
        tiny_model.encode_images([image])
    name = (
        image
        if isinstance(image, Path)
        else ("array" if isinstance(image, np.ndarray) else "image")
    )
    assert_clear(info.value, name)


def test_one_pixel_images_work_end_to_end(tmp_path, tiny_model):
    """1×1 images of every kind embed like any other image of that colour."""
    grey = 128
    Image.new("L", (1, 1), grey).save(tmp_path / "one.png")
    images = [
        Image.new("RGB", (1, 1), (grey,) * 3),
        np.full((1, 1), grey, dtype=np.uint8),
        tmp_path / "one.png",
        write_dicom(
            tmp_path / "one.dcm", np.array([[7]], dtype=np.uint16), WindowCenter=7, WindowWidth=2
        ),
        write_nifti(tmp_path / "one.nii", np.ones((1, 1, 1), dtype=np.float32)),
    ]
    feats = tiny_model.encode_images(images)
    assert feats.shape == (5, tiny_model.embed_dim) and is_unit_rows(feats)
    same = tiny_model.encode_images(Image.new("RGB", (30, 20), (grey,) * 3))
    torch.testing.assert_close(feats[:3], same.expand(3, -1), atol=1e-5, rtol=0)
    probs = tiny_model.zero_shot(images, ["A chest X-ray.", "A fundus photograph."])
    assert torch.allclose(probs.sum(dim=1), torch.ones(5), atol=1e-5)


@pytest.mark.parametrize("size", [(4000, 3), (3, 4000)], ids=["wide", "tall"])
def test_very_wide_and_tall_images(tmp_path, tiny_model, size):
    """Extreme aspect ratios work; the centre crop decides, as in the published demo."""
    uniform = tmp_path / "uniform.png"
    Image.new("RGB", size, (90, 150, 200)).save(uniform)
    striped = tmp_path / "striped.png"
    Image.fromarray(RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(striped)
    feats = tiny_model.encode_images([uniform, striped])
    assert feats.shape == (2, tiny_model.embed_dim) and is_unit_rows(feats)
    small = tiny_model.encode_images(Image.new("RGB", (5, 5), (90, 150, 200)))
    torch.testing.assert_close(feats[:1], small, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", ["jpg", "tiff", "nii"])
def test_decompression_bombs_of_other_formats(tmp_path, tiny_model, monkeypatch, fmt):
    path = tmp_path / f"big.{fmt}"
    if fmt == "nii":
        write_nifti(path, np.zeros((100, 100, 3), dtype=np.float32))
    else:
        Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(ImageLoadError) as info:
        tiny_model.encode_images([path])
    assert "safety limit" in assert_clear(info.value, path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20000)  # raised by the user: it works
    assert tiny_model.encode_images([path]).shape == (1, tiny_model.embed_dim)


# --------------------------------------------------------------------------- PIL modes


GRADIENT = np.tile(np.arange(256, dtype=np.uint8), (24, 1))  # 24×256, every grey level


def _mode_files(folder: Path) -> dict[str, Path]:
    files = {
        "i16.png": Image.fromarray(GRADIENT.astype(np.uint16) * 257),  # I;16
        "i16b.tiff": Image.fromarray((GRADIENT.astype(np.uint16) * 257).astype(">u2")),
        "float.tiff": Image.fromarray(GRADIENT.astype(np.float32) / 255 - 0.5),  # F
        "int32.tiff": Image.fromarray(GRADIENT.astype(np.int32) * 1000 - 70000),  # I
        "palette.png": Image.fromarray(GRADIENT).convert("P"),
        "cmyk.jpg": Image.new("CMYK", (40, 24), (10, 200, 30, 5)),
        "cmyk.tiff": Image.new("CMYK", (40, 24), (10, 200, 30, 5)),
        "rgba.png": Image.new("RGBA", (40, 24), (10, 200, 30, 0)),
        "la.png": Image.new("LA", (40, 24), (10, 100)),
        "bilevel.png": Image.new("1", (40, 24), 1),
    }
    for name, img in files.items():
        img.save(folder / name)
    return {name: folder / name for name in files}


def test_high_depth_palette_cmyk_and_alpha_files_through_encode_images(tmp_path, tiny_model):
    files = _mode_files(tmp_path)
    assert {Image.open(p).mode for p in files.values()} >= {"I;16", "F", "I", "P", "CMYK", "LA"}
    feats = tiny_model.encode_images(list(files.values()))
    assert feats.shape == (len(files), tiny_model.embed_dim) and is_unit_rows(feats)
    # 16-bit and float gradients are rescaled to 0..255, so they embed like the 8-bit one.
    eight_bit = tiny_model.encode_images(GRADIENT)
    for name in ("i16.png", "i16b.tiff", "float.tiff"):
        row = list(files).index(name)
        torch.testing.assert_close(feats[row : row + 1], eight_bit, atol=1e-5, rtol=0)
    # The same images as PIL objects (opened lazily, not yet decoded) give the same rows.
    opened = [Image.open(p) for p in files.values()]
    try:
        torch.testing.assert_close(tiny_model.encode_images(opened), feats, atol=1e-6, rtol=0)
    finally:
        for img in opened:
            img.close()


# --------------------------------------------------------------------------- DICOM and NIfTI


def test_dicom_with_unusual_photometric_interpretations(tmp_path):
    rgb = RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    partial = load_image(write_dicom(tmp_path / "ybr.dcm", rgb, photometric="YBR_PARTIAL_422"))
    assert partial.mode == "RGB" and partial.size == (6, 8)
    grey = RNG.integers(0, 4000, (8, 6)).astype(np.uint16)
    sloppy = write_dicom(tmp_path / "lower.dcm", grey, photometric="monochrome2 ")
    exact = write_dicom(tmp_path / "exact.dcm", grey)
    assert np.array_equal(np.asarray(load_image(sloppy)), np.asarray(load_image(exact)))
    unknown = write_dicom(tmp_path / "odd.dcm", grey, photometric="GREYISH")
    with pytest.raises(ImageLoadError) as info:
        load_image(unknown)
    assert "'GREYISH'" in assert_clear(info.value, unknown)


def test_nifti_with_five_dimensions(tmp_path):
    path = write_nifti(tmp_path / "five.nii.gz", np.ones((4, 4, 4, 2, 2), dtype=np.float32))
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert "(4, 4, 4, 2, 2)" in assert_clear(info.value, path)


# --------------------------------------------------------------------------- prompts


IMAGE = np.full((16, 16), 100, dtype=np.uint8)


def test_duplicate_prompts_get_equal_probabilities(tiny_model):
    probs = tiny_model.zero_shot([IMAGE, GRADIENT], ["A chest X-ray.", "An MRI.", "A chest X-ray."])
    assert torch.allclose(probs[:, 0], probs[:, 2], atol=1e-6)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2), atol=1e-5)


def test_prompt_over_256_tokens_warns_naming_it_and_still_works(tiny_model):
    long = "pleural effusion " * 200
    with pytest.warns(UserWarning, match=r"Prompt 1 \('pleural effusion pleural.*first 256"):
        probs = tiny_model.zero_shot([IMAGE], ["A chest X-ray.", long])
    assert torch.isfinite(probs).all() and abs(float(probs.sum()) - 1) < 1e-5


@pytest.mark.parametrize(
    "prompts",
    [
        ["Röntgenaufnahme des Thorax.", "Radiographie pulmonaire.", "Радиография грудной клетки."],
        ["胸部X線写真", "흉부 엑스레이", "صورة أشعة للصدر", "צילום חזה"],
        ["🩻 chest", "🫁🫀", "👁️ fundus 🔬"],
        ["e\u0301de\u0300me", "zero\u200bwidth", "nul\x00char", "a\ud800lone surrogate"],
    ],
    ids=["european", "cjk-rtl", "emoji", "odd-code-points"],
)
def test_non_english_and_emoji_prompts(tiny_model, prompts):
    probs = tiny_model.zero_shot([IMAGE, GRADIENT], prompts)
    assert probs.shape == (2, len(prompts)) and torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(2), atol=1e-5)


_ANY_CHARACTER = st.characters(categories=["L", "M", "N", "P", "S", "Z", "Cc", "Cf", "Co", "Cs"])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(_ANY_CHARACTER, max_size=40), min_size=1, max_size=4))
def test_any_prompt_list_gives_probabilities_or_a_prompt_error(tiny_model, prompts):
    """Any unicode, incl. control, format, private-use and surrogate code points."""
    try:
        probs = tiny_model.zero_shot([IMAGE], prompts)
    except PromptError as err:
        blank = [i for i, p in enumerate(prompts) if not p.strip()]
        assert blank and f"prompts[{blank[0]}]" in str(err)
        assert ACTION.search(str(err))
        return
    assert all(p.strip() for p in prompts)
    assert probs.shape == (1, len(prompts)) and torch.isfinite(probs).all()
    assert abs(float(probs.sum()) - 1.0) < 1e-5


# --------------------------------------------------------------------------- file names


def _make_or_skip(path: Path, write) -> Path:
    try:
        write(path)
    except OSError as err:  # e.g. macOS refuses names that are not valid UTF-8
        pytest.skip(f"this file system does not take such a name: {err}")
    return path


def test_file_names_that_are_not_utf8(tmp_path, tiny_model):
    good = _make_or_skip(
        tmp_path / os.fsdecode(b"scan_\xff.png"), lambda p: Image.fromarray(PIXELS).save(p)
    )
    bad = _make_or_skip(tmp_path / os.fsdecode(b"bad_\xfe.png"), lambda p: p.write_text("no image"))
    reference = tiny_model.encode_images(PIXELS)
    for name in (good, str(good), os.fsencode(good)):  # Path, str and bytes names
        torch.testing.assert_close(tiny_model.encode_images(name), reference, atol=1e-6, rtol=0)
    for path in (bad, tmp_path / os.fsdecode(b"missing_\xfd.dcm")):
        with pytest.raises(ImageLoadError) as info:
            tiny_model.encode_images([good, path])
        message = assert_clear(info.value, path)
        assert "\\x" in message  # the bad byte, shown escaped
    with pytest.warns(SkippedImagesWarning) as caught:
        assert tiny_model.encode_images([good, bad], on_error="skip").shape[0] == 1
    assert "bad_\\xfe.png" in str(caught[0].message)
    str(caught[0].message).encode("utf-8")  # printable
    with pytest.warns(SkippedImagesWarning):
        result = embed_folder(tiny_model, tmp_path, num_workers=0, on_error="skip")
    assert result.paths == [good]
    # Tables keep such names as they are (pandas' pyarrow strings would refuse them).
    assert result.skipped["path"].tolist() == [str(bad)]
    assert result.to_frame()["path"].tolist() == [str(good)]
    assert search("a scan", result, k=1, model=tiny_model)["path"].tolist() == [str(good)]
    assert compare_models([tiny_model], [good], ["a", "b"])["image"].tolist() == [good.name] * 2
    for name in ("ct", "mri"):
        (tmp_path / "classes" / name).mkdir(parents=True)
        os.link(good, tmp_path / "classes" / name / good.name)
    found = evaluate_folder(tiny_model, tmp_path / "classes", ["CT", "MRI"], n_resamples=10)
    assert sorted(found.predictions["path"]) == sorted(
        str(p) for p in (tmp_path / "classes").rglob("*.png")
    )


def test_very_long_file_names(tmp_path, tiny_model):
    names = ["a" * 250 + ".png", "é" * 125 + ".png"]  # 254 bytes each (é is 2 bytes)
    for name in names:
        Image.fromarray(PIXELS).save(tmp_path / name)
    feats = tiny_model.encode_images([tmp_path / n for n in names])
    assert feats.shape == (2, tiny_model.embed_dim) and is_unit_rows(feats)
    assert len(embed_folder(tiny_model, tmp_path, num_workers=0)) == 2  # cache keys are hashes
    too_long = tmp_path / ("b" * 300 + ".dcm")
    with pytest.raises(ImageLoadError) as info:
        tiny_model.encode_images([too_long])
    assert_clear(info.value, too_long)


# --------------------------------------------------------------------------- folders


def test_folders_without_images(tmp_path, tiny_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    for call in (
        lambda: embed_folder(tiny_model, empty),
        lambda: evaluate_folder(tiny_model, empty, ["a", "b"]),
    ):
        with pytest.raises(MMKDError) as info:
            call()
        assert_clear(info.value, empty)
    for name in ("a", "b"):
        (empty / name).mkdir()
        (empty / name / "notes.txt").write_text("no images")
    with pytest.raises(EvaluationError) as info:
        evaluate_folder(tiny_model, empty, ["a", "b"])
    assert_clear(info.value, "'a'")
    with pytest.raises(EvaluationError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImagesWarning)
        evaluate_folder(tiny_model, empty, ["a", "b"], on_error="skip")
    assert_clear(info.value, empty)


# --------------------------------------------------------------------------- property tests


def _valid(fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "dcm":
        return _DICOM_BYTES
    Image.fromarray(PIXELS[:12, :10]).save(
        buf, format={"png": "PNG", "jpg": "JPEG", "tiff": "TIFF"}[fmt]
    )
    return buf.getvalue()


def _dicom_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = write_dicom(Path(folder) / "x.dcm", PIXELS[:12, :10, 0].astype(np.uint16))
        return path.read_bytes()


_DICOM_BYTES = _dicom_bytes()
_FUZZ_FORMATS = ["png", "jpg", "tiff", "dcm"]


@st.composite
def _damaged_files(draw):
    """Random bytes, or a valid file with random bytes changed and maybe cut short."""
    fmt = draw(st.sampled_from(_FUZZ_FORMATS))
    if draw(st.booleans()):
        return fmt, draw(st.binary(max_size=600))
    data = bytearray(_valid(fmt))
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return fmt, bytes(data[:cut] if draw(st.booleans()) else data)


@settings(FUNCTION_FIXTURE, max_examples=150)
@given(_damaged_files())
def test_any_file_gives_an_rgb_image_or_an_image_load_error(tmp_path, damaged):
    fmt, data = damaged
    path = tmp_path / f"fuzz.{fmt}"
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow and pydicom warn about odd headers
            img = load_image(path)
    except ImageLoadError as err:
        assert_clear(err, path)
    else:
        assert img.mode == "RGB" and img.width > 0 and img.height > 0


@settings(FUNCTION_FIXTURE, max_examples=40)
@given(st.binary(max_size=300), st.sampled_from(["png", "jpg", "dcm", "nii", "nii.gz", "bin"]))
def test_random_bytes_through_to_rgb(tmp_path, data, suffix):
    path = tmp_path / f"random.{suffix}"
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert to_rgb(path).mode == "RGB"
    except ImageLoadError as err:
        assert_clear(err, path)
