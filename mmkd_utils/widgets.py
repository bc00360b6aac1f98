"""An interactive zero-shot demo with ipywidgets, built from plain, tested functions.

Pick a bundled image or upload your own (PNG, JPEG, TIFF, DICOM or NIfTI), type one
prompt per line, choose how many bars to show and, for DICOM and NIfTI files, a CT
window: the demo ranks the prompts for the image. All the logic lives in functions that
work without widgets and raise or return ordinary values:

* :func:`parse_prompts` turns the text box into a prompt list;
* :func:`safe_file_name` and :func:`save_upload` store an uploaded file safely;
* :func:`predict` ranks prompts for one image as a table;
* :func:`render` does everything one widget change needs and returns
  ``(figure or None, message)``, never raising for bad input;
* :func:`bundled_images` lists the sample and demo images;
* :func:`build_demo` wires widgets to :func:`render`, nothing more.

ipywidgets, pandas and matplotlib are imported inside the functions that need them, so
importing this module stays light. Widgets only work in a live Jupyter kernel (they do
not render on GitHub or in a saved notebook).

Introduced in ``notebooks/06_interactive_demo.ipynb``.

Example:
    >>> from mmkd_utils.widgets import parse_prompts
    >>> parse_prompts("A chest X-ray.\\n\\nA brain MRI.\\nA chest X-ray.")
    ['A chest X-ray.', 'A brain MRI.']
"""

from __future__ import annotations

import base64
import io
import numbers
import os
import re
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmkd_utils.demo import DEMO_PROMPTS
from mmkd_utils.errors import ImageLoadError, MMKDError, PromptError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from mmkd_utils.model.classifier import ZeroShotClassifier
    from mmkd_utils.model.loading import MMKDModel

    #: What :func:`predict` and :func:`render` take as prompts.
    Prompts = str | Sequence[str] | ZeroShotClassifier

#: Longest file name :func:`safe_file_name` returns, in bytes of UTF-8.
MAX_FILE_NAME = 120
#: Value of the window dropdown that means "no window": the file's own display range.
NO_WINDOW = "none"
#: Default number of bars in the demo (fewer when there are fewer prompts).
DEFAULT_TOP_K = 5

# Compression suffixes that belong to the suffix before them (".nii.gz", ".tar.gz").
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst"}

__all__ = [
    "DEFAULT_TOP_K",
    "MAX_FILE_NAME",
    "NO_WINDOW",
    "UploadError",
    "build_demo",
    "bundled_images",
    "parse_prompts",
    "predict",
    "render",
    "safe_file_name",
    "save_upload",
]


class UploadError(ImageLoadError):
    """An upload is empty, holds several files, or could not be saved.

    Example:
        >>> issubclass(UploadError, MMKDError)
        True
    """


# --------------------------------------------------------------------------- prompts


def parse_prompts(text: str) -> list[str]:
    """Split text into prompts: one per line, stripped, without blank lines or duplicates.

    The first occurrence of a repeated prompt is kept, so the order is the order of the
    text. Windows (``\\r\\n``) and old Mac (``\\r``) line ends work too.

    Raises:
        PromptError: ``text`` is not a string, or no prompt is left.

    Example:
        >>> parse_prompts("  A chest X-ray.  \\r\\n\\nA brain MRI.\\nA chest X-ray.\\n")
        ['A chest X-ray.', 'A brain MRI.']
    """
    if not isinstance(text, str):
        raise PromptError(
            f"The prompts must be text with one prompt per line, not {type(text).__name__}."
        )
    prompts = list(dict.fromkeys(line.strip() for line in text.splitlines()))
    prompts = [prompt for prompt in prompts if prompt]
    if not prompts:
        raise PromptError(
            "There are no prompts: write at least one prompt, one per line, e.g. "
            "'A chest X-ray showing pneumonia.' (two or more to compare them)."
        )
    return prompts


