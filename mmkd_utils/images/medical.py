"""Loading DICOM, NIfTI and ordinary image files as 8-bit RGB images for the model.

:func:`load_image` picks the reader from the file:

* **DICOM** (``.dcm``/``.dicom`` or the ``DICM`` marker at byte 128), read with pydicom:
  rescale slope/intercept (or a Modality LUT) first, then a display window, then
  MONOCHROME1 is inverted. Colour files (RGB, YBR, PALETTE COLOR) stay in colour.
* **NIfTI** (``.nii``/``.nii.gz``), read with nibabel: one 2-D slice, scaled by robust
  percentiles (0.5 and 99.5) or by a window, rotated to display upright.
* **anything Pillow reads**: :func:`mmkd_utils.images.decode.open_image` then the usual RGB
  conversion (16-bit and float images are rescaled to the full 8-bit range).

A *window* ``(centre, width)`` maps ``centre - width/2 .. centre + width/2`` linearly onto
0..255 and clips everything outside; :data:`WINDOWS` has the usual CT ones, in HU.

:func:`mmkd_utils.images.decode.to_rgb` calls :func:`load_image` for paths, so every function
that takes images (``encode_images``, ``zero_shot``, the plots) accepts these files.

Introduced in ``notebooks/02_medical_image_formats.ipynb``.

Example:
    >>> from mmkd_utils.images.medical import load_image
    >>> img = load_image("ct_slice.dcm", window="lung")  # doctest: +SKIP
    >>> img.mode  # doctest: +SKIP
    'RGB'
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from mmkd_utils.errors import ImageLoadError
from mmkd_utils.images.decode import (
    array_to_image,
    check_file,
    linear_to_uint8,
    open_image,
    pil_to_rgb,
    too_large_error,
)

#: Named CT windows as ``(centre, width)`` in Hounsfield units.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
    "abdomen": (40.0, 400.0),
}

#: A window: a name from :data:`WINDOWS` or an explicit ``(centre, width)``.
Window = Union[str, tuple[float, float]]  # noqa: UP007 (runtime alias)

# Percentiles that NIfTI slices are scaled between (robust to a few extreme voxels).
NIFTI_PERCENTILES = (0.5, 99.5)


def load_image(
    path: str | os.PathLike,
    *,
    window: Window | None = None,
    frame: int | None = None,
    slice_index: int | None = None,
    axis: int = 2,
) -> Image.Image:
    """Read a DICOM, NIfTI or ordinary image file as an 8-bit RGB PIL image.

    Args:
        path: the file.
        window: DICOM or NIfTI greyscale only: a name from :data:`WINDOWS` or
            ``(centre, width)``. For DICOM the default is the file's VOI LUT or its first
            WindowCenter/WindowWidth, else the frame's min–max; for NIfTI the default is
            the 0.5–99.5 percentile range of the slice. A window for a colour DICOM
            raises an error (colour pixels have no intensity scale to window).
        frame: multi-frame DICOM: the frame (default the middle one); 4-D NIfTI: the
            volume (default the first one, e.g. the first time point of an fMRI series).
        slice_index: NIfTI only: the slice along ``axis`` (default the middle one).
        axis: NIfTI only: 0 sagittal, 1 coronal, 2 axial (default). The volume is first
            reoriented to the closest RAS+ orientation, and the slice is turned with
            ``np.rot90`` so that anterior/superior is at the top, as most viewers show it;
            the patient's left is on the image's left (neurological convention, mirrored
            with respect to radiological viewers).

    Raises:
        ImageLoadError: the file is missing, unreadable, truncated, of an unsupported
            format, too large, or needs a decoder that is not installed; or an argument
            does not apply to this file or is out of range (``ImageLoadError`` is a
            ``ValueError``).

    Example:
        >>> load_image("chest.dcm", window=(-600, 1500)).size  # doctest: +SKIP
        (512, 512)
        >>> load_image("brain.nii.gz", axis=0, slice_index=90).mode  # doctest: +SKIP
        'RGB'
    """
    path = check_file(path)
    kind = _file_kind(path)
    try:
        if kind == "nifti":
            return _load_nifti(path, window, frame, slice_index, axis)
        _reject(path, kind, slice_index=slice_index, axis=None if axis == 2 else axis)
        if kind == "dicom":
            return _load_dicom(path, window, frame)
        _reject(path, kind, window=window, frame=frame)
        return pil_to_rgb(open_image(path), name=str(path))
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError(
            f"Image {path} is too large to decode in the memory available: downscale it "
            "first, or free memory and try again."
        ) from None
    except Exception as err:  # a malformed file that got past the readers' own checks
        what = {"dicom": "DICOM", "nifti": "NIfTI"}.get(kind, "Image")
        raise ImageLoadError(
            f"{what} {path} could not be converted to an image ({type(err).__name__}: "
            f"{err}); the file is probably corrupt or uses a variant this reader does not "
            "support. Export it again, or convert it to PNG."
        ) from None


def window_bounds(window: Window, name: str = "image") -> tuple[float, float]:
    """Return the ``(low, high)`` values a window maps to 0 and 255.

    Example:
        >>> window_bounds("brain")
        (0.0, 80.0)
        >>> window_bounds((40, 400))
        (-160.0, 240.0)
    """
    if isinstance(window, str):
        if window.lower() not in WINDOWS:
            raise ImageLoadError(
                f"Unknown window {window!r} for {name}; use one of {sorted(WINDOWS)} or a "
                "(centre, width) tuple."
            )
        window = WINDOWS[window.lower()]
    try:
        centre, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ImageLoadError(
            f"window={window!r} for {name} is not a name or a (centre, width) pair of numbers."
        ) from None
    if not (np.isfinite(centre) and np.isfinite(width) and width > 0):
        raise ImageLoadError(f"window={window!r} for {name}: the width must be positive.")
    return centre - width / 2, centre + width / 2


def _file_kind(path: Path) -> str:
    """``"dicom"``, ``"nifti"`` or ``"pil"``, from the suffix or the DICOM marker."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".dcm", ".dicom")):
        return "dicom"
    try:
        with open(path, "rb") as file:
            head = file.read(132)
    except OSError as err:
        raise ImageLoadError(
            f"Image {path} could not be read ({err.strerror or err}): check that the file "
            "is readable (permissions, a disconnected drive) and try again."
        ) from None
    return "dicom" if head[128:132] == b"DICM" else "pil"


