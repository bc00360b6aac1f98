"""The zero-shot demo of notebook 06: :func:`build_demo` wires ipywidgets to :func:`render`."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import numbers
import os
import re
import tempfile
import unicodedata
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from mmkd_utils.demo import DEMO_PROMPTS, demo_images
from mmkd_utils.errors import ArgumentError, ImageLoadError, MMKDError, PromptError
from mmkd_utils.images import WINDOWS, load_image
from mmkd_utils.model.classifier import ZeroShotClassifier
from mmkd_utils.plotting import plot_probability_bars
from mmkd_utils.prompts import check_prompts
from mmkd_utils.samples import sample_images

MAX_FILE_NAME = 120  #: Longest file name :func:`safe_file_name` returns, in UTF-8 bytes.
NO_WINDOW = "none"  #: The window dropdown's "no window": the file's own display range.
DEFAULT_TOP_K = 5  #: Bars in the demo at first (fewer when there are fewer prompts).


class UploadError(ImageLoadError):
    """An upload is empty, holds several files, or could not be saved."""


def parse_prompts(text: str) -> list[str]:
    """Split text into prompts: one per line, stripped, without blank lines or repeats.

    Example:
        >>> parse_prompts("  A chest X-ray.  \\r\\n\\nA brain MRI.\\nA chest X-ray.\\n")
        ['A chest X-ray.', 'A brain MRI.']
    """
    if not isinstance(text, str):
        raise PromptError(f"The prompts must be text, one per line, not {type(text).__name__}.")
    prompts = [p for p in dict.fromkeys(line.strip() for line in text.splitlines()) if p]
    if not prompts:
        raise PromptError("There are no prompts: write one per line, e.g. 'A chest X-ray.'")
    return prompts


def _split_suffix(name: str) -> tuple[str, str]:
    """``("scan", ".nii.gz")`` from ``"scan.nii.gz"``: compression suffixes stay attached."""
    suffix = re.search(r"(\.[^.]{1,16})?(\.(gz|bz2|xz|zst))?$", name).group()
    return name[: len(name) - len(suffix)], suffix


def safe_file_name(name: Any) -> str:
    """A name safe in any folder: no folder, odd character or leading dot; ≤ MAX_FILE_NAME bytes.

    Example:
        >>> safe_file_name("../../etc/my scan.nii.gz"), safe_file_name("..")
        ('my_scan.nii.gz', 'upload')
    """
    text = unicodedata.normalize("NFC", name) if isinstance(name, str) else ""
    base = re.sub(r"[^\w.+-]+", "_", re.split(r"[\\/]", text)[-1])
    base = ("upload" + base if base.startswith(".") else base).rstrip(".")
    stem, suffix = _split_suffix("upload" if base in {"", "_"} else base)
    room = MAX_FILE_NAME - len(suffix.encode("utf-8"))  # cut the stem to fit
    return stem.encode("utf-8")[:room].decode("utf-8", errors="ignore") + suffix


def save_upload(upload_value: Any, folder: str | os.PathLike) -> Path:
    """Write the file of a ``FileUpload.value`` (or one dict) atomically into ``folder``, named by
    :func:`safe_file_name`; another file of that name gets ``_1``, ``_2``...; the same, nothing.

    Example:
        >>> save_upload(({"name": "scans/brain.nii.gz", "content": b"..."},), tmp).name
        'brain.nii.gz'
    """
    items = [upload_value] if isinstance(upload_value, dict) else upload_value
    listed = isinstance(items, (list, tuple))  # FileUpload.value: a tuple of dicts
    if not listed or not all(isinstance(i, dict) and "content" in i for i in items):
        what = type(upload_value).__name__
        raise UploadError(f"Pass FileUpload.value (tuple of dicts), not a {what} without 'content'")
    if not items:
        raise UploadError("No file was uploaded: click Upload and choose one image file.")
    if len(items) > 1:
        names = ", ".join(repr(str(item.get("name"))) for item in items[:5])
        raise UploadError(f"{len(items)} files were uploaded ({names}); one file at a time.")
    name, data = items[0].get("name"), items[0]["content"]
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UploadError(f"Upload {name!r}: content of type {type(data).__name__}, not bytes.")
    if not data:
        raise UploadError(f"The upload {name!r} is empty (0 bytes); choose another file.")
    folder = Path(folder)
    part = folder / f".upload-{os.getpid()}.part"  # written whole, then renamed
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stem, suffix = _split_suffix(safe_file_name(name))
        target, n = folder / (stem + suffix), 0
        while target.exists() and not (target.is_file() and target.read_bytes() == data):
            n += 1
            target = folder / f"{stem}_{n}{suffix}"
        if not target.exists():
            part.write_bytes(data)
            os.replace(part, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        raise UploadError(f"The upload {name!r} could not be saved in {folder}: {err}") from None
    return target


def predict(model, image, prompts, *, top_k: int | None = None, window=None) -> pd.DataFrame:
    """Rank ``prompts`` (text, one per line; a list; a classifier) for an image (path, PIL image,
    array; ``window`` for DICOM/NIfTI): columns ``prompt``, ``probability``, ``rank``, best first.

    Example:
        >>> list(predict(clip, xray, ["A chest X-ray.", "A brain MRI."]).columns)
        ['prompt', 'probability', 'rank']
    """
    bad = isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1
    if top_k is not None and bad:
        raise ArgumentError(f"top_k must be a whole number of 1 or more, or None; not {top_k!r}.")
    if isinstance(prompts, ZeroShotClassifier):
        labels, target = list(prompts.class_names), prompts
    elif isinstance(prompts, str):
        labels = target = parse_prompts(prompts)
    else:
        labels = target = list(dict.fromkeys(p.strip() for p in check_prompts(prompts)))
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image, window=window)
    elif window is not None:
        raise ImageLoadError(f"window={window!r} is for DICOM and NIfTI files only: pass a path.")
    probs = model.zero_shot([image], target)[0].double().tolist()
    table = pd.DataFrame({"prompt": labels, "probability": probs})
    table = table.sort_values("probability", ascending=False, kind="stable", ignore_index=True)
    return table.assign(rank=table.index + 1).head(top_k)


def render(model, image, prompts_text, top_k: int | None = DEFAULT_TOP_K, window=None):
    """One update of the demo: ``(figure, message)``, or ``(None, what to fix)`` on bad input.

    Example:
        >>> fig, message = render(clip, xray, "A chest X-ray.\\nA brain MRI.")
        >>> len(fig.axes[0].patches), message.startswith("xray_chest_pa.png: most likely")
        (2, True)
    """
    if image is None:
        return None, "No image chosen: pick one from the list or upload a file."
    try:
        table = predict(model, image, prompts_text, window=window)
        fig = plot_probability_bars(table["probability"], list(table["prompt"]), top_k)
    except MMKDError as err:
        return None, str(err)
    name = Path(image).name if isinstance(image, (str, os.PathLike)) else "the image"
    fig.axes[0].set_title(name, fontsize=10)
    what = "classes" if isinstance(prompts_text, ZeroShotClassifier) else "prompts"
    best = f"{table['prompt'][0]!r} (p = {table['probability'][0]:.3f})"
    shown = f"showing {len(fig.axes[0].patches)} of {len(table)} {what}"
    return fig, f"{name}: most likely {best}; {shown}."


def bundled_images(*, include_demo: bool = True) -> dict[str, Path]:
    """The tutorials' images by name: ``imgs/``, then the demo images (missing ones: a warning).

    Example:
        >>> "xray_chest_pa.png" in bundled_images(include_demo=False)
        True
    """
    images: dict[str, Path] = {}
    for what, source in [("sample", sample_images), ("demo", demo_images)][: 1 + include_demo]:
        try:
            paths = [Path(path) for path in source()]
        except MMKDError as err:
            warnings.warn(f"The {what} images are not available: {err}", stacklevel=2)
            paths = []
        images |= {path.name: path for path in paths if path.name not in images}
    return images


def build_demo(model, images=None, *, prompts=DEMO_PROMPTS, upload_folder=None) -> Any:
    """A ``VBox`` whose ``image_picker``, ``upload``, ``window``, ``prompts_box``, ``top_k`` call
    ``refresh()``, which shows what ``renderer`` (:func:`render`) returns in ``status``, ``output``,
    ``last_figure`` and ``last_message``. After replacing ``renderer``, call ``refresh()``.

    Example:
        >>> demo = build_demo(clip, bundled_images(include_demo=False), upload_folder=tmp)
        >>> demo.top_k.value = 3
        >>> len(demo.last_figure.axes[0].patches)
        3
    """
    import ipywidgets as widgets  # the optional "notebooks" extra

    prompts, style = list(prompts), {"description_width": "90px"}
    n = max(1, len(prompts))
    images = {str(name): Path(path) for name, path in (images or {}).items()}
    picker = widgets.Dropdown(options=list(images), description="Image", style=style)
    upload = widgets.FileUpload(description="Upload", multiple=False)
    windows = [(f"{name} (C {c:g}, W {w:g})", name) for name, (c, w) in WINDOWS.items()]
    window = widgets.Dropdown(options=[("none (file's own)", NO_WINDOW), *windows], style=style)
    window.description = "CT window"
    prompts_box = widgets.Textarea(
        "\n".join(prompts), description="Prompts", rows=min(12, n + 1), style=style,
        placeholder="One prompt per line", continuous_update=False, layout={"width": "95%"},
    )  # fmt: skip
    top_k = widgets.IntSlider(min(DEFAULT_TOP_K, n), min=1, max=max(10, n), style=style)
    top_k.description, top_k.continuous_update = "Top k", False
    status, output = widgets.HTML(), widgets.Output()
    row = widgets.HBox([picker, upload])
    demo = widgets.VBox([row, window, prompts_box, top_k, status, output])
    vars(demo).update(image_picker=picker, upload=upload, window=window, prompts_box=prompts_box)
    vars(demo).update(top_k=top_k, status=status, output=output, images=images)
    demo.upload_folder = Path(upload_folder or tempfile.mkdtemp(prefix="mmkd_uploads_"))
    demo.renderer = lambda image, text, k, win: render(model, image, text, k, win)

    def show(fig: Any, message: str) -> None:
        demo.last_figure, demo.last_message = fig, message
        colour = "#1a5d1a" if fig is not None else "#a40000"
        status.value = f'<span style="color: {colour}">{html.escape(message)}</span>'
        png = io.BytesIO()
        if fig is not None:
            fig.savefig(png, format="png", bbox_inches="tight")
        data = {"image/png": base64.b64encode(png.getvalue()).decode(), "text/plain": repr(fig)}
        output.outputs = () if fig is None else ({"output_type": "display_data", "data": data},)

    def refresh(_change: Any = None) -> None:
        with contextlib.suppress(PromptError):  # no prompts: render reports it
            top_k.max = max(top_k.max, len(parse_prompts(prompts_box.value)))
        chosen = None if window.value == NO_WINDOW else window.value
        args = demo.images.get(picker.value), prompts_box.value, top_k.value, chosen
        try:
            show(*demo.renderer(*args))
        except Exception as err:  # a bug: show it rather than lose it in the kernel log
            show(None, f"Unexpected error ({type(err).__name__}): {err}")

    def on_upload(change: Any) -> None:
        if not change["new"]:
            return  # the reset below
        try:
            path = save_upload(change["new"], demo.upload_folder)
        except MMKDError as err:
            return show(None, str(err))
        finally:
            upload.value = ()  # so that the same file can be uploaded again
        label = f"{path.name} (upload)"
        demo.images[label] = path
        picker.unobserve(refresh, names="value")  # one update, once the upload is chosen
        picker.options = list(dict.fromkeys([*picker.options, label]))
        picker.value = label
        picker.observe(refresh, names="value")
        refresh()

    demo.refresh = refresh
    for widget in (picker, window, prompts_box, top_k):
        widget.observe(refresh, names="value")
    upload.observe(on_upload, names="value")
    refresh()
    return demo
