"""compare_models, model_columns and summarize_comparison (offline, tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import TINY, TINY_TEXT, unimed_bytes

import mmkd_utils.model.registry as registry
from mmkd_utils import compare_models, load_model
from mmkd_utils.errors import PromptError
from mmkd_utils.tasks.compare import model_columns, summarize_comparison

IMAGES = sorted((TINY / "images").iterdir())[:4]
PROMPTS = ["A chest X-ray.", "An MRI scan of the brain.", "A fundus photograph."]


@pytest.fixture(autouse=True)
def _no_registry_env(monkeypatch):
    for name in ("MMKD_UNIMED_CHECKPOINT", "MMKD_BIOMEDCLIP"):
        monkeypatch.delenv(name, raising=False)


class FixedModel:
    """A stand-in with given probabilities, to test top-1 and agreement exactly."""

    def __init__(self, probs):
        self.probs = torch.tensor(probs, dtype=torch.float32)

    def zero_shot(self, images, prompts):
        assert len(images) == self.probs.shape[0] and len(prompts) == self.probs.shape[1]
        return self.probs


# --------------------------------------------------------------------------- table


def test_table_holds_each_models_own_zero_shot(three_models):
    table = compare_models(three_models, IMAGES, PROMPTS)
    names = list(three_models)
    assert list(table.columns) == [
        "image",
        "prompt",
        *[f"p_{n}" for n in names],
        *[f"top1_{n}" for n in names],
        "agreement",
    ]
    assert len(table) == len(IMAGES) * len(PROMPTS)
    assert list(table["image"][:: len(PROMPTS)]) == [p.name for p in IMAGES]
    assert list(table["prompt"][: len(PROMPTS)]) == PROMPTS
    for name, model in three_models.items():
        own = model.zero_shot(IMAGES, PROMPTS).numpy()
        np.testing.assert_allclose(table[f"p_{name}"].to_numpy().reshape(own.shape), own, atol=1e-6)
        firsts = [PROMPTS[j] for j in own.argmax(axis=1)]
        assert list(table[f"top1_{name}"][:: len(PROMPTS)]) == firsts
    per_image = table.groupby("image", sort=False)
    for image, group in per_image:
        tops = {group[f"top1_{n}"].iloc[0] for n in names}
        assert (group["agreement"] == (len(tops) == 1)).all(), image
        for n in names:
            assert group[f"top1_{n}"].nunique() == 1
            assert group[f"p_{n}"].sum() == pytest.approx(1.0, abs=1e-5)
    assert model_columns(table) == names


def test_list_of_models_is_named_by_model_name(three_models):
    table = compare_models(list(three_models.values()), IMAGES[:1], PROMPTS)
    assert model_columns(table) == list(three_models)


def test_task_gives_each_model_its_own_classifier(three_models):
    task = "chest_xray/rsna_pneumonia"
    table = compare_models(three_models, IMAGES[:2], task, image_names=["a", "b"])
    for name, model in three_models.items():
        classifier = model.classifier(task)
        assert list(table["prompt"][: len(classifier)]) == list(classifier.class_names)
        own = model.zero_shot(IMAGES[:2], classifier).numpy()
        np.testing.assert_allclose(table[f"p_{name}"].to_numpy().reshape(own.shape), own, atol=1e-6)
    assert list(dict.fromkeys(table["image"])) == ["a", "b"]
    classes = {"normal": ["normal lungs"], "pneumonia": ["lung infection"]}
    mapped = compare_models(three_models, IMAGES[:1], classes, templates=["A chest X-ray: {}."])
    assert list(mapped["prompt"]) == ["normal", "pneumonia"]


def test_top1_and_agreement_are_exact():
    models = {
        "a": FixedModel([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]),
        "b": FixedModel([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.1, 0.1, 0.8]]),
    }
    images = [np.zeros((8, 8), np.uint8)] * 3
    table = compare_models(models, images, ["x", "y", "z"])
    assert list(table["image"].unique()) == ["image 0", "image 1", "image 2"]
    summary = summarize_comparison(table)
    assert list(summary.index) == ["image 0", "image 1", "image 2"]
    assert list(summary["top1_a"]) == ["x", "y", "z"]
    assert list(summary["top1_b"]) == ["x", "z", "z"]
    assert list(summary["agreement"]) == [True, False, True]
    assert list(table["agreement"]) == [True] * 3 + [False] * 3 + [True] * 3
    assert summary.loc["image 1", "p_top1_b"] == pytest.approx(0.6)
    single = compare_models({"a": models["a"]}, images, ["x", "y", "z"])
    assert single["agreement"].all()


def test_bad_inputs_are_explained(three_models):
    clip = three_models["mmkd-clip-b16"]
    with pytest.raises(ValueError, match="empty"):
        compare_models({}, IMAGES, PROMPTS)
    with pytest.raises(ValueError, match="different name"):
        compare_models([clip, clip], IMAGES, PROMPTS)
    with pytest.raises(TypeError, match="zero_shot"):
        compare_models({"x": "not a model"}, IMAGES, PROMPTS)
    with pytest.raises(PromptError, match="belongs to the model"):
        compare_models({"m": clip}, IMAGES, clip.classifier(["a", "b"]))
    with pytest.raises(ValueError, match="image_names"):
        compare_models({"m": clip}, IMAGES, PROMPTS, image_names=["only one"])
    with pytest.raises(ValueError, match="image_names"):
        compare_models({"m": clip}, [IMAGES[0], IMAGES[0]], PROMPTS)
    with pytest.raises(PromptError):
        compare_models({"m": clip}, IMAGES, [])


def test_registered_names_load_for_comparison(monkeypatch, tmp_path):
    """load_model(name) for each name, then compare: the notebook's path."""
    unimed = tmp_path / registry.UNIMED_FILE
    unimed.write_bytes(unimed_bytes())
    monkeypatch.setenv("MMKD_UNIMED_CHECKPOINT", str(unimed))
    monkeypatch.setitem(registry.SOURCES, "mmkd-clip-b16", str(TINY / "checkpoint.pt"))
    models = {
        name: load_model(name, text_encoder=TINY_TEXT, device="cpu")
        for name in ("mmkd-clip-b16", "unimed-clip-b16")
    }
    table = compare_models(models, IMAGES[:2], PROMPTS)
    assert table.shape == (2 * len(PROMPTS), 2 + 2 * 2 + 1)
