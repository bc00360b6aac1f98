"""The interactive demo's logic (mmkd_utils.widgets), driven without a browser.

The widgets are driven the way a browser would: by setting ``.value``. Uploads use the
structure ipywidgets 8 itself builds from what the browser sends.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import tempfile
from pathlib import Path

import ipywidgets
import matplotlib
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from support import fresh_fact

from mmkd_utils.demo import DEMO_PROMPTS
from mmkd_utils.errors import DownloadError, ImageLoadError, MMKDError, PromptError
from mmkd_utils.images.medical import WINDOWS, load_image
from mmkd_utils.samples import sample_images
from mmkd_utils.widgets import (
    DEFAULT_TOP_K,
    MAX_FILE_NAME,
    NO_WINDOW,
    UploadError,
    build_demo,
    bundled_images,
    parse_prompts,
    predict,
    render,
    safe_file_name,
    save_upload,
)

matplotlib.use("Agg")  # headless; only the tests pick a backend, never the package

PROMPTS = ["A head CT.", "A chest X-ray.", "A brain MRI.", "A skin lesion."]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def no_pyplot_figures_left_open():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


@pytest.fixture(scope="module")
def samples() -> dict[str, Path]:
    return {path.name: path for path in sample_images()}


def upload_value(*files: tuple[str, bytes]) -> tuple:
    """``FileUpload.value`` as ipywidgets 8 builds it from the browser's message."""
    from ipywidgets.widgets.widget_upload import _deserialize_value

    now_ms = dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc).timestamp() * 1000
    message = [
        {
            "name": name,
            "type": "application/octet-stream",
            "size": len(data),
            "content": memoryview(data),
            "last_modified": now_ms,
        }
        for name, data in files
    ]
    return tuple(_deserialize_value(message, None))


def png_bytes(size: tuple[int, int] = (40, 32)) -> bytes:
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    buffer = io.BytesIO()
    Image.fromarray(((x * 5 + y * 3) % 256).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def nifti_gz_bytes() -> bytes:
    volume = np.arange(16 * 16 * 3, dtype=np.int16).reshape(16, 16, 3)
    image = nib.Nifti1Image(volume, np.eye(4))
    return gzip.compress(image.to_bytes())


def write_ct_dicom(path: Path) -> Path:
    """A tiny uncompressed CT slice in Hounsfield units (air, soft tissue, bone)."""
    hu = np.full((32, 32), -1000, dtype=np.int16)
    hu[8:24, 8:24] = 40
    hu[14:18, 14:18] = 1000
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = hu.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def bar_count(fig) -> int:
    return len(fig.axes[0].patches)


# --------------------------------------------------------------------------- parse_prompts


def test_parse_prompts_one_per_line_stripped():
    text = "  A head CT.  \n\n\tA chest X-ray.\r\nA brain MRI.\rA head CT.\n   \n"
    assert parse_prompts(text) == ["A head CT.", "A chest X-ray.", "A brain MRI."]


def test_parse_prompts_keeps_first_of_duplicates_in_order():
    assert parse_prompts("b\na\nb\nc\na") == ["b", "a", "c"]


def test_parse_prompts_single_line():
    assert parse_prompts("A chest X-ray.") == ["A chest X-ray."]


@pytest.mark.parametrize("text", ["", "\n", "   \n\t\n \r\n"])
def test_parse_prompts_nothing_left_is_a_prompt_error(text):
    with pytest.raises(PromptError, match="no prompts.*one per line"):
        parse_prompts(text)


@pytest.mark.parametrize("value", [None, ["A chest X-ray."], 3])
def test_parse_prompts_wants_text(value):
    with pytest.raises(PromptError, match="must be text"):
        parse_prompts(value)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(["a", " a ", "", "  ", "b\t", "c"]))))
def test_parse_prompts_random_text(text):
    if isinstance(text, list):
        text = "\n".join(text)
    try:
        prompts = parse_prompts(text)
    except PromptError:
        assert not any(line.strip() for line in text.splitlines())
        return
    assert prompts and len(prompts) == len(set(prompts))
    assert all(p and p == p.strip() for p in prompts)
    lines = [line.strip() for line in text.splitlines()]
    assert set(prompts) == {line for line in lines if line}
    assert prompts == sorted(prompts, key=lines.index)  # first occurrences, in order


