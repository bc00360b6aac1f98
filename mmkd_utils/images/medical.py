"""``load_image``: a DICOM (pydicom), NIfTI (nibabel) or other (Pillow) file as 8-bit RGB."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Union

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.misc import is_dicom
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array
from pydicom.pixels.common import PhotometricInterpretation

from mmkd_utils.errors import ImageLoadError
from mmkd_utils.images.pixels import (
    array_to_image,
    check_file,
    check_pixel_count,
    linear_to_uint8,
    open_image,
    pil_to_rgb,
)

#: CT windows ``(centre, width)`` in HU: ``centre ± width/2`` maps onto 0..255, clipped outside.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
    "abdomen": (40.0, 400.0),
}
#: A window: a name from :data:`WINDOWS` or an explicit ``(centre, width)``.
Window = Union[str, tuple[float, float]]  # noqa: UP007 (runtime alias)
PHOTOMETRIC = [p.value for p in PhotometricInterpretation]  # the values DICOM defines
# The pylibjpeg plugin that decodes a compressed transfer syntax, by a word of its name.
CODECS = {"2000": "pylibjpeg-openjpeg", "RLE": "pylibjpeg-rle", "JPEG": "pylibjpeg-libjpeg"}
PER_FRAME = "RescaleSlope RescaleIntercept WindowCenter WindowWidth ImageOrientationPatient".split()
# By the LPS axis normal to a slice, the (axis, sign) to the viewer's right and the sign down.
DISPLAY = {2: (0, 1, 1), 1: (0, 1, -1), 0: (1, 1, -1)}  # axial A up; coronal H up; sagittal A left


def load_image(
    path: str | bytes | os.PathLike,
    *,
    window: Window | None = None,
    frame: int | None = None,
    slice_index: int | None = None,
    axis: int = 2,
    orientation: str = "radiological",
) -> Image.Image:
    """Read a DICOM, NIfTI or ordinary image file as an 8-bit RGB PIL image.

    ``window`` (greyscale): a name from :data:`WINDOWS` or ``(centre, width)``; default the
    DICOM's own, else min–max (NIfTI: 0.5–99.5 percentiles). ``frame``: multi-frame DICOM
    (default the middle one) or 4-D NIfTI (0). ``slice_index``: NIfTI, along ``axis`` (0 sagittal,
    1 coronal, 2 axial; default the middle). ``orientation="radiological"``: slices as radiology
    viewers show them (front or head up, the patient's right on the viewer's left, sagittal face
    left), DICOM by ImageOrientationPatient (none or oblique: as stored; oblique warns), NIfTI
    via RAS+. ``"stored"``: as the file holds them.

    Example:
        >>> load_image(xray).size
        (482, 512)
    """
    path, kind = check_file(path), "Image"
    if orientation not in ("radiological", "stored"):
        raise ImageLoadError(f"orientation={orientation!r}: use 'radiological' or 'stored'.")
    bounds = None if window is None else window_bounds(window, str(path))
    try:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            kind = "NIfTI"
            return _load_nifti(path, bounds, frame, slice_index, axis, orientation)
        if path.suffix.lower() in (".dcm", ".dicom") or is_dicom(path):  # DICM at byte 128
            kind = "DICOM"
        _reject(path, kind, slice_index=slice_index, axis=None if axis == 2 else axis)
        if kind == "DICOM":
            return _load_dicom(path, window, bounds, frame, orientation)
        _reject(path, "not DICOM or NIfTI", window=window, frame=frame)
        return pil_to_rgb(open_image(path), name=str(path))
    except ImageLoadError:
        raise
    except Exception as err:  # the readers raise many types for malformed files
        raise ImageLoadError(
            f"{kind} {path} could not be read ({type(err).__name__}: {' '.join(str(err).split())}"
            "); it may be truncated or corrupt (or too large): export or download it again."
        ) from None


def window_bounds(window: Window, name: str = "image") -> tuple[float, float]:
    """The ``(low, high)`` values a window maps to 0 and 255.

    Example:
        >>> window_bounds("brain"), window_bounds((40, 400))
        ((0.0, 80.0), (-160.0, 240.0))
    """
    try:
        centre, width = WINDOWS[window.lower()] if isinstance(window, str) else map(float, window)
    except (KeyError, TypeError, ValueError):
        raise ImageLoadError(
            f"Unknown window {window!r} for {name}: it is not a name or a (centre, width) pair "
            f"of numbers; use one of {sorted(WINDOWS)} or (centre, width)."
        ) from None
    if not (np.isfinite(centre) and np.isfinite(width) and width > 0):
        raise ImageLoadError(f"window={window!r} for {name}: the width must be positive.")
    return centre - width / 2, centre + width / 2


def _reject(path: Path, what: str, **given: Any) -> None:  # arguments that do not apply
    for arg, value in given.items():
        if value is not None:
            raise ImageLoadError(f"{arg}={value!r} does not apply to {path} ({what}): omit it.")


def _index(path: Path, arg: str, value: int | None, default: int, count: int, of: str) -> int:
    value = default if value is None else value
    if not 0 <= value < count:
        raise ImageLoadError(
            f"{arg}={value} is out of range for {path}, which has {count} {of}: use 0..{count - 1}."
        )
    return value


def _load_dicom(path: Path, window: Any, bounds: Any, frame: Any, orient: str) -> Image.Image:
    with warnings.catch_warnings():  # force: also a bare dataset without the 128-byte preamble
        warnings.simplefilter("ignore")  # (and a file that is not DICOM warns)
        ds = pydicom.dcmread(path, force=True)
    if "Rows" not in ds and "SOPClassUID" not in ds:
        raise ImageLoadError(f"{path} is not a DICOM file (no DICOM header): check or rename it.")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageLoadError(f"DICOM {path} has no pixel data: open one of its image files.")
    check_pixel_count(path, int(ds.get("Columns") or 0), int(ds.get("Rows") or 0))
    frames = int(ds.get("NumberOfFrames") or 1)
    frame = _index(path, "frame", frame, frames // 2, frames, "frame(s)")
    raw = str(ds.get("PhotometricInterpretation") or "")
    default = "RGB" if ds.get("SamplesPerPixel") == 3 else "MONOCHROME2"  # missing or empty
    photometric = raw.strip().upper() or default
    if photometric not in PHOTOMETRIC:
        raise ImageLoadError(
            f"DICOM {path} has PhotometricInterpretation {raw!r}, which DICOM does not define "
            f"({', '.join(PHOTOMETRIC)}). Check the export, or set the right one with pydicom."
        )
    ds.PhotometricInterpretation = photometric  # pydicom's decoders want the exact spelling
    colour = not photometric.startswith("MONOCHROME")
    _reject(path, f"a colour image, {photometric}", window=window if colour else None)
    try:
        pixels = pixel_array(ds, index=frame)  # YBR is converted to RGB
    except Exception as err:  # a missing decoder is explained here, corrupt data by load_image
        message = " ".join(str(err).split())
        if "dependenc" not in message and not isinstance(err, NotImplementedError):
            raise
        name = getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "unknown")
        plugin = next((p for k, p in CODECS.items() if k in name), "")
        install = f"pylibjpeg {plugin} (or python-gdcm)" if plugin else "python-gdcm"
        raise ImageLoadError(
            f"DICOM {path} is compressed ({name}) and no decoder for it is installed: pip "
            f"install {install}, or convert it to uncompressed DICOM. pydicom said: {message}"
        ) from None
    _lift_frame_values(ds, frame)
    if orient == "radiological" and ds.get("ImageOrientationPatient"):
        pixels = _radiological(pixels, ds.ImageOrientationPatient, path)
    if colour:
        bits = int(ds.get("BitsStored") or 8)
        if photometric == "PALETTE COLOR":
            pixels, bits = apply_color_lut(pixels, ds), ds.RedPaletteColorLookupTableDescriptor[2]
        rgb = pixels if pixels.dtype == np.uint8 else linear_to_uint8(pixels, 0, 2.0**bits - 1)
        return array_to_image(rgb, name=str(path))
    values = apply_modality_lut(pixels, ds).astype(np.float64)  # e.g. HU
    if bounds is None and ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        grey = linear_to_uint8(apply_voi(np.rint(values).astype(np.int64), ds), 0, 2**bits - 1)
    else:
        centre, width = (ds.get(k) for k in ("WindowCenter", "WindowWidth"))
        if bounds is None and centre not in (None, "") and width not in (None, ""):
            centre, width = float(np.ravel(centre)[0]), float(np.ravel(width)[0])  # the first
            bounds = window_bounds((centre, width)) if width > 0 else None
        grey = linear_to_uint8(values, *(bounds or (None, None)))
    return array_to_image(255 - grey if photometric == "MONOCHROME1" else grey, name=str(path))


def _lift_frame_values(ds: Any, frame: int) -> None:
    """Enhanced multi-frame: the frame's rescale, window and orientation, lifted to the top."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    for group in [*per_frame[frame : frame + 1], *shared[:1]]:  # the frame's own values first
        for macro in (m for m in group if m.VR == "SQ"):
            for element in (e for item in macro.value for e in item if e.keyword in PER_FRAME):
                ds.setdefault(element.tag, element)  # values at the top are kept