def _reject(path: Path, kind: str, **given: Any) -> None:
    """Raise if any of the named arguments was given for a file it does not apply to."""
    what = {"dicom": "a DICOM file", "nifti": "a 2-D NIfTI image", "pil": "a plain image"}
    what = what.get(kind, kind)
    for arg, value in given.items():
        if value is not None:
            raise ImageLoadError(
                f"{arg}={value!r} does not apply to {path} ({what}); leave {arg} out for this file."
            )


def _too_large(path: Path, height: int, width: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and height * width > limit:
        raise too_large_error(path, f"{width}x{height} = {width * height} pixels > {limit}")


# ----------------------------------------------------------------------------- DICOM


def _load_dicom(path: Path, window: Window | None, frame: int | None) -> Image.Image:
    ds = _read_dicom(path)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageLoadError(
            f"DICOM {path} has no pixel data (a report, presentation state or DICOMDIR?). "
            "Open one of the image files of the series instead."
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        n_frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError) as err:
        raise ImageLoadError(
            f"DICOM {path} has no valid image size ({err}): check the file, or export it again."
        ) from None
    if rows < 1 or cols < 1 or n_frames < 1:
        raise ImageLoadError(
            f"DICOM {path} has {rows} rows, {cols} columns and {n_frames} frame(s), so it "
            "holds no pixels: check the file, or export it again."
        )
    _too_large(path, rows, cols)
    if frame is None:
        frame = n_frames // 2
    elif not 0 <= frame < n_frames:
        raise ImageLoadError(
            f"frame={frame} is out of range for {path}, which has {n_frames} frame(s): "
            f"use 0..{n_frames - 1}."
        )
    photometric = _photometric(ds, path)
    colour = not photometric.startswith("MONOCHROME")
    if colour and window is not None:
        raise ImageLoadError(
            f"window={window!r} does not apply to {path}: it is a colour ({photometric}) "
            "image. Leave window out."
        )
    bounds = None if window is None else window_bounds(window, str(path))
    pixels = _decode_frame(ds, frame, path)
    if colour:
        return array_to_image(_dicom_colour(pixels, ds, photometric), name=str(path))
    values = _modality(pixels, ds, frame)
    grey = _dicom_window(values, ds, frame, bounds)
    if photometric == "MONOCHROME1":  # 0 is white in MONOCHROME1
        grey = 255 - grey
    return array_to_image(grey, name=str(path))


#: The values of PhotometricInterpretation (0028,0004) the standard defines (some retired).
PHOTOMETRIC_INTERPRETATIONS = (
    "MONOCHROME1",
    "MONOCHROME2",
    "PALETTE COLOR",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_PARTIAL_422",
    "YBR_PARTIAL_420",
    "YBR_ICT",
    "YBR_RCT",
    "HSV",
    "ARGB",
    "CMYK",
    "XYB",
)


def _photometric(ds: Any, path: Path) -> str:
    """The dataset's PhotometricInterpretation, tidied ("monochrome2 " → "MONOCHROME2").

    A missing or empty value means MONOCHROME2 (one sample per pixel) or RGB; a value
    the standard does not define is an error that names it.
    """
    raw = str(ds.get("PhotometricInterpretation") or "").strip()
    value = raw.upper()
    if not value:
        value = "RGB" if int(ds.get("SamplesPerPixel") or 1) == 3 else "MONOCHROME2"
    if value not in PHOTOMETRIC_INTERPRETATIONS:
        raise ImageLoadError(
            f"DICOM {path} has PhotometricInterpretation {raw!r}, which the DICOM standard "
            f"does not define (expected one of {', '.join(PHOTOMETRIC_INTERPRETATIONS)}). "
            "Check how the file was exported, or set the right value with pydicom "
            "(ds.PhotometricInterpretation = 'MONOCHROME2'; ds.save_as(...)) and load it again."
        )
    if raw != value:  # pydicom's decoders want the exact spelling
        ds.PhotometricInterpretation = value
    return value


def _read_dicom(path: Path) -> Any:
    """Read the dataset; files without the 128-byte preamble are retried with force=True."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    except Exception as err:  # pydicom raises many types for broken files
        raise ImageLoadError(
            f"DICOM {path} could not be read ({type(err).__name__}: {err}); the file may be "
            "truncated or corrupt. Export or download it again."
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
        if "Rows" in ds or "SOPClassUID" in ds:
            return ds
    except Exception:  # reported below as "not DICOM"
        pass
    raise ImageLoadError(
        f"{path} is not a DICOM file (no DICOM header found). Check the file, or rename it "
        "if it is an ordinary image."
    )


def _decode_frame(ds: Any, frame: int, path: Path) -> np.ndarray:
    """Decode one frame, with YBR converted to RGB; explain missing decoders."""
    try:
        try:
            from pydicom.pixels import pixel_array  # pydicom >= 3
        except ImportError:  # pydicom 2.4
            return _decode_frame_pydicom2(ds, frame)
        return pixel_array(ds, index=frame)
    except Exception as err:  # pydicom raises many types for missing codecs and bad data
        message = " ".join(str(err).split())
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        if "missing" in message and "dependenc" in message:
            raise ImageLoadError(
                f"DICOM {path} is compressed ({name}) and no decoder for it is installed. "
                f"Install one: pip install {_codec_packages(name)} (or pip install "
                f"python-gdcm). pydicom said: {message}"
            ) from None
        if isinstance(err, NotImplementedError):
            raise ImageLoadError(
                f"DICOM {path} uses {name}, which pydicom cannot decode ({message}). Try "
                f"pip install {_codec_packages(name)}, or convert the file to uncompressed "
                "DICOM (e.g. gdcmconv --raw)."
            ) from None
        raise ImageLoadError(
            f"DICOM {path} pixel data could not be decoded ({message}); the file may be "
            "truncated or corrupt. Export or download it again."
        ) from None


def _decode_frame_pydicom2(ds: Any, frame: int) -> np.ndarray:
    from pydicom.pixel_data_handlers.util import convert_color_space

    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames") or 1) > 1:
        pixels = pixels[frame]
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if (
        photometric in ("YBR_FULL", "YBR_FULL_422")
        and not ds.file_meta.TransferSyntaxUID.is_compressed
    ):
        pixels = convert_color_space(pixels, photometric, "RGB")
    return pixels


def _codec_packages(syntax_name: str) -> str:
    """The pip packages that decode a compressed transfer syntax (by its name)."""
    if "2000" in syntax_name:  # JPEG 2000 and HTJ2K
        return "pylibjpeg pylibjpeg-openjpeg"
    if "JPEG" in syntax_name:  # JPEG-LS, JPEG lossless and extended
        return "pylibjpeg pylibjpeg-libjpeg"
    if "RLE" in syntax_name:
        return "pylibjpeg pylibjpeg-rle"
    return "python-gdcm"


def _dicom_colour(pixels: np.ndarray, ds: Any, photometric: str) -> np.ndarray:
    """RGB values in 0..255 for a PALETTE COLOR, RGB or (already converted) YBR frame."""
    try:
        from pydicom.pixels import apply_color_lut
    except ImportError:  # pydicom 2.4
        from pydicom.pixel_data_handlers.util import apply_color_lut

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    else:
        rgb, bits = pixels, int(ds.get("BitsStored") or 8)
    if rgb.dtype == np.uint8:
        return rgb
    return linear_to_uint8(rgb, 0.0, float(2**bits - 1))


def _frame_value(ds: Any, frame: int, keyword: str) -> Any:
    """``keyword`` from the dataset, else from the (enhanced multi-frame) functional groups."""
    if keyword in ds:
        return ds[keyword].value
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame),
                          ("SharedFunctionalGroupsSequence", 0)):  # fmt: skip
        items = ds.get(groups) or []
        if index < len(items):
            for element in items[index]:
                for item in element.value if element.VR == "SQ" else []:
                    if keyword in item:
                        return item[keyword].value
    return None


def _first(value: Any) -> float:
    """The first of a multi-valued attribute (WindowCenter may hold several)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0]
    return float(value)


