"""The MMKD-CLIP authors' LC25000 protocol (issue 16, point 7): the two bank tasks with their
three prompts per class, and evaluate_folder's metrics with stratified-bootstrap intervals on
a synthetic folder in the LC25000 layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from mmkd_utils import MMKDError
from mmkd_utils.prompts import get_task
from mmkd_utils.tasks.evaluation import EvaluationResult, evaluate_folder
from mmkd_utils.tasks.metrics import bootstrap_ci

#: Sub-folder of ``lung_colon_image_set`` and its class folders, in the authors' label order.
SUBSETS = {
    "lung": ("lung_image_sets", ("lung_aca", "lung_n", "lung_scc")),
    "colon": ("colon_image_sets", ("colon_aca", "colon_n")),
}
KEYS = {"acc", "auc", "balanced_acc", "macro_f1", "precision", "recall"}


def lc25000(tmp_path: Path, per_class: int = 6) -> Path:
    """``lung_colon_image_set/`` as the dataset unpacks, with a few small JPEG tiles per class."""
    root, rng = tmp_path / "lung_colon_image_set", np.random.default_rng(0)
    for subset, folders in SUBSETS.values():
        for folder in folders:
            (root / subset / folder).mkdir(parents=True)
            for i in range(per_class):  # a random colour and noise: the predictions vary
                noise = rng.integers(0, rng.integers(1, 200), (32, 32, 3))
                pixels = np.clip(rng.integers(0, 256, 3) + noise, 0, 255)
                name = f"{folder.replace('_', '')}{i + 1}.jpeg"  # lungaca1.jpeg, ...
                Image.fromarray(pixels.astype(np.uint8)).save(root / subset / folder / name)
    return root


def evaluate(model, tmp_path: Path, which: str, **kwargs) -> EvaluationResult:
    """evaluate_folder on one subset, with the task and folder_to_class its bank notes give."""
    subset, folders = SUBSETS[which]
    task = get_task(f"lc25000_{which}_protocol")
    mapping = dict(zip(folders, task.class_names, strict=True))
    return evaluate_folder(
        model, lc25000(tmp_path) / subset, task.name, folder_to_class=mapping, **kwargs
    )


def labels_and_probs(result: EvaluationResult) -> tuple[np.ndarray, np.ndarray]:
    names = list(result.class_names)
    return result.predictions["true"].map(names.index).to_numpy(), result.predictions[
        names
    ].to_numpy()


@pytest.mark.parametrize(
    ("which", "words"),
    [
        ("lung", ["adenocarcinoma", "benign lung", "squamous cell carcinoma"]),
        ("colon", ["adenocarcinoma", "benign colonic tissue"]),
    ],
)
def test_bank_tasks_have_three_prompts_per_class_in_the_folder_order(tiny_model, which, words):
    task = get_task(f"lc25000_{which}_protocol")
    assert "LC25000" in task.source and "1912.12142" in task.source
    for folder in SUBSETS[which][1]:
        assert folder in task.notes  # the notes say which folder is which class
    assert len(task.class_names) == len(words)
    for name, word in zip(task.class_names, words, strict=True):
        prompts = task.prompts(name)
        assert len(prompts) == len(set(prompts)) == 3
        assert all(word in p.lower() for p in prompts), prompts
    classifier = tiny_model.classifier(task.name)
    assert [len(p) for p in classifier.prompts] == [3] * len(words)


@pytest.mark.parametrize("which", ["lung", "colon"])
def test_metrics_and_intervals_of_the_protocol(tiny_model, tmp_path, which):
    result = evaluate(tiny_model, tmp_path, which)
    folders = result.predictions["path"].map(lambda p: Path(p).parent.name)
    task = get_task(f"lc25000_{which}_protocol")
    expected = dict(zip(SUBSETS[which][1], task.class_names, strict=True))
    assert (result.predictions["true"] == folders.map(expected)).all()
    assert result.n_images == 6 * len(expected)

    y, probs = labels_and_probs(result)
    pred = result.predictions["predicted"].map(list(result.class_names).index).to_numpy()
    auc = (
        roc_auc_score(y, probs[:, 1])
        if which == "colon"
        else roc_auc_score(y, probs, multi_class="ovr")
    )
    sklearn = {
        "acc": accuracy_score(y, pred),
        "auc": auc,
        "balanced_acc": balanced_accuracy_score(y, pred),
        "macro_f1": f1_score(y, pred, average="macro", zero_division=0),
        "precision": precision_score(y, pred, average="macro", zero_division=0),
        "recall": recall_score(y, pred, average="macro", zero_division=0),
    }
    assert set(result.metrics) == set(result.ci) == KEYS
    for key, value in sklearn.items():
        assert result.metrics[key] == pytest.approx(value, abs=1e-12), key
        low, high = result.ci[key]
        assert low <= result.metrics[key] <= high, (key, low, result.metrics[key], high)
    assert result.accuracy == result.metrics["acc"]
    assert result.balanced_accuracy == result.metrics["balanced_acc"]
    assert result.auroc_macro == result.metrics["auc"]
    assert result.ci == bootstrap_ci(y, probs, "multi-class", n_resamples=1000, seed=0)
    assert result.ci["auc"][0] < result.ci["auc"][1]  # the images give the bootstrap work
    low, high = result.ci["acc"]
    assert f"accuracy {result.accuracy:.3f} (95% CI {low:.3f}-{high:.3f})" in result.summary()


def test_n_resamples_and_seed_reach_the_bootstrap(tiny_model, tmp_path):
    result = evaluate(tiny_model, tmp_path, "lung", n_resamples=50, seed=7)
    y, probs = labels_and_probs(result)
    assert result.ci == bootstrap_ci(y, probs, "multi-class", n_resamples=50, seed=7)
    assert result.ci != bootstrap_ci(y, probs, "multi-class", n_resamples=50, seed=8)


@pytest.mark.parametrize(
    "bad",
    [{"n_resamples": n} for n in (0, 9, 100.0, "1000", None)]
    + [{"seed": s} for s in (-1, 1.5, "7", None)],
)
def test_bad_n_resamples_or_seed_fails_before_any_image_is_encoded(
    tiny_model, tmp_path, monkeypatch, bad
):
    monkeypatch.setattr(tiny_model, "encode_images", lambda *a, **k: pytest.fail("encoded"))
    with pytest.raises(MMKDError, match=next(iter(bad))) as info:
        evaluate(tiny_model, tmp_path, "colon", **bad)
    assert isinstance(info.value, ValueError)
