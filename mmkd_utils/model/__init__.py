"""Layer 2: reading checkpoints, the registry of loadable models, and :class:`MMKDModel`."""

from mmkd_utils.model.loading import MMKDModel, load_model
from mmkd_utils.model.registry import list_models

__all__ = ["MMKDModel", "list_models", "load_model"]
