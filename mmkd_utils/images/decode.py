"""``to_rgb``: any image the package accepts (a path, PIL image or numpy array) as RGB."""

from __future__ import annotations

import os
from typing import Union

import numpy as np
from PIL import Image

from mmkd_utils.errors import ImageLoadError
from mmkd_utils.images.medical import load_image
from mmkd_utils.images.pixels import array_to_image, pil_to_rgb

#: What the package accepts as one image (``bytes`` is a file name, as ``os.fsencode`` gives).
ImageInput = Union[str, bytes, os.PathLike, Image.Image, np.ndarray]  # noqa: UP007 (runtime alias)


def to_rgb(image: ImageInput) -> Image.Image:
    """``image`` as an 8-bit RGB PIL image: files through :func:`load_image` (so DICOM and
    NIfTI too), arrays and 16-bit or float images rescaled to 0..255, alpha dropped.

    Example:
        >>> to_rgb(Image.new("I;16", (8, 8), 4000)).mode, to_rgb(xray).size
        ('RGB', (482, 512))
    """
    if isinstance(image, (str, bytes, os.PathLike)):
        return load_image(image)
    if isinstance(image, np.ndarray):
        return array_to_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    kind = type(image).__name__
    raise ImageLoadError(f"Cannot use type {kind} as an image: pass a path, PIL image or array.")