# --------------------------------------------------------------------------- uploads


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("scan.dcm", "scan.dcm"),
        ("some/folder/brain scan.nii.gz", "brain_scan.nii.gz"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\IM-0001.dcm", "IM-0001.dcm"),
        (".bashrc", "upload.bashrc"),
        (".nii.gz", "upload.nii.gz"),
        ("..", "upload"),
        ("", "upload"),
        ("a/b/", "upload"),
        (None, "upload"),
        ("x;rm -rf $HOME.png", "x_rm_-rf_HOME.png"),
        ("Röntgen Thorax.png", "Röntgen_Thorax.png"),
    ],
)
def test_safe_file_name(name, expected):
    assert safe_file_name(name) == expected


def test_safe_file_name_shortens_long_names_keeping_the_suffix():
    name = safe_file_name("ä" * 300 + ".nii.gz")
    assert name.endswith("ä.nii.gz")
    assert len(name.encode("utf-8")) <= MAX_FILE_NAME


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_safe_file_name_can_always_be_created_inside_the_folder(name):
    safe = safe_file_name(name)
    assert safe and not safe.startswith(".")
    assert not {"/", "\\", "\0"} & set(safe)
    assert len(safe.encode("utf-8")) <= MAX_FILE_NAME
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, safe)
        path.write_bytes(b"x")
        assert path.resolve().parent == Path(folder).resolve()


def test_the_upload_value_is_what_ipywidgets_gives():
    widget = ipywidgets.FileUpload()
    widget.value = upload_value(("a.png", b"123"))
    entry = widget.value[0]
    assert isinstance(widget.value, tuple)
    assert entry["name"] == "a.png" and entry.content.tobytes() == b"123"


def test_save_upload_strips_directories(tmp_path):
    data = png_bytes()
    path = save_upload(upload_value(("scans/today/my image.png", data)), tmp_path / "up")
    assert path == tmp_path / "up" / "my_image.png"
    assert path.read_bytes() == data
    assert load_image(path).mode == "RGB"
    assert [p.name for p in (tmp_path / "up").iterdir()] == ["my_image.png"]  # no .part


def test_save_upload_keeps_nii_gz_and_load_image_reads_it(tmp_path):
    path = save_upload(upload_value(("brain.nii.gz", nifti_gz_bytes())), tmp_path)
    assert path.name == "brain.nii.gz"
    assert load_image(path).size == (16, 16)


def test_save_upload_accepts_one_dict_and_bytes(tmp_path):
    path = save_upload({"name": "a.png", "content": b"abc"}, tmp_path)
    assert path.read_bytes() == b"abc"


def test_save_upload_same_file_twice_is_stored_once(tmp_path):
    value = upload_value(("a.nii.gz", b"first"))
    assert save_upload(value, tmp_path) == save_upload(value, tmp_path)
    other = save_upload(upload_value(("a.nii.gz", b"second")), tmp_path)
    assert other.name == "a_1.nii.gz" and other.read_bytes() == b"second"
    assert (tmp_path / "a.nii.gz").read_bytes() == b"first"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ((), "No file was uploaded"),
        ([], "No file was uploaded"),
        ("a.png", "tuple of dicts"),
        (None, "tuple of dicts"),
        (({"name": "a.png"},), "without 'content'"),
        (({"name": "a.png", "content": "text"},), "content of type str"),
    ],
)
def test_save_upload_bad_values(tmp_path, value, message):
    with pytest.raises(UploadError, match=message):
        save_upload(value, tmp_path)


def test_save_upload_several_files(tmp_path):
    with pytest.raises(UploadError, match="2 files.*'a.png', 'b.png'.*one file at a time"):
        save_upload(upload_value(("a.png", b"1"), ("b.png", b"2")), tmp_path)
    assert not list(tmp_path.iterdir())


def test_save_upload_empty_file(tmp_path):
    with pytest.raises(UploadError, match="'empty.dcm' is empty"):
        save_upload(upload_value(("empty.dcm", b"")), tmp_path)


def test_save_upload_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(UploadError, match="could not be saved.*disk full"):
        save_upload(upload_value(("a.png", b"123")), tmp_path)
    assert not list(tmp_path.iterdir())


def test_upload_error_is_an_image_load_error():
    assert issubclass(UploadError, ImageLoadError) and issubclass(UploadError, MMKDError)


# --------------------------------------------------------------------------- predict


