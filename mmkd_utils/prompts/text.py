"""Prompt text: prompt lists, classes with their synonyms, and templates (``{}`` marks where
a class name goes); :mod:`mmkd_utils.model.classifier` averages the embeddings of a class."""

from collections.abc import Iterable, Mapping, Sequence

from mmkd_utils.errors import PromptError


def check_prompts(prompts: str | Iterable[str], name: str = "prompts") -> list[str]:
    """``prompts`` as a list of str (one string is one prompt); unusable input raises PromptError.

    Example:
        >>> check_prompts(["a", "  "])
        Traceback (most recent call last):
        ...
        mmkd_utils.errors.PromptError: prompts[1] is empty or only whitespace...
    """
    try:
        items = [prompts] if isinstance(prompts, str) else list(prompts)
    except TypeError:
        kind = type(prompts).__name__
        raise PromptError(f"{name} must be a string or a list of strings, not {kind}.") from None
    if not items:
        raise PromptError(f"{name} is empty: pass at least one prompt, e.g. ['A chest X-ray.'].")
    for i, text in enumerate(items):
        if not isinstance(text, str):
            kind = type(text).__name__
            raise PromptError(f"{name}[{i}] is a {kind} ({text!r}): pass the prompts as text.")
        if not text.strip():
            raise PromptError(f"{name}[{i}] is empty or only whitespace; remove it or write one.")
    return items


def normalize_classes(
    classes: Sequence[str] | Mapping[str, Sequence[str]],
) -> dict[str, tuple[str, ...]]:
    """``{class name: (name, synonym, ...)}`` from a list of names or a mapping of synonyms.

    Example:
        >>> normalize_classes({"edema": ["pulmonary edema"], "normal": None})
        {'edema': ('edema', 'pulmonary edema'), 'normal': ('normal',)}
    """
    if isinstance(classes, str):
        how = "a list of class names, a mapping {class: [synonyms]} or a task name"
        raise PromptError(f"classes={classes!r} is one string; pass {how}.")
    names = check_prompts(classes, name="class_names")  # of a mapping: its keys
    if len(set(names)) < len(names):
        raise PromptError(f"a class name appears twice in {names!r}; remove one of them.")
    synonyms = classes if isinstance(classes, Mapping) else {}
    out = {n: check_prompts([n, *(synonyms.get(n) or [])], name=f"class {n!r}") for n in names}
    return {n: tuple(dict.fromkeys(all_names)) for n, all_names in out.items()}  # no duplicates


def check_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    """The templates as a tuple, each with ``{}`` exactly once; None means the name alone.

    Example:
        >>> check_templates(None), check_templates(["A chest X-ray showing {}."])
        (('{}',), ('A chest X-ray showing {}.',))
    """
    items = ["{}"] if templates is None else check_prompts(templates, name="templates")
    for i, template in enumerate(items):
        if template.count("{}") != 1:
            where = "where the class name goes, e.g. 'A chest X-ray showing {}.'"
            raise PromptError(f"templates[{i}] = {template!r}: put '{{}}' exactly once, {where}")
    return tuple(items)


def class_prompts(names: Iterable[str], templates: Sequence[str]) -> tuple[str, ...]:
    """Every template filled with every name of one class.

    Example:
        >>> class_prompts(["edema", "oedema"], ["A chest X-ray showing {}."])
        ('A chest X-ray showing edema.', 'A chest X-ray showing oedema.')
    """
    return tuple(t.replace("{}", n) for n in names for t in templates)
