"""Numpy arrays and PIL images as 8-bit RGB, and ordinary image files opened with Pillow."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmkd_utils.errors import ImageLoadError

TOO_LARGE = (
    "Image {} is larger than Pillow's safety limit ({}). If you trust the file, raise "
    "PIL.Image.MAX_IMAGE_PIXELS or downscale it first."
)


def check_file(path: str | bytes | os.PathLike) -> Path:
    """``path`` as a Path (bytes as ``os.fsdecode`` gives); refuse a missing, folder or empty one.

    Example:
        >>> check_file(xray).name
        'xray_chest_pa.png'
    """
    path = Path(os.fsdecode(path))
    try:
        st = path.stat()
    except OSError as err:  # missing, name too long, permission denied, I/O error
        why = "does not exist" if isinstance(err, FileNotFoundError) else f"cannot be read ({err})"
        raise ImageLoadError(f"Image {path} {why}: check the file name and folder.") from None
    if path.is_dir():
        raise ImageLoadError(f"Image {path} is a folder: pass the image files in it instead.")
    if st.st_size == 0:
        raise ImageLoadError(f"Image {path} is empty (0 bytes): download or export it again.")
    return path


def check_pixel_count(path: str | os.PathLike, width: int, height: int) -> None:
    """Refuse an image above Pillow's decompression-bomb limit, ``PIL.Image.MAX_IMAGE_PIXELS``.

    Example:
        >>> check_pixel_count("scan.dcm", 512, 512)  # fine: returns None
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise ImageLoadError(TOO_LARGE.format(path, f"{width}x{height} pixels > {limit}"))


def open_image(path: str | bytes | os.PathLike) -> Image.Image:
    """Open an image file with Pillow and decode it (its first frame) now, or raise clearly.

    Example:
        >>> open_image(xray).mode
        'RGB'
    """
    path = check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # above the limit
            with Image.open(path) as img:
                img.load()
                return img.copy() if getattr(img, "n_frames", 1) > 1 else img
    except MemoryError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageLoadError(TOO_LARGE.format(path, err)) from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path} is not an image Pillow reads: convert it to PNG.") from None
    except Exception as err:  # Pillow's plugins raise many types for malformed files
        raise ImageLoadError(
            f"Image {path} could not be decoded ({type(err).__name__}: {err}); it may be "
            "truncated or corrupt: download or export it again."
        ) from None


def linear_to_uint8(
    values: np.ndarray, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """Map ``lo..hi`` (default: the finite minimum..maximum) linearly onto 0..255 and clip
    outside, as a display window does. NaN becomes 0, and everything does if ``hi <= lo``.

    Example:
        >>> linear_to_uint8(np.array([-1.0, 0.0, 5.0, 10.0, 99.0]), 0.0, 10.0).tolist()
        [0, 0, 128, 255, 255]
    """
    data = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(data)
    if lo is None or hi is None:
        lo, hi = (data[finite].min(), data[finite].max()) if finite.any() else (0.0, 0.0)
    if not hi > lo:
        return np.zeros(data.shape, dtype=np.uint8)
    clean = np.where(finite, data, lo)
    with np.errstate(over="ignore"):  # far outside the window: ±inf, clipped below
        if np.isfinite(hi - lo):
            out = (clean - lo) * (255.0 / (hi - lo))
        else:  # e.g. -1e308..1e308: halving is exact, and the halves' difference is finite
            out = (clean / 2 - lo / 2) * (255.0 / (hi / 2 - lo / 2))
    return np.clip(np.rint(np.where(finite, out, 0.0)), 0, 255).astype(np.uint8)


def array_to_image(array: np.ndarray, name: str = "array") -> Image.Image:
    """An H×W, H×W×1, H×W×3 or H×W×4 array as RGB: uint8 as it is, other dtypes rescaled
    from their own minimum and maximum to 0..255 (never clipped). Alpha is dropped.

    Example:
        >>> array_to_image(np.arange(4096, dtype=np.uint16).reshape(64, 64)).getextrema()[0]
        (0, 255)
    """
    arr = np.asarray(array)
    arr = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
    if arr.size == 0 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        hint = " If it is channels-first, use np.moveaxis(array, 0, -1)." * (arr.ndim == 3)
        raise ImageLoadError(
            f"{name} has shape {arr.shape} ({arr.ndim} dimensions); pass one non-empty 2-D "
            f"image: H×W, H×W×3 or H×W×4 (for a volume, choose a slice first).{hint}"
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ImageLoadError(f"{name} has dtype {arr.dtype}; pass a real-valued numeric array.")
    arr = arr[..., :3] if arr.ndim == 3 else arr  # alpha dropped, as in the published demo
    arr = arr if arr.dtype == np.uint8 else linear_to_uint8(arr)
    return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")


def pil_to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """A PIL image as RGB: modes I;16, I and F rescaled to 0..255, the others converted by Pillow.

    Example:
        >>> pil_to_rgb(Image.new("I;16", (3, 2), 4000)).mode
        'RGB'
    """
    if image.width == 0 or image.height == 0:
        raise ImageLoadError(f"{name} has size {image.size}, no pixels: pass a non-empty image.")
    try:
        if image.mode[0] in "IF":  # I, I;16, I;16B, ..., F: values beyond 8 bits
            return array_to_image(np.asarray(image), name=name)
        image.load()  # a lazily opened image decodes here, not in the model's transform
        return image if image.mode == "RGB" else image.convert("RGB")
    except ImageLoadError:
        raise
    except Exception as err:  # decoding a lazily opened file, or an exotic mode
        raise ImageLoadError(
            f"{name} (PIL mode {image.mode!r}) could not be converted to RGB ({err}): do it first."
        ) from None