def _modality(pixels: np.ndarray, ds: Any, frame: int) -> np.ndarray:
    """Stored values → modality values (e.g. HU): Modality LUT, else slope/intercept."""
    if ds.get("ModalityLUTSequence"):
        try:
            from pydicom.pixels import apply_modality_lut
        except ImportError:  # pydicom 2.4
            from pydicom.pixel_data_handlers.util import apply_modality_lut
        return apply_modality_lut(pixels, ds).astype(np.float64)
    slope = _frame_value(ds, frame, "RescaleSlope")
    intercept = _frame_value(ds, frame, "RescaleIntercept")
    values = pixels.astype(np.float64)
    if slope not in (None, ""):
        values *= _first(slope)
    if intercept not in (None, ""):
        values += _first(intercept)
    return values


def _dicom_window(
    values: np.ndarray, ds: Any, frame: int, bounds: tuple[float, float] | None
) -> np.ndarray:
    """0..255 from the given window, else the file's VOI LUT or window, else min–max."""
    if bounds is None and ds.get("VOILUTSequence"):
        try:
            from pydicom.pixels import apply_voi_lut
        except ImportError:  # pydicom 2.4
            from pydicom.pixel_data_handlers.util import apply_voi_lut
        lut = ds.VOILUTSequence[0]
        out = apply_voi_lut(np.rint(values).astype(np.int64), ds, prefer_lut=True)
        return linear_to_uint8(out, 0.0, float(2 ** int(lut.LUTDescriptor[2]) - 1))
    if bounds is None:
        centre = _frame_value(ds, frame, "WindowCenter")
        width = _frame_value(ds, frame, "WindowWidth")
        if centre not in (None, "") and width not in (None, "") and _first(width) > 0:
            bounds = window_bounds((_first(centre), _first(width)))
    if bounds is None:
        finite = values[np.isfinite(values)]
        bounds = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return linear_to_uint8(values, *bounds)