def _prompt_list(prompts: str | Sequence[str]) -> list[str]:
    """A checked, stripped, de-duplicated prompt list from text or a list of strings."""
    from mmkd_utils.prompts import check_prompts

    if isinstance(prompts, str):
        return parse_prompts(prompts)
    items = check_prompts(prompts)
    return list(dict.fromkeys(item.strip() for item in items))


def _is_classifier(prompts: Any) -> bool:
    """True for a :class:`~mmkd_utils.model.classifier.ZeroShotClassifier` (imported lazily)."""
    from mmkd_utils.model.classifier import ZeroShotClassifier

    return isinstance(prompts, ZeroShotClassifier)


# --------------------------------------------------------------------------- uploads


def _split_suffix(name: str) -> tuple[str, str]:
    """``("scan", ".nii.gz")`` from ``"scan.nii.gz"``: compression suffixes stay attached."""
    suffixes = Path(name).suffixes
    keep = 2 if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSION_SUFFIXES else 1
    suffix = "".join(suffixes[-keep:])
    if len(suffix) > 20:  # "report.final version 2" has no real suffix
        suffix = ""
    return name[: len(name) - len(suffix)], suffix


def safe_file_name(name: Any) -> str:
    """A file name that is safe to create in a folder: no directories, no odd characters.

    Folders are dropped (``/`` and ``\\``), characters other than letters, digits,
    ``.``, ``_``, ``-`` and ``+`` become ``_``, a leading dot gets ``upload`` in front
    (no hidden files, no ``..``), and long names are shortened to :data:`MAX_FILE_NAME`
    bytes (file systems allow 255). Suffixes such as ``.nii.gz`` are kept, so the file
    is still recognised by its name.

    Example:
        >>> safe_file_name("../../etc/my scan.nii.gz")
        'my_scan.nii.gz'
        >>> safe_file_name("C:\\\\Users\\\\me\\\\IM-0001.dcm")
        'IM-0001.dcm'
        >>> safe_file_name("..")
        'upload'
    """
    text = unicodedata.normalize("NFC", name) if isinstance(name, str) else ""
    base = re.split(r"[\\/]", text)[-1]
    base = re.sub(r"[^\w.+-]+", "_", base)
    if base.startswith("."):
        base = "upload" + base
    base = base.rstrip(".")
    if base in {"", "_", "upload"}:
        return "upload"
    if len(base.encode("utf-8")) > MAX_FILE_NAME:
        stem, suffix = _split_suffix(base)
        room = MAX_FILE_NAME - len(suffix.encode("utf-8"))
        stem = stem.encode("utf-8")[:room].decode("utf-8", errors="ignore")
        base = stem + suffix
    return base


