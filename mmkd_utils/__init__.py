"""Helpers for the MMKD-CLIP notebook tutorials: load the model, embed, classify, plot.

The layers of the package and the path of one zero-shot call are in ARCHITECTURE.md.
Importing the package changes no global state.

Example:
    >>> import mmkd_utils
    >>> model = mmkd_utils.load_model(tiny_checkpoint, text_encoder=tiny_text_encoder)
    >>> model.zero_shot([xray], ["A chest X-ray.", "A brain MRI."]).shape
    torch.Size([1, 2])
"""

from mmkd_utils.doctor import doctor
from mmkd_utils.errors import (
    ArgumentError,
    ArgumentTypeError,
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
    SkippedImagesWarning,
    TextEncoderError,
    UnknownModalityError,
)
from mmkd_utils.images.decode import to_rgb
from mmkd_utils.images.medical import load_image
from mmkd_utils.model.clip import MMKDModel
from mmkd_utils.model.registry import list_models, load_model
from mmkd_utils.tasks.compare import compare_models
from mmkd_utils.tasks.embeddings import FolderEmbeddings, embed_folder
from mmkd_utils.tasks.evaluation import evaluate_folder
from mmkd_utils.tasks.probe import linear_probe
from mmkd_utils.tasks.retrieval import search

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
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