def _radiological(pixels: np.ndarray, orientation: Any, path: Path) -> np.ndarray:
    """Flip or transpose a slice whose row and column directions (LPS) are axis-aligned."""
    cosines = np.resize(np.asarray(orientation, dtype=np.float64), 6).reshape(2, 3)  # row, column
    axes, largest = np.abs(cosines).argmax(axis=1), np.abs(cosines).max(axis=1)
    if axes[0] == axes[1] or not min(largest) > 0.8:  # within ~37°: PixelMed's obliquity limit
        message = f"DICOM {path}: ImageOrientationPatient {orientation} is oblique or invalid"
        warnings.warn(f"{message}: shown as stored (pass orientation='stored').", stacklevel=4)
        return pixels
    signs = np.sign(cosines[(0, 1), axes]).astype(int)
    right, right_sign, down_sign = DISPLAY[3 - int(axes.sum())]
    if axes[0] != right:  # rows run up or down the display: transpose
        pixels, signs = np.swapaxes(pixels, 0, 1), signs[::-1]
    return pixels[:: down_sign * signs[1], :: right_sign * signs[0]]


def _load_nifti(path: Path, bounds: Any, frame: Any, slice_index: Any, axis: int, orient: str):
    try:
        img = nib.funcs.squeeze_image(nib.load(path))  # (x, y, z, 1) is a 3-D volume
    except nib.filebasedimages.ImageFileError as err:
        raise ImageLoadError(f"{path} is not a NIfTI file ({err}): check or rename it.") from None
    if 0 in img.shape or img.ndim > 4:
        raise ImageLoadError(f"NIfTI {path} has shape {img.shape}: pass 2-D, 3-D or 4-D voxels.")
    index: list[Any] = [slice(None)] * min(img.ndim, 3)
    if img.ndim == 2:
        _reject(path, "2-D", frame=frame, slice_index=slice_index, axis=None if axis == 2 else axis)
    else:
        _index(path, "axis", axis, axis, 3, "spatial axes")
        _reject(path, "a 3-D NIfTI volume", frame=frame if img.ndim == 3 else None)
        if img.ndim == 4:
            img = img.slicer[..., _index(path, "frame", frame, 0, img.shape[3], "volumes")]
        img = nib.as_closest_canonical(img) if orient == "radiological" else img  # RAS+ if so
        n, along = img.shape[axis], f"slices along axis {axis}"
        index[axis] = _index(path, "slice_index", slice_index, n // 2, n, along)
    check_pixel_count(path, *(n for i, n in enumerate(img.shape) if index[i] == slice(None)))
    data = np.asarray(img.dataobj[tuple(index)], dtype=np.float64)
    data = data[::-1, ::-1].T if orient == "radiological" else data  # RAS: y up, x right to left
    if bounds is None:  # robust to a few extreme voxels
        finite = data[np.isfinite(data)]
        lo, hi = np.percentile(finite, (0.5, 99.5)) if finite.size else (0, 0)
        bounds = (lo, hi) if hi > lo else (None, None)  # then: min..max
    return array_to_image(linear_to_uint8(data, *bounds), name=str(path))
