"""Helpers for the MMKD-CLIP notebook tutorials.

Importing the package changes no global state; the heavy libraries (open_clip,
transformers) are imported when a model is loaded.

Example:
    >>> import mmkd_utils
    >>> clip = mmkd_utils.load_model()  # doctest: +SKIP
"""

from .diagnostics import doctor
from .embeddings import FolderEmbeddings, embed_folder
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
from .probe import linear_probe
from .retrieval import search

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DownloadError",
    "FolderEmbeddings",
    "ImageLoadError",
    "MMKDError",
    "MMKDModel",
    "PromptError",
    "SkippedImagesWarning",
    "TextEncoderError",
    "doctor",
    "embed_folder",
    "evaluate_folder",
    "linear_probe",
    "load_image",
    "load_model",
    "search",
    "to_rgb",
]
