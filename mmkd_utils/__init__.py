"""Helpers for the MMKD-CLIP notebook tutorials.

Importing the package changes no global state; the heavy libraries (open_clip,
transformers) are imported when a model is loaded.

Example:
    >>> import mmkd_utils
    >>> clip = mmkd_utils.load_model()  # doctest: +SKIP
"""

from .errors import (
    CheckpointError,
    DownloadError,
    ImageLoadError,
    MMKDError,
    PromptError,
    SkippedImagesWarning,
    TextEncoderError,
)
from .evaluation import evaluate_folder
from .images import to_rgb
from .loading import MMKDModel, load_model
from .medical import load_image

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DownloadError",
    "ImageLoadError",
    "MMKDError",
    "MMKDModel",
    "PromptError",
    "SkippedImagesWarning",
    "TextEncoderError",
    "evaluate_folder",
    "load_image",
    "load_model",
    "to_rgb",
]
