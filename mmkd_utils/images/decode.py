"""Turning paths, PIL images and numpy arrays into 8-bit RGB images for the model.

Medical images are often 16-bit or floating point. A plain ``convert("RGB")`` clips
such values at 255 and gives an almost white picture; :func:`to_rgb` rescales them to
the full 8-bit range instead.

Introduced in ``notebooks/01_quickstart.ipynb``.

Example:
    >>> import numpy as np
    >>> from mmkd_utils.images.decode import to_rgb
    >>> img = to_rgb(np.arange(0, 4096, dtype=np.uint16).reshape(64, 64))
    >>> img.mode, img.getextrema()[0]
    ('RGB', (0, 255))
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmkd_utils.errors import ImageLoadError

#: What the package accepts as one image (``bytes`` is a file name, as ``os.fsencode`` gives).
ImageInput = Union[str, bytes, os.PathLike, Image.Image, np.ndarray]  # noqa: UP007 (runtime alias)

# Modes whose values do not fit in 8 bits: rescaled to 0..255 from their own range.
_HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;32", "I;32B", "I;32L"}


def check_file(path: str | bytes | os.PathLike) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path`; raise if it is missing, a folder or empty.

    ``bytes`` names (any bytes a Linux file name may hold) are decoded as ``os.fsdecode``
    does, so a file whose name is not valid UTF-8 can still be opened.

    Example:
        >>> check_file("imgs/does_not_exist.png")
        Traceback (most recent call last):
        ...
        mmkd_utils.errors.ImageLoadError: Image imgs/does_not_exist.png does not exist...
    """
    path = Path(os.fsdecode(path))
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageLoadError(
            f"Image {path} does not exist: check the file name and folder."
        ) from None
    except OSError as err:  # name too long, permission denied on a folder, I/O error
        raise ImageLoadError(
            f"Image {path} cannot be opened ({err.strerror or err}): check the file name "
            "and folder (most file systems allow at most 255 bytes per name)."
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError(
            f"Image {path} is a folder, not an image file: pass the files in it (or use "
            "embed_folder for a whole folder)."
        )
    if st.st_size == 0:
        raise ImageLoadError(
            f"Image {path} is empty (0 bytes): the copy or download did not finish. "
            "Download or export it again."
        )
    return path


def too_large_error(path: str | os.PathLike, detail: str) -> ImageLoadError:
    """The error for an image above Pillow's decompression-bomb limit (also used for DICOM).

    Example:
        >>> str(too_large_error("huge.png", "1000000000 pixels"))[:40]
        "Image huge.png is larger than Pillow's s"
    """
    return ImageLoadError(
        f"Image {path} is larger than Pillow's safety limit ({detail}). If you trust the "
        "file, raise PIL.Image.MAX_IMAGE_PIXELS or downscale it first."
    )


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file with Pillow and decode it now, with a clear error if it fails.

    Example:
        >>> open_image("imgs/does_not_exist.png")
        Traceback (most recent call last):
        ...
        mmkd_utils.errors.ImageLoadError: Image imgs/does_not_exist.png does not exist...
    """
    path = check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            try:
                img.load()  # decodes now; Pillow then closes a single-frame file itself
                if getattr(img, "n_frames", 1) > 1:  # keep the first frame, close the file
                    first = img.copy()
                    img.close()
                    img = first
            except BaseException:
                img.close()
                raise
            return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise too_large_error(path, str(err)) from None
    except UnidentifiedImageError:
        raise ImageLoadError(
            f"Image {path} is not an image Pillow can read (wrong extension, or a text or "
            "other file?). Convert it to PNG or JPEG."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageLoadError(
            f"Image {path} could not be decoded ({err}); the file may be truncated or "
            "corrupt. Download or export it again."
        ) from None
    except MemoryError:
        raise ImageLoadError(
            f"Image {path} is too large to decode in the memory available: downscale it "
            "first, or free memory and try again."
        ) from None
    except Exception as err:  # Pillow's plugins raise many types for malformed files
        raise ImageLoadError(
            f"Image {path} could not be decoded ({type(err).__name__}: {err}); the file "
            "is probably corrupt. Download or export it again, or convert it to PNG."
        ) from None


def linear_to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``lo..hi`` linearly onto 0..255, clipping outside (a display window).

    Non-finite values become 0; if ``hi <= lo`` everything becomes 0. Ranges wider than
    float64 can hold (``hi - lo`` overflows, e.g. -1e308..1e308) work too.

    Example:
        >>> linear_to_uint8(np.array([-1.0, 0.0, 5.0, 10.0, 99.0]), 0.0, 10.0).tolist()
        [0, 0, 128, 255, 255]
    """
    data = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(data)
    if not hi > lo:
        return np.zeros(data.shape, dtype=np.uint8)
    clean = np.where(finite, data, lo)
    with np.errstate(over="ignore"):  # far outside the window: ±inf, clipped below
        if np.isfinite(hi - lo):
            out = (clean - lo) * (255.0 / (hi - lo))
        else:  # halving is exact, and the halves' difference cannot overflow
            out = (clean / 2 - lo / 2) * (255.0 / (hi / 2 - lo / 2))
    out = np.where(finite, out, 0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _rescale_to_uint8(values: np.ndarray, name: str) -> np.ndarray:
    """Map the finite range of ``values`` linearly onto 0..255 (non-finite values become 0)."""
    data = values.astype(np.float64, copy=False)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    return linear_to_uint8(data, float(data[finite].min()), float(data[finite].max()))


def array_to_image(array: np.ndarray, name: str = "array") -> Image.Image:
    """Convert an H×W, H×W×1, H×W×3 or H×W×4 array of any numeric dtype to an RGB image.

    uint8 values are used as they are; other dtypes are rescaled from their own
    minimum and maximum to 0..255 (never clipped at 255). An alpha channel is dropped.

    Example:
        >>> import numpy as np
        >>> array_to_image(np.zeros((4, 5), dtype=np.float32)).size
        (5, 4)
    """
    arr = np.asarray(array)
    if arr.size == 0:
        raise ImageLoadError(f"{name} is empty (shape {arr.shape}); pass a non-empty image.")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        hint = (
            " It looks channels-first: use np.moveaxis(array, 0, -1)."
            if arr.shape[0] in (1, 3, 4)
            else ""
        )
        raise ImageLoadError(f"{name} has shape {arr.shape}; expected H×W, H×W×3 or H×W×4.{hint}")
    if arr.ndim not in (2, 3):
        raise ImageLoadError(
            f"{name} has {arr.ndim} dimensions (shape {arr.shape}); pass one 2-D image "
            "(for a volume, choose a slice first)."
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ImageLoadError(f"{name} has dtype {arr.dtype}; pass a real-valued numeric array.")
    elif arr.dtype != np.uint8:
        colour = arr[..., :3] if arr.ndim == 3 else arr
        arr = _rescale_to_uint8(colour, name)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    img = Image.fromarray(np.ascontiguousarray(arr))
    return img.convert("RGB")


def to_rgb(image: ImageInput) -> Image.Image:
    """Return ``image`` (a path, PIL image or numpy array) as an 8-bit RGB PIL image.

    Modes L, LA, P, RGB, RGBA, CMYK and the like are converted by Pillow (alpha is
    dropped, as in the published demo); I;16, I and F images are rescaled to the full
    8-bit range. Paths go through :func:`mmkd_utils.images.medical.load_image` with its default
    arguments, so DICOM and NIfTI files work too.

    Example:
        >>> from PIL import Image
        >>> to_rgb(Image.new("I;16", (8, 8), 4000)).mode
        'RGB'
    """
    if isinstance(image, (str, bytes, os.PathLike)):
        from mmkd_utils.images.medical import (
            load_image,  # here, not at the top: medical imports this module
        )

        return load_image(image)
    if isinstance(image, np.ndarray):
        return array_to_image(image, name="array")
    if not isinstance(image, Image.Image):
        raise ImageLoadError(
            f"Cannot use an object of type {type(image).__name__} as an image; pass a file "
            "path, a PIL image or a numpy array."
        )
    return pil_to_rgb(image, name="image")


def pil_to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Convert a PIL image to RGB as :func:`to_rgb` does; ``name`` is used in error messages.

    Example:
        >>> from PIL import Image
        >>> pil_to_rgb(Image.new("L", (3, 2)), name="scan.png").size
        (3, 2)
    """
    if image.width == 0 or image.height == 0:
        raise ImageLoadError(
            f"{name} has size {image.size}; it holds no pixels: pass a non-empty image."
        )
    try:
        if image.mode == "RGB":
            image.load()  # a lazily opened image decodes here, not in the model's transform
            return image
        if image.mode in _HIGH_DEPTH_MODES:
            return array_to_image(np.asarray(image), name=name)
        return image.convert("RGB")
    except ImageLoadError:
        raise
    except Exception as err:  # decoding a lazily opened file, or an exotic mode
        raise ImageLoadError(
            f"{name} is in PIL mode {image.mode!r}, which could not be converted to RGB "
            f"({type(err).__name__}: {err}). Convert it to RGB yourself first."
        ) from None
