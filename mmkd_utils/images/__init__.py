"""Reading images (PNG, JPEG, 16-bit, DICOM, NIfTI) and turning them into RGB."""

from mmkd_utils.images.decode import ImageInput, to_rgb
from mmkd_utils.images.medical import WINDOWS, load_image, window_bounds

__all__ = ["WINDOWS", "ImageInput", "load_image", "to_rgb", "window_bounds"]
