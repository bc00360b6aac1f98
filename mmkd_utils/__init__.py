"""Helpers for the MMKD-CLIP notebook tutorials: load the model, embed, classify, plot.

The layers of the package and the path of one zero-shot call are in ARCHITECTURE.md.
Importing it changes no global state; the tasks (and scikit-learn) load on first use.

Example:
    >>> import mmkd_utils
    >>> model = mmkd_utils.load_model(tiny_checkpoint, text_encoder=tiny_text_encoder)
    >>> model.zero_shot([xray], ["A chest X-ray.", "A brain MRI."]).shape
    torch.Size([1, 2])
"""

import importlib
from typing import TYPE_CHECKING, Any

from mmkd_utils.doctor import doctor
from mmkd_utils.errors import (
    ArgumentError,
    ArgumentTypeError,
    BankError,
    CheckpointError,
    DatasetNotFoundError,
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
from mmkd_utils.images import load_image, to_rgb
from mmkd_utils.model import MMKDModel, list_models, load_model

if TYPE_CHECKING:  # for editors and type checkers; at run time see __getattr__ below
    from mmkd_utils.tasks.compare import compare_models
    from mmkd_utils.tasks.embeddings import FolderEmbeddings, embed_folder
    from mmkd_utils.tasks.evaluation import evaluate_folder
    from mmkd_utils.tasks.probe import linear_probe
    from mmkd_utils.tasks.retrieval import search

#: Names of layer 3 (tasks), imported on first use: the module each comes from.
_TASKS = {
    "compare_models": "compare",
    "FolderEmbeddings": "embeddings",
    "embed_folder": "embeddings",
    "evaluate_folder": "evaluation",
    "linear_probe": "probe",
    "search": "retrieval",
}


def __getattr__(name: str) -> Any:
    """``mmkd_utils.embed_folder`` and the other task names, imported when first used."""
    if name not in _TASKS:
        raise AttributeError(f"module 'mmkd_utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mmkd_utils.tasks.{_TASKS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_TASKS})


__version__ = "0.1.0"

#: The names a notebook imports: the model, images, doctor and tasks, then every error type.
__all__ = ["MMKDModel", "doctor", "list_models", "load_image", "load_model", "search", "to_rgb"]
__all__ += ["FolderEmbeddings", "compare_models", "embed_folder", "evaluate_folder", "linear_probe"]
__all__ += ["MMKDError", "ArgumentError", "ArgumentTypeError", "TextEncoderError"]
__all__ += ["CheckpointError", "DownloadError", "EvaluationError", "ImageLoadError", "ProbeError"]
__all__ += ["MissingDependencyError", "PrecisionFallbackWarning", "PromptError", "RetrievalError"]
__all__ += ["BankError", "SamplesNotFoundError", "SkippedImagesWarning", "UnknownModalityError"]
__all__ += ["DatasetNotFoundError"]
