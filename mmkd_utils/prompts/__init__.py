"""Prompts: checking prompt text, and the prompt banks of zero-shot tasks per modality.

:func:`check_prompts` is introduced in ``notebooks/01_quickstart.ipynb``; the banks
(:mod:`mmkd_utils.prompts.banks`, YAML files of classes, synonyms and templates for nine
imaging modalities) in ``notebooks/03_zero_shot_by_modality.ipynb``.

Example:
    >>> from mmkd_utils.prompts import check_prompts, get_task
    >>> check_prompts("A chest X-ray."), get_task("chexpert_5x200").name
    (['A chest X-ray.'], 'chest_xray/chexpert_5x200')
"""

from mmkd_utils.errors import BankError, PromptError
from mmkd_utils.prompts.banks import (
    MODALITY_TASK,
    MODALITY_TEMPLATES,
    Task,
    get_task,
    list_modalities,
    list_tasks,
    load_bank,
    modality_task,
)
from mmkd_utils.prompts.text import check_prompts, check_templates, class_prompts, normalize_classes

__all__ = [
    "MODALITY_TASK",
    "MODALITY_TEMPLATES",
    "BankError",
    "PromptError",
    "Task",
    "check_prompts",
    "check_templates",
    "class_prompts",
    "get_task",
    "list_modalities",
    "list_tasks",
    "load_bank",
    "modality_task",
    "normalize_classes",
]
