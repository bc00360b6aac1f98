"""Zero-shot classifiers: one weight vector per class, averaged over prompt templates.

Each template (and synonym) of a class is embedded and L2-normalised; their mean,
normalised again, is the class's weight vector. Zero-shot probabilities are then
softmax(exp(logit_scale) · image · weightsᵀ).

Example:
    >>> clf = clip.classifier(["pneumonia", "normal lungs"], ["A chest X-ray showing {}."])
    >>> clip.zero_shot([xray], clf).shape
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
        >>> clip.classifier(["pneumonia", "normal"]).class_names
        ('pneumonia', 'normal')
    """

    class_names: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]
    weights: torch.Tensor
    name: str | None = None

    def __len__(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        n_prompts = sum(len(p) for p in self.prompts)
        return (
            f"ZeroShotClassifier({label}{len(self)} classes, {n_prompts} prompts, "
            f"dim={self.weights.shape[1]})"
        )


def normalize_classes(
    classes: Sequence[str] | Mapping[str, Sequence[str]],
) -> dict[str, tuple[str, ...]]:
    """``{class name: (name, synonym, ...)}`` from a list or a mapping of synonyms.

    Example:
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
    """Templates as a tuple, each with ``{}`` exactly once; None means the name itself.

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
    """Class weights: the mean of the normalised prompt embeddings, normalised again.

    Example:
        >>> build_classifier(clip.encode_texts, ["a", "b"], ["{} image", "an {}"])
        ZeroShotClassifier(2 classes, 4 prompts, dim=64)
    """
    synonyms = normalize_classes(classes)
    temps = check_templates(templates)
    prompts = tuple(class_prompts(names, temps) for names in synonyms.values())
    embeddings = F.normalize(encode_texts([p for group in prompts for p in group]).float(), dim=-1)
    weights = [chunk.mean(dim=0) for chunk in embeddings.split([len(g) for g in prompts])]
    return ZeroShotClassifier(
        class_names=tuple(synonyms),
        prompts=prompts,
        weights=F.normalize(torch.stack(weights), dim=-1),
        name=name,
    )
