"""Zero-shot classifiers: prompt ensembling, caching and use in zero_shot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import TINY

from mmkd_utils import PromptError
from mmkd_utils.model.classifier import ZeroShotClassifier
from mmkd_utils.prompts.text import check_templates, normalize_classes

IMAGES = [TINY / "images" / "rgb_noise.png", TINY / "images" / "tall_rgb.jpg"]
TEMPLATES = ["A chest X-ray showing {}.", "{} on a radiograph.", "Findings: {}."]


def test_ensemble_is_the_normalised_mean_of_normalised_prompt_embeddings(tiny_model):
    classes = {"edema": ["pulmonary edema"], "pneumonia": []}
    clf = tiny_model.classifier(classes, TEMPLATES)
    assert clf.class_names == ("edema", "pneumonia")
    assert len(clf.prompts[0]) == 6 and len(clf.prompts[1]) == 3
    assert clf.prompts[0][3] == "A chest X-ray showing pulmonary edema."
    for row, prompts in enumerate(clf.prompts):
        emb = tiny_model.encode_texts(list(prompts))  # each row already unit length
        expected = F.normalize(emb.mean(dim=0), dim=0)
        assert torch.allclose(clf.weights[row], expected, atol=1e-6)
    assert torch.allclose(clf.weights.norm(dim=-1), torch.ones(2), atol=1e-6)


def test_without_templates_a_classifier_equals_plain_prompts(tiny_model):
    prompts = ["A chest X-ray.", "A fundus photograph.", "An MRI."]
    clf = tiny_model.classifier(prompts)
    assert torch.allclose(
        tiny_model.zero_shot(IMAGES, clf), tiny_model.zero_shot(IMAGES, prompts), atol=1e-6
    )


def test_zero_shot_with_a_classifier(tiny_model):
    clf = tiny_model.classifier(["a", "b", "c"], TEMPLATES)
    probs = tiny_model.zero_shot(IMAGES, clf)
    assert probs.shape == (2, 3)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2), atol=1e-6)
    images = tiny_model.encode_images(IMAGES)
    expected = (tiny_model.logit_scale * images @ clf.weights.T).softmax(dim=-1)
    assert torch.allclose(probs, expected, atol=1e-6)


def test_classifiers_are_cached_per_model(tiny_model, monkeypatch):
    first = tiny_model.classifier(["x", "y"], TEMPLATES)
    calls = []
    monkeypatch.setattr(tiny_model, "encode_texts", lambda *a, **k: calls.append(a))
    assert tiny_model.classifier(["x", "y"], TEMPLATES) is first
    assert not calls


def test_classifier_of_another_dimension_is_refused(tiny_model):
    clf = ZeroShotClassifier(("a",), (("a",),), torch.ones(1, 7))
    with pytest.raises(PromptError, match="7-d weights"):
        tiny_model.zero_shot(IMAGES, clf)


@pytest.mark.parametrize(
    ("templates", "message"),
    [(["no placeholder"], "exactly once"), (["{} and {}"], "exactly once"), ([], "empty")],
)
def test_bad_templates(templates, message):
    with pytest.raises(PromptError, match=message):
        check_templates(templates)


def test_bad_classes():
    with pytest.raises(PromptError, match="one string"):
        normalize_classes("edema")
    with pytest.raises(PromptError, match="empty"):
        normalize_classes([])
    with pytest.raises(PromptError, match="empty or only whitespace"):
        normalize_classes(["ok", " "])
    assert normalize_classes({"a": ["a", "b", "b"]}) == {"a": ("a", "b")}