def test_predict_ranks_all_prompts(tiny_model, samples):
    table = predict(tiny_model, samples["ct_head.png"], PROMPTS)
    assert list(table.columns) == ["prompt", "probability", "rank"]
    assert sorted(table["prompt"]) == sorted(PROMPTS)
    assert table["probability"].is_monotonic_decreasing
    assert table["probability"].sum() == pytest.approx(1.0, abs=1e-5)
    assert list(table["rank"]) == [1, 2, 3, 4]


def test_predict_matches_zero_shot(tiny_model, samples):
    table = predict(tiny_model, samples["ct_head.png"], PROMPTS)
    probs = tiny_model.zero_shot([samples["ct_head.png"]], PROMPTS)[0].tolist()
    expected = dict(zip(PROMPTS, probs, strict=True))
    for prompt, p in zip(table["prompt"], table["probability"], strict=True):
        assert p == pytest.approx(expected[prompt], abs=1e-6)


def test_predict_top_k_and_text(tiny_model, samples):
    full = predict(tiny_model, samples["ct_head.png"], "\n".join(PROMPTS + ["A head CT."]))
    top = predict(tiny_model, samples["ct_head.png"], PROMPTS, top_k=2)
    assert len(full) == 4  # the duplicate is dropped
    assert list(top["prompt"]) == list(full["prompt"][:2])
    assert len(predict(tiny_model, samples["ct_head.png"], PROMPTS, top_k=10)) == 4


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "3"])
def test_predict_bad_top_k(tiny_model, samples, top_k):
    with pytest.raises(ValueError, match="top_k"):
        predict(tiny_model, samples["ct_head.png"], PROMPTS, top_k=top_k)


def test_predict_with_a_classifier(tiny_model, samples):
    classifier = tiny_model.classifier("ct/ct_organs")
    table = predict(tiny_model, samples["ct_abdomen.png"], classifier, top_k=3)
    assert len(table) == 3
    assert set(table["prompt"]) <= set(classifier.class_names)


def test_render_with_a_classifier(tiny_model, samples):
    classifier = tiny_model.classifier("ct/ct_organs")
    fig, message = render(tiny_model, samples["ct_abdomen.png"], classifier, None)
    labels = sorted(t.get_text() for t in fig.axes[0].get_yticklabels())
    assert labels == sorted(classifier.class_names)
    assert message.endswith(f"showing {len(classifier)} of {len(classifier)} classes.")


def test_predict_accepts_pil_images(tiny_model, samples):
    image = Image.open(samples["ct_small.png"])
    assert len(predict(tiny_model, image, PROMPTS)) == 4
    with pytest.raises(ImageLoadError, match="DICOM and NIfTI files only"):
        predict(tiny_model, image, PROMPTS, window="lung")


def test_predict_window_for_a_png_is_refused_by_load_image(tiny_model, samples):
    with pytest.raises(ImageLoadError, match="window='lung' does not apply.*ct_head.png"):
        predict(tiny_model, samples["ct_head.png"], PROMPTS, window="lung")


def test_predict_dicom_with_windows(tiny_model, tmp_path):
    path = write_ct_dicom(tmp_path / "slice.dcm")
    tables = {w: predict(tiny_model, path, PROMPTS, window=w) for w in [None, *WINDOWS]}
    for table in tables.values():
        assert table["probability"].sum() == pytest.approx(1.0, abs=1e-5)
    # Different windows are different pictures, so the probabilities move.
    by_prompt = {w: t.set_index("prompt")["probability"] for w, t in tables.items()}
    assert not np.allclose(by_prompt["lung"][PROMPTS], by_prompt["bone"][PROMPTS], atol=1e-7)


# --------------------------------------------------------------------------- render


def test_render_success(tiny_model, samples):
    fig, message = render(tiny_model, samples["ct_head.png"], "\n".join(PROMPTS), 3, None)
    assert bar_count(fig) == 3
    assert fig.axes[0].get_title() == "ct_head.png"
    assert message.startswith("ct_head.png: most likely")
    assert "showing 3 of 4 prompts" in message


def test_render_top_k_none_shows_all(tiny_model, samples):
    fig, _ = render(tiny_model, samples["ct_head.png"], PROMPTS, None)
    assert bar_count(fig) == 4


