"""Helpers for the MMKD-CLIP notebook tutorials.

Importing the package changes no global state; the heavy libraries (open_clip,
transformers) are imported when a model is loaded.

Example:
    >>> import mmkd_utils
    >>> clip = mmkd_utils.load_model()  # doctest: +SKIP
"""

from .compare import compare_models
from .diagnostics import doctor
from .embeddings import FolderEmbeddings, embed_folder
from .errors import (
    BankError,
    CheckpointError,
    DownloadError,
    EvaluationError,
    ImageLoadError,
    MissingDependencyError,
    MMKDError,
    PrecisionFallbackWarning,
    ProbeError,
    PromptError,
    RetrievalError,
    SamplesNotFoundError,
    SampleSourceError,
    SkippedImagesWarning,
    TextEncoderError,
    UnknownModalityError,
)
from .evaluation import evaluate_folder
from .images import to_rgb
from .loading import MMKDModel, load_model
from .medical import load_image
from .probe import linear_probe
from .registry import list_models
from .retrieval import search

__version__ = "0.1.0"

__all__ = [
    "BankError",
    "CheckpointError",
    "DownloadError",
    "EvaluationError",
    "FolderEmbeddings",
    "ImageLoadError",
    "MMKDError",
    "MMKDModel",
    "MissingDependencyError",
    "PrecisionFallbackWarning",
    "ProbeError",
    "PromptError",
    "RetrievalError",
    "SampleSourceError",
    "SamplesNotFoundError",
    "SkippedImagesWarning",
    "TextEncoderError",
    "UnknownModalityError",
    "compare_models",
    "doctor",
    "embed_folder",
    "evaluate_folder",
    "linear_probe",
    "list_models",
    "load_image",
    "load_model",
    "search",
    "to_rgb",
]