# ----------------------------------------------------------------------------- NIfTI


def _load_nifti(
    path: Path, window: Window | None, frame: int | None, slice_index: int | None, axis: int
) -> Image.Image:
    import nibabel as nib

    bounds = None if window is None else window_bounds(window, str(path))
    try:
        img = nib.load(path)
        shape = tuple(img.shape)
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, ...
        if isinstance(err, nib.filebasedimages.ImageFileError):
            raise ImageLoadError(
                f"{path} is not a NIfTI file ({err}). Check the file, or rename it if it "
                "is another format."
            ) from None
        raise ImageLoadError(
            f"NIfTI {path} could not be read ({type(err).__name__}: {err}); the file may be "
            "truncated or corrupt. Export or download it again."
        ) from None
    while len(shape) > 3 and shape[-1] == 1:  # (x, y, z, 1) is a 3-D volume
        shape = shape[:-1]
    if 0 in shape:
        raise ImageLoadError(
            f"NIfTI {path} has shape {tuple(img.shape)}, so it holds no voxels: check the "
            "file, or export it again."
        )
    if len(shape) == 2:
        _reject(
            path, "nifti", frame=frame, slice_index=slice_index, axis=None if axis == 2 else axis
        )
        index: tuple[Any, ...] = (slice(None), slice(None))
        plane = shape
    elif len(shape) in (3, 4):
        if axis not in (0, 1, 2):
            raise ImageLoadError(f"axis={axis!r} for {path}: use 0, 1 or 2.")
        if len(shape) == 3:
            _reject(path, "a 3-D NIfTI volume", frame=frame)
        n_volumes = shape[3] if len(shape) == 4 else 1
        frame = 0 if frame is None else frame
        if not 0 <= frame < n_volumes:
            raise ImageLoadError(
                f"frame={frame} is out of range for {path}, which has {n_volumes} volumes: "
                f"use 0..{n_volumes - 1}."
            )
        img = _canonical(img)
        shape = tuple(img.shape)
        n_slices = shape[axis]
        slice_index = n_slices // 2 if slice_index is None else slice_index
        if not 0 <= slice_index < n_slices:
            raise ImageLoadError(
                f"slice_index={slice_index} is out of range for {path}, which has {n_slices} "
                f"slices along axis {axis}: use 0..{n_slices - 1}."
            )
        spatial: list[Any] = [slice(None)] * 3
        spatial[axis] = slice_index
        index = (*spatial, frame) if len(shape) > 3 else tuple(spatial)
        plane = tuple(n for i, n in enumerate(shape[:3]) if i != axis)
    else:
        raise ImageLoadError(
            f"NIfTI {path} has shape {img.shape}; only 2-D, 3-D and 4-D images are supported. "
            "Pass one slice as a numpy array instead (read it with nibabel: "
            "nib.load(path).dataobj[...])."
        )
    _too_large(path, *plane)
    index = index + (0,) * (len(img.shape) - len(index))  # trailing dimensions of size 1
    try:
        data = np.asarray(img.dataobj[index], dtype=np.float64)
    except Exception as err:  # truncated or corrupt data
        raise ImageLoadError(
            f"NIfTI {path} could not be read ({type(err).__name__}: {err}); the file may be "
            "truncated or corrupt. Export or download it again."
        ) from None
    data = np.rot90(data)  # (x, y) array → rows run top-down, so the slice is upright
    return array_to_image(linear_to_uint8(data, *(bounds or _robust_bounds(data))), name=str(path))


def _canonical(img: Any) -> Any:
    """The image in the closest RAS+ orientation (unchanged if it already is, or if unknown)."""
    import nibabel as nib

    try:
        return nib.as_closest_canonical(img)
    except Exception:  # a broken affine: keep the stored orientation
        return img


def _robust_bounds(data: np.ndarray) -> tuple[float, float]:
    """The 0.5 and 99.5 percentiles of the finite values (min–max if they coincide).

    Example:
        >>> data = np.r_[np.arange(1000.0), 1e9]
        >>> [round(v) for v in _robust_bounds(data)]
        [5, 995]
    """
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 0.0
    lo, hi = (float(v) for v in np.percentile(finite, NIFTI_PERCENTILES))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    return lo, hi


__all__ = ["WINDOWS", "load_image", "window_bounds"]