def test_render_missing_file(tiny_model, tmp_path):
    fig, message = render(tiny_model, tmp_path / "nowhere.png", "A chest X-ray.", 3, None)
    assert fig is None
    assert "nowhere.png" in message and "does not exist" in message


def test_render_broken_file(tiny_model, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    fig, message = render(tiny_model, broken, "A chest X-ray.", 3, None)
    assert fig is None and "broken.png" in message


def test_render_no_prompts(tiny_model, samples):
    fig, message = render(tiny_model, samples["ct_head.png"], " \n \n", 3, None)
    assert fig is None and "no prompts" in message


def test_render_window_for_png(tiny_model, samples):
    fig, message = render(tiny_model, samples["ct_head.png"], PROMPTS, 3, "lung")
    assert fig is None and "window='lung' does not apply" in message


@pytest.mark.parametrize("top_k", [0, "5"])
def test_render_bad_top_k(tiny_model, samples, top_k):
    fig, message = render(tiny_model, samples["ct_head.png"], PROMPTS, top_k, None)
    assert fig is None and "top_k" in message


def test_render_no_image(tiny_model):
    fig, message = render(tiny_model, None, PROMPTS, 3, None)
    assert fig is None and "No image chosen" in message


def test_render_dicom_with_window(tiny_model, tmp_path):
    path = write_ct_dicom(tmp_path / "slice.dcm")
    fig, message = render(tiny_model, path, PROMPTS, 2, "brain")
    assert bar_count(fig) == 2 and message.startswith("slice.dcm:")


# --------------------------------------------------------------------------- bundled_images


def test_bundled_images_samples_only(samples):
    assert bundled_images(include_demo=False) == samples


def test_bundled_images_with_demo_folder(samples, tmp_path, monkeypatch):
    for name in ["xray.png", "ct.jpg"]:
        (tmp_path / name).write_bytes(png_bytes())
    monkeypatch.setattr(
        "mmkd_utils.widgets.demo_images", lambda: [tmp_path / "xray.png", tmp_path / "ct.jpg"]
    )
    images = bundled_images()
    assert list(images) == [*samples, "xray.png", "ct.jpg"]


def test_bundled_images_warns_when_demo_images_are_missing(samples, monkeypatch):
    def offline():
        raise DownloadError("no network")

    monkeypatch.setattr("mmkd_utils.widgets.demo_images", offline)
    with pytest.warns(UserWarning, match="demo images are not available: no network"):
        assert bundled_images() == samples


# --------------------------------------------------------------------------- build_demo


@pytest.fixture
def demo(tiny_model, samples, tmp_path):
    return build_demo(tiny_model, samples, upload_folder=tmp_path / "uploads")


def test_demo_starts_with_the_first_image(demo, samples):
    assert list(demo.image_picker.options) == list(samples)
    assert demo.image_picker.value == "xray_chest_pa.png"
    assert parse_prompts(demo.prompts_box.value) == list(DEMO_PROMPTS)
    assert demo.top_k.value == DEFAULT_TOP_K
    assert bar_count(demo.last_figure) == DEFAULT_TOP_K
    assert demo.last_message.startswith("xray_chest_pa.png: most likely")
    assert demo.window.value == NO_WINDOW
    assert [value for _, value in demo.window.options] == [NO_WINDOW, *WINDOWS]
    assert demo.output.outputs[0]["data"]["image/png"]  # the figure, as a PNG


def test_demo_children_are_the_exposed_widgets(demo):
    flat = [w for child in demo.children for w in getattr(child, "children", [child])]
    for widget in [demo.image_picker, demo.upload, demo.window, demo.prompts_box, demo.top_k]:
        assert widget in flat
    assert demo.status in flat and demo.output in flat


def test_demo_reacts_to_prompts_top_k_and_image(demo):
    before = demo.last_figure
    demo.prompts_box.value = "\n".join(PROMPTS)
    assert demo.last_figure is not before
    assert bar_count(demo.last_figure) == 4  # top_k 5, but only 4 prompts
    assert "showing 4 of 4 prompts" in demo.last_message

    demo.top_k.value = 2
    assert bar_count(demo.last_figure) == 2

    demo.image_picker.value = "ct_head.png"
    assert demo.last_message.startswith("ct_head.png: most likely")
    assert demo.last_figure.axes[0].get_title() == "ct_head.png"
    assert bar_count(demo.last_figure) == 2
    labels = {t.get_text().replace("\n", " ") for t in demo.last_figure.axes[0].get_yticklabels()}
    assert labels <= set(PROMPTS)


def test_demo_shows_errors_instead_of_raising(demo):
    demo.prompts_box.value = "\n  \n"
    assert demo.last_figure is None and "no prompts" in demo.last_message
    assert demo.output.outputs == ()
    assert "no prompts" in demo.status.value

    demo.prompts_box.value = "A chest X-ray.\nA <b>bold</b> prompt."
    assert demo.last_figure is not None
    demo.window.value = "lung"  # the picked image is a PNG
    assert demo.last_figure is None
    assert "window='lung' does not apply" in demo.last_message
    demo.window.value = NO_WINDOW
    assert bar_count(demo.last_figure) == 2


def test_demo_top_k_range_grows_with_the_prompts(demo):
    demo.prompts_box.value = "\n".join(f"prompt {i}" for i in range(14))
    assert demo.top_k.max == 14
    demo.top_k.value = 14
    assert bar_count(demo.last_figure) == 14


def test_demo_upload_adds_and_selects_the_file(demo, tmp_path):
    demo.upload.value = upload_value(("Downloads/my scan.png", png_bytes()))
    assert demo.image_picker.value == "my_scan.png (upload)"
    assert demo.image_picker.options[-1] == "my_scan.png (upload)"
    assert demo.images["my_scan.png (upload)"] == tmp_path / "uploads" / "my_scan.png"
    assert demo.last_message.startswith("my_scan.png: most likely")
    assert bar_count(demo.last_figure) == DEFAULT_TOP_K
    assert demo.upload.value == ()  # ready for the next upload

    demo.upload.value = upload_value(("my scan.png", png_bytes()))  # the same file again
    assert list(demo.image_picker.options).count("my_scan.png (upload)") == 1


def test_demo_bad_upload_is_reported(demo):
    demo.upload.value = upload_value(("empty.dcm", b""))
    assert demo.last_figure is None and "'empty.dcm' is empty" in demo.last_message
    assert "empty.dcm (upload)" not in demo.image_picker.options

    demo.upload.value = upload_value(("garbage.dcm", b"not a dicom file at all"))
    assert demo.image_picker.value == "garbage.dcm (upload)"
    assert demo.last_figure is None and "garbage.dcm" in demo.last_message


def test_demo_dicom_upload_with_windows(demo, tmp_path):
    data = write_ct_dicom(tmp_path / "ct.dcm").read_bytes()
    demo.upload.value = upload_value(("IM-0001.dcm", data))
    assert demo.image_picker.value == "IM-0001.dcm (upload)"
    assert demo.last_message.startswith("IM-0001.dcm: most likely")
    for name in WINDOWS:
        demo.window.value = name
        assert demo.last_figure is not None, demo.last_message
        assert demo.last_message.startswith("IM-0001.dcm:")


def test_demo_nifti_upload(demo):
    demo.upload.value = upload_value(("brain.nii.gz", nifti_gz_bytes()))
    assert demo.image_picker.value == "brain.nii.gz (upload)"
    assert demo.last_figure is not None, demo.last_message


def test_demo_without_images(tiny_model, tmp_path):
    demo = build_demo(tiny_model, {}, prompts=PROMPTS, upload_folder=tmp_path)
    assert demo.image_picker.options == ()
    assert demo.last_figure is None and "No image chosen" in demo.last_message
    demo.upload.value = upload_value(("a.png", png_bytes()))
    assert bar_count(demo.last_figure) == 4


def test_demo_renderer_can_be_replaced(demo):
    calls = []

    def renderer(image, text, top_k, window):
        calls.append((Path(image).name, top_k, window))
        return None, "custom"

    demo.renderer = renderer
    demo.top_k.value = 3
    assert calls == [("xray_chest_pa.png", 3, None)]
    assert demo.last_message == "custom"


def test_demo_reports_unexpected_errors(demo):
    def renderer(image, text, top_k, window):
        raise RuntimeError("boom")

    demo.renderer = renderer
    demo.refresh()
    assert demo.last_message == "Unexpected error (RuntimeError): boom"


def test_importing_the_module_stays_light(fresh_imports):
    # ipywidgets is optional; pyplot would pick a backend
    assert fresh_fact(fresh_imports, "widgets")["imported"] == []
