"""Layer 2: reading checkpoints, the registry of loadable models, and :class:`MMKDModel`."""

from mmkd_utils.model.clip import MMKDModel
from mmkd_utils.model.registry import list_models, load_model

__all__ = ["MMKDModel", "list_models", "load_model"]
