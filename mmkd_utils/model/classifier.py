"""Zero-shot classifiers: one weight vector per class, averaged over prompt templates.

A class such as "pleural effusion" can be described by many prompts ("A chest X-ray
showing pleural effusion.", "Radiograph with pleural effusion.", ...). Prompt
*ensembling* embeds every template (and synonym) of a class, L2-normalises each
embedding, averages them and normalises again: the result is the class's weight vector.
Zero-shot probabilities are then softmax(exp(logit_scale) · image · weightsᵀ).

Introduced in ``notebooks/03_zero_shot_by_modality.ipynb``.

Example:
    >>> clf = clip.classifier(["pneumonia", "normal lungs"],
    ...                       templates=["A chest X-ray showing {}.", "{} on a radiograph."])
    ... # doctest: +SKIP
    >>> clip.zero_shot(["xray.png"], clf).shape  # doctest: +SKIP
    torch.Size([1, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmkd_utils.errors import PromptError
from mmkd_utils.prompts import check_prompts


@dataclass(frozen=True)
class ZeroShotClassifier:
    """Class names, the prompts behind each class and the class weight vectors [C, D].

    Example:
        >>> clf.class_names  # doctest: +SKIP
        ('pneumonia', 'normal lungs')
    """

    class_names: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]
    weights: torch.Tensor
    name: str | None = None

    def __len__(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        n_prompts = sum(len(p) for p in self.prompts)
        label = f"{self.name!r}, " if self.name else ""
        return (
            f"ZeroShotClassifier({label}{len(self)} classes, {n_prompts} prompts, "
            f"dim={self.weights.shape[1]})"
        )


def normalize_classes(
    classes: Sequence[str] | Mapping[str, Sequence[str]],
) -> dict[str, tuple[str, ...]]:
    """Return ``{class name: (name, synonym, ...)}`` from a list or a mapping of synonyms.

    Example:
        >>> normalize_classes(["edema"])
        {'edema': ('edema',)}
        >>> normalize_classes({"edema": ["pulmonary edema"]})
        {'edema': ('edema', 'pulmonary edema')}
    """
    if isinstance(classes, str):
        raise PromptError(
            f"classes={classes!r} is one string; pass a list of class names, a mapping "
            "{class: [synonyms]}, or a task name to model.classifier(...)."
        )
    if isinstance(classes, Mapping):
        items = [(name, list(syn or [])) for name, syn in classes.items()]
    else:
        items = [(name, []) for name in check_prompts(list(classes), name="class_names")]
    out: dict[str, tuple[str, ...]] = {}
    for name, synonyms in items:
        names = check_prompts([name, *synonyms], name=f"class {name!r}")
        if name in out:
            raise PromptError(f"class name {name!r} appears twice; class names must be unique.")
        out[name] = tuple(dict.fromkeys(names))  # the name first, duplicates dropped
    if not out:
        raise PromptError("no classes given: pass at least one class name.")
    return out


def class_prompts(names: Iterable[str], templates: Sequence[str]) -> tuple[str, ...]:
    """Every template filled with every name of one class (``{}`` marks the name).

    Example:
        >>> class_prompts(["edema"], ["A chest X-ray showing {}.", "{}"])
        ('A chest X-ray showing edema.', 'edema')
    """
    return tuple(t.replace("{}", n) for n in names for t in templates)


def check_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    """Validate templates: each must contain ``{}`` once; None means the name itself.

    Example:
        >>> check_templates(None)
        ('{}',)
    """
    if templates is None:
        return ("{}",)
    items = check_prompts(templates, name="templates")
    for i, template in enumerate(items):
        if template.count("{}") != 1:
            raise PromptError(
                f"templates[{i}] = {template!r} must contain '{{}}' exactly once, where the "
                "class name goes, e.g. 'A chest X-ray showing {}.'"
            )
    return tuple(items)


def build_classifier(
    encode_texts: Callable[[list[str]], torch.Tensor],
    classes: Sequence[str] | Mapping[str, Sequence[str]],
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ZeroShotClassifier:
    """Build class weights: mean of the normalised prompt embeddings, normalised again.

    ``encode_texts`` maps a list of prompts to L2-normalised embeddings [P, D] (for
    example ``MMKDModel.encode_texts``). All prompts are embedded in one call.

    Example:
        >>> clf = build_classifier(clip.encode_texts, ["a", "b"], ["{} image"])
        ... # doctest: +SKIP
    """
    synonyms = normalize_classes(classes)
    temps = check_templates(templates)
    prompts = tuple(class_prompts(names, temps) for names in synonyms.values())
    flat = [p for group in prompts for p in group]
    embeddings = F.normalize(encode_texts(flat).float(), dim=-1)
    weights, start = [], 0
    for group in prompts:
        weights.append(embeddings[start : start + len(group)].mean(dim=0))
        start += len(group)
    return ZeroShotClassifier(
        class_names=tuple(synonyms),
        prompts=prompts,
        weights=F.normalize(torch.stack(weights), dim=-1),
        name=name,
    )
