"""Prompts: checking prompt lists, and the prompt banks of zero-shot tasks per modality.

:func:`check_prompts` (introduced in ``notebooks/01_quickstart.ipynb``) checks prompt
lists before they reach the tokenizer. The prompt banks (:mod:`mmkd_utils.prompts.banks`,
introduced in ``notebooks/03_zero_shot_by_modality.ipynb``) hold classes, synonyms and
templates of benchmark tasks for nine imaging modalities, as YAML files in this package.

Example:
    >>> from mmkd_utils.prompts import check_prompts, get_task
    >>> check_prompts("A chest X-ray.")
    ['A chest X-ray.']
    >>> get_task("chexpert_5x200").name
    'chest_xray/chexpert_5x200'
"""

from __future__ import annotations

from collections.abc import Iterable

from mmkd_utils.errors import PromptError
from mmkd_utils.prompts.banks import (
    MODALITY_TASK,
    MODALITY_TEMPLATES,
    BankError,
    Task,
    get_task,
    list_modalities,
    list_tasks,
    load_bank,
    modality_task,
)


def check_prompts(prompts: str | Iterable[str], name: str = "prompts") -> list[str]:
    """Return ``prompts`` as a list of str, raising :class:`PromptError` for unusable input.

    One string is one prompt. An empty list, a non-string entry, or an empty or
    whitespace-only prompt is an error that names its position.

    Example:
        >>> check_prompts(["a", "  "])
        Traceback (most recent call last):
        ...
        mmkd_utils.errors.PromptError: prompts[1] is empty or only whitespace...
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    try:
        items = list(prompts)
    except TypeError:
        raise PromptError(
            f"{name} must be a string or a list of strings, not {type(prompts).__name__}."
        ) from None
    if not items:
        raise PromptError(f"{name} is empty: pass at least one prompt, e.g. ['A chest X-ray.'].")
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise PromptError(
                f"{name}[{i}] is a {type(text).__name__} ({text!r}), not a string: pass the "
                "prompts as text."
            )
        if not text.strip():
            raise PromptError(
                f"{name}[{i}] is empty or only whitespace; remove it or write a prompt."
            )
    return items


__all__ = [
    "MODALITY_TASK",
    "MODALITY_TEMPLATES",
    "BankError",
    "Task",
    "check_prompts",
    "get_task",
    "list_modalities",
    "list_tasks",
    "load_bank",
    "modality_task",
]