def _upload_items(upload_value: Any) -> list[Mapping[str, Any]]:
    """The uploaded files of a ``FileUpload.value`` as a list of ``{name, content, ...}``.

    ipywidgets 8 gives a tuple of such dicts. ipywidgets 7 (still the default on some
    hosted notebooks) gave ``{name: {"metadata": ..., "content": ...}}``, accepted too.
    """
    if isinstance(upload_value, Mapping):
        if "content" in upload_value:
            return [upload_value]  # one file's dict, e.g. upload.value[0]
        if all(isinstance(v, Mapping) and "content" in v for v in upload_value.values()):
            return [{"name": name, **entry} for name, entry in upload_value.items()]
    if isinstance(upload_value, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(
        upload_value, Sequence
    ):
        raise UploadError(
            "save_upload expects the value of an ipywidgets FileUpload: a tuple of dicts "
            f"with 'name' and 'content', got {type(upload_value).__name__}."
        )
    items = list(upload_value)
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "content" not in item:
            raise UploadError(
                f"Uploaded entry {i} is a {type(item).__name__} without 'content'; expected "
                "the value of an ipywidgets 8 FileUpload (a tuple of dicts)."
            )
    return items


def _free_path(folder: Path, name: str, data: bytes) -> Path:
    """``folder/name``, or ``name_1``, ``name_2``, ... if another file has that name.

    A file with the same name and the same bytes is reused (uploading twice is harmless).
    """
    stem, suffix = _split_suffix(name)
    candidate, n = folder / name, 0
    while candidate.exists():
        if candidate.is_file() and candidate.stat().st_size == len(data):
            if candidate.read_bytes() == data:
                return candidate
        n += 1
        candidate = folder / f"{stem}_{n}{suffix}"
    return candidate


def save_upload(upload_value: Any, folder: str | os.PathLike) -> Path:
    """Write the file of an ipywidgets ``FileUpload`` into ``folder``; return its path.

    ``upload_value`` is ``FileUpload.value`` of ipywidgets 8: a tuple of dicts with
    ``name`` and ``content`` (a memoryview or bytes), or one such dict (the dict of
    ipywidgets 7, ``{name: {"metadata": ..., "content": ...}}``, works too). The name is made
    safe with :func:`safe_file_name`; a different file of the same name gets ``_1``,
    ``_2``, ... before its suffix, and the same file uploaded again is not copied twice.
    The file is written to a temporary name in ``folder`` and then renamed, so a failed
    write leaves no partial file. ``folder`` is created if needed.

    Raises:
        UploadError: nothing was uploaded, several files were, the file is empty, or it
            could not be written (an :class:`~mmkd_utils.errors.ImageLoadError`).

    Example:
        >>> value = ({"name": "scans/brain.nii.gz", "content": memoryview(b"...")},)
        >>> save_upload(value, "uploads").name  # doctest: +SKIP
        'brain.nii.gz'
    """
    items = _upload_items(upload_value)
    if not items:
        raise UploadError(
            "No file was uploaded: click Upload and choose one image, DICOM or NIfTI file."
        )
    if len(items) > 1:
        names = ", ".join(repr(str(item.get("name", "?"))) for item in items[:5])
        raise UploadError(
            f"{len(items)} files were uploaded at once ({names}); upload one file at a time."
        )
    item = items[0]
    raw_name = item.get("name")
    content = item.get("content")
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise UploadError(
            f"The upload {raw_name!r} has content of type {type(content).__name__}; expected "
            "bytes or a memoryview, as ipywidgets' FileUpload gives."
        )
    data = bytes(content)
    if not data:
        raise UploadError(f"The upload {raw_name!r} is empty (0 bytes); choose another file.")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = _free_path(folder, safe_file_name(raw_name), data)
        if target.exists():
            return target
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise UploadError(
            f"The upload {raw_name!r} could not be saved in {folder} ({err}); choose another "
            "upload folder (upload_folder=...) or free some disk space."
        ) from None
    return target


# --------------------------------------------------------------------------- predict


def _image_name(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return Path(image).name
    return f"the {type(image).__name__} image"


def _load(image: Any, window: str | tuple[float, float] | None) -> Any:
    """A path through :func:`~mmkd_utils.images.load_image` (with ``window``), else as is."""
    if isinstance(image, (str, os.PathLike)):
        from mmkd_utils.images.medical import load_image

        return load_image(image, window=window)
    if window is not None:
        raise ImageLoadError(
            f"window={window!r} applies to DICOM and NIfTI files only, not to "
            f"{_image_name(image)}; pass the file's path, or leave window out."
        )
    return image


def _check_top_k(top_k: Any) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"top_k must be a whole number of 1 or more, or None; got {top_k!r}.")
    return int(top_k)


def predict(
    model: MMKDModel,
    image: Any,
    prompts: Prompts,
    *,
    top_k: int | None = None,
    window: str | tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Rank prompts for one image: a table of prompt, probability and rank, best first.

    Args:
        model: a loaded model (:func:`mmkd_utils.load_model`).
        image: a file path (any image, DICOM or NIfTI file; read with
            :func:`mmkd_utils.images.medical.load_image`), a PIL image or a numpy array.
        prompts: text with one prompt per line (see :func:`parse_prompts`), a list of
            prompts (stripped, duplicates dropped), or a zero-shot classifier
            (``model.classifier(task)``: then the rows are its classes).
        top_k: keep only the ``top_k`` most likely rows; ``None`` keeps all.
        window: DICOM and NIfTI only: a name from :data:`mmkd_utils.images.medical.WINDOWS`
            or ``(centre, width)``. ``load_image`` decides whether it applies: a window
            for a PNG, JPEG or colour DICOM is an error.

    Returns:
        A DataFrame with columns ``prompt``, ``probability`` and ``rank`` (1 = most
        likely), sorted by probability, largest first. Over all prompts the
        probabilities sum to 1.

    Raises:
        PromptError: no usable prompt.
        ImageLoadError: the image cannot be read, or the window does not apply to it.
        ValueError: ``top_k`` is not a positive whole number or None.

    Example:
        >>> table = predict(clip, "imgs/ct_head.png", "A head CT.\\nA chest X-ray.")
        ... # doctest: +SKIP
        >>> list(table.columns)  # doctest: +SKIP
        ['prompt', 'probability', 'rank']
    """
    import pandas as pd

    k = _check_top_k(top_k)
    if _is_classifier(prompts):
        labels, text_or_classifier = list(prompts.class_names), prompts
    else:
        labels = _prompt_list(prompts)
        text_or_classifier = labels
    pixels = _load(image, window)
    probs = model.zero_shot([pixels], text_or_classifier)[0].double().tolist()
    table = pd.DataFrame({"prompt": labels, "probability": probs})
    table = table.sort_values("probability", ascending=False, kind="stable", ignore_index=True)
    table["rank"] = range(1, len(table) + 1)
    return table if k is None else table.head(k)


# --------------------------------------------------------------------------- render


def render(
    model: MMKDModel,
    image: Any,
    prompts_text: Prompts,
    top_k: int | None = DEFAULT_TOP_K,
    window: str | tuple[float, float] | None = None,
) -> tuple[Figure | None, str]:
    """Everything one change of the demo does: parse, load, predict, plot; never raises.

    ``prompts_text`` is what :func:`predict` takes as prompts (usually the text box's
    text). On success the figure holds the ``top_k`` most likely prompts as bars
    (:func:`~mmkd_utils.plotting.plot_probability_bars`, titled with the image name) and
    the message names the most likely one. On bad input (no prompts, an unreadable
    file, a window that does not apply, ...) the figure is ``None`` and the message is
    the error's text, which says what to do. Errors that are bugs still raise.

    Example:
        >>> fig, message = render(clip, "missing.png", "A chest X-ray.")  # doctest: +SKIP
        >>> fig is None, "missing.png" in message  # doctest: +SKIP
        (True, True)
    """
    from mmkd_utils.plotting import plot_probability_bars

    if image is None:
        return None, "No image chosen: pick one from the list or upload a file."
    try:
        k = _check_top_k(top_k)
    except ValueError as err:
        return None, str(err)
    try:
        table = predict(model, image, prompts_text, window=window)
        fig = plot_probability_bars(table["probability"].to_numpy(), list(table["prompt"]), k)
    except MMKDError as err:
        return None, str(err)
    name = _image_name(image)
    fig.axes[0].set_title(name, fontsize=10)
    best = table.iloc[0]
    shown = len(table) if k is None else min(k, len(table))
    what = "classes" if _is_classifier(prompts_text) else "prompts"
    message = (
        f"{name}: most likely {best['prompt']!r} (p = {best['probability']:.3f}); "
        f"showing {shown} of {len(table)} {what}."
    )
    return fig, message


# --------------------------------------------------------------------------- images


def bundled_images(*, include_demo: bool = True) -> dict[str, Path]:
    """The images that come with the tutorials, by file name: samples, then demo images.

    The samples are the repository's ``imgs/`` (:func:`mmkd_utils.samples.sample_images`);
    the nine published demo images (:func:`mmkd_utils.demo.demo_images`) are added when
    ``include_demo`` and they can be found or downloaded. Either source that is missing
    gives a warning instead of an error, so the demo still starts (with uploads only, at
    worst).

    Example:
        >>> images = bundled_images()  # doctest: +SKIP
        >>> list(images)[:2]  # doctest: +SKIP
        ['xray_chest_pa.png', 'ct_head.png']
    """
    from mmkd_utils.demo import demo_images
    from mmkd_utils.samples import sample_images

    sources: list[tuple[str, Callable[[], list[Path]]]] = [("sample", sample_images)]
    if include_demo:
        sources.append(("demo", demo_images))
    images: dict[str, Path] = {}
    for what, source in sources:
        try:
            paths = source()
        except MMKDError as err:
            warnings.warn(f"The {what} images are not available: {err}", stacklevel=2)
            continue
        for path in paths:
            images.setdefault(path.name, Path(path))
    return images


# --------------------------------------------------------------------------- widgets


def _figure_output(fig: Figure) -> dict[str, Any]:
    """An Output-widget entry (nbformat display_data) that shows ``fig`` as a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {
        "output_type": "display_data",
        "data": {"image/png": png, "text/plain": repr(fig)},
        "metadata": {},
    }


def _status_html(message: str, ok: bool) -> str:
    import html

    colour = "#1a5d1a" if ok else "#a40000"
    return f'<span style="color: {colour}">{html.escape(message)}</span>'


def build_demo(
    model: MMKDModel,
    images: Mapping[str, str | os.PathLike] | None = None,
    *,
    prompts: Sequence[str] = DEMO_PROMPTS,
    upload_folder: str | os.PathLike | None = None,
) -> Any:
    """The interactive zero-shot demo: a VBox of widgets whose callbacks call :func:`render`.

    Args:
        model: a loaded model.
        images: ``{name: path}`` shown in the image list (e.g. :func:`bundled_images`);
            may be empty, then only uploads can be ranked.
        prompts: the prompts the text box starts with, one per line.
        upload_folder: where uploaded files are saved; default a new temporary folder.

    Returns:
        An ``ipywidgets.VBox``. Display it in a notebook cell. Its parts are attributes,
        so code (and tests) can drive the demo by setting ``.value`` without a browser:

        * ``image_picker`` (Dropdown of image names), ``upload`` (FileUpload, any file),
          ``prompts_box`` (Textarea, one prompt per line), ``top_k`` (IntSlider),
          ``window`` (Dropdown: :data:`NO_WINDOW` or a name of
          :data:`mmkd_utils.images.medical.WINDOWS`; used for DICOM and NIfTI),
          ``status`` (HTML message) and ``output`` (Output with the figure);
        * ``images`` (name → path, including uploads), ``upload_folder``;
        * ``last_figure`` (Figure or None) and ``last_message`` (str) of the last
          update; ``refresh()`` updates by hand;
        * ``renderer``: the function ``(image, prompts_text, top_k, window) ->
          (figure, message)`` each update calls, by default :func:`render` with
          ``model``. Replace it to change what the demo computes.

    Example:
        >>> demo = build_demo(clip, bundled_images())  # doctest: +SKIP
        >>> demo.top_k.value = 3  # doctest: +SKIP
        >>> len(demo.last_figure.axes[0].patches)  # doctest: +SKIP
        3
    """
    import ipywidgets as widgets
    from traitlets import TraitError

    from mmkd_utils.images.medical import WINDOWS

    prompt_list = list(prompts)
    n_prompts = max(1, len(prompt_list))
    images_by_name = {str(name): Path(path) for name, path in (images or {}).items()}
    folder = (
        Path(upload_folder)
        if upload_folder is not None
        else Path(tempfile.mkdtemp(prefix="mmkd_uploads_"))
    )

    wide = widgets.Layout(width="95%")
    label_width = {"description_width": "90px"}
    image_picker = widgets.Dropdown(
        options=list(images_by_name),
        description="Image",
        style=label_width,
        layout=widgets.Layout(width="60%"),
    )
    upload = widgets.FileUpload(description="Upload", multiple=False)
    window_options = [("none (file's own)", NO_WINDOW)] + [
        (f"{name} (C {centre:g}, W {width:g})", name) for name, (centre, width) in WINDOWS.items()
    ]
    window = widgets.Dropdown(
        options=window_options,
        value=NO_WINDOW,
        description="CT window",
        style=label_width,
        layout=widgets.Layout(width="60%"),
    )
    prompts_box = widgets.Textarea(
        value="\n".join(prompt_list),
        description="Prompts",
        placeholder="One prompt per line, e.g. A chest X-ray showing pneumonia.",
        rows=min(12, n_prompts + 1),
        continuous_update=False,
        style=label_width,
        layout=wide,
    )
    top_k = widgets.IntSlider(
        value=min(DEFAULT_TOP_K, n_prompts),
        min=1,
        max=max(10, n_prompts),
        description="Top k",
        continuous_update=False,
        style=label_width,
    )
    status = widgets.HTML()
    output = widgets.Output()
    demo = widgets.VBox(
        [widgets.HBox([image_picker, upload]), window, prompts_box, top_k, status, output]
    )

    demo.image_picker, demo.upload, demo.window = image_picker, upload, window
    demo.prompts_box, demo.top_k, demo.status, demo.output = prompts_box, top_k, status, output
    demo.images, demo.upload_folder = images_by_name, folder
    demo.last_figure, demo.last_message = None, ""
    demo.renderer = lambda image, text, k, win: render(model, image, text, k, win)
    quiet = {"on": False}  # set while the demo changes its own widgets

    def show(fig: Figure | None, message: str) -> None:
        demo.last_figure, demo.last_message = fig, message
        status.value = _status_html(message, ok=fig is not None)
        output.outputs = () if fig is None else (_figure_output(fig),)

    def refresh(_change: Any = None) -> None:
        if quiet["on"]:
            return
        name = image_picker.value
        image = None if name is None else demo.images.get(name)
        chosen = None if window.value == NO_WINDOW else window.value
        try:
            fig, message = demo.renderer(image, prompts_box.value, top_k.value, chosen)
        except Exception as err:  # a bug: show it instead of losing it in the kernel log
            fig, message = None, f"Unexpected error ({type(err).__name__}): {err}"
        show(fig, message)

    def on_prompts(change: Any) -> None:
        try:
            top_k.max = max(top_k.max, len(parse_prompts(change["new"])))
        except PromptError:
            pass  # render reports it
        refresh()

    def on_upload(change: Any) -> None:
        if not change["new"]:
            return  # the reset below
        try:
            path = save_upload(change["new"], folder)
        except MMKDError as err:
            show(None, str(err))
            return
        finally:
            quiet["on"] = True
            try:
                upload.value = ()  # so that the same file can be uploaded again
            except TraitError:  # ipywidgets 7: its value cannot be reset; no need
                pass
            quiet["on"] = False
        label = f"{path.name} (upload)"
        demo.images[label] = path
        quiet["on"] = True
        try:
            if label not in image_picker.options:
                image_picker.options = [*image_picker.options, label]
            image_picker.value = label
        finally:
            quiet["on"] = False
        refresh()

    demo.refresh = refresh
    image_picker.observe(refresh, names="value")
    window.observe(refresh, names="value")
    top_k.observe(refresh, names="value")
    prompts_box.observe(on_prompts, names="value")
    upload.observe(on_upload, names="value")
    refresh()
    return demo
