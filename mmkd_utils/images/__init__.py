"""Layer 1: reading images (PNG, JPEG, 16-bit, DICOM, NIfTI) and turning them into RGB.

``pixels`` (arrays, PIL images, Pillow files) < ``medical`` (``load_image``: DICOM, NIfTI,
else Pillow) < ``decode`` (``to_rgb``: paths, PIL images, arrays) < ``pipeline`` (batches).
"""

from mmkd_utils.images.decode import ImageInput, to_rgb
from mmkd_utils.images.medical import WINDOWS, load_image, window_bounds

__all__ = ["WINDOWS", "ImageInput", "load_image", "to_rgb", "window_bounds"]
