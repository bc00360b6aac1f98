"""Zero-shot classifiers: one weight vector per class, the normalised mean of the normalised
embeddings of its prompts (every template filled with every synonym)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmkd_utils.prompts.text import check_templates, class_prompts, normalize_classes


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
    weights = torch.stack([c.mean(dim=0) for c in embeddings.split([len(g) for g in prompts])])
    return ZeroShotClassifier(tuple(synonyms), prompts, F.normalize(weights, dim=-1), name)
