"""Prompts: checking prompt text (:mod:`~mmkd_utils.prompts.text`, from notebook 01) and the
banks of zero-shot tasks per imaging modality (:mod:`~mmkd_utils.prompts.banks`, notebook 03).
"""

from mmkd_utils.errors import BankError
from mmkd_utils.prompts.banks import (
    MODALITY_TEMPLATES,
    Task,
    get_task,
    list_modalities,
    list_tasks,
    load_bank,
    modality_task,
)
from mmkd_utils.prompts.text import check_prompts

__all__ = ["BankError", "MODALITY_TEMPLATES", "Task", "check_prompts", "get_task", "list_tasks"]
__all__ += ["list_modalities", "load_bank", "modality_task"]
