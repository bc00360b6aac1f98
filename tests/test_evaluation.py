"""Tests for :mod:`mmkd_utils.tasks.evaluation` (evaluate_folder) and plot_confusion_matrix."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

from mmkd_utils import ImageLoadError, MMKDError, PromptError, SkippedImagesWarning
from mmkd_utils import evaluate_folder as exported
from mmkd_utils.model.classifier import ZeroShotClassifier
from mmkd_utils.plotting import plot_confusion_matrix
from mmkd_utils.tasks.evaluation import (
    EvaluationError,
    EvaluationResult,
    evaluate_folder,
    list_images,
    match_folders,
)

matplotlib.use("Agg")  # headless; only the tests pick a backend, never the package

CLASSES = ["pleural effusion", "normal", "pneumonia"]
TEMPLATES = ["A chest X-ray showing {}.", "{} on a radiograph."]
COLOURS = [(200, 30, 30), (30, 160, 60), (40, 60, 220), (230, 200, 40)]


# --------------------------------------------------------------------------- helpers


def write_image(path: Path, colour: tuple[int, int, int], pattern: int) -> Path:
    """A small PNG: a coloured background with a pattern that depends on ``pattern``."""
    img = Image.new("RGB", (40, 32), colour)
    draw = ImageDraw.Draw(img)
    step = 4 + 3 * pattern
    for x in range(0, 40, step):
        draw.line([(x, 0), (x, 31)], fill=(255 - colour[0], 255 - colour[1], 255), width=1)
    draw.ellipse([pattern * 3, pattern * 2, 20 + pattern * 3, 18 + pattern], fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_folder(root: Path, layout: dict[str, int]) -> Path:
    """``root/<folder>/img<i>.png`` with ``layout[folder]`` images per folder."""
    for c, (folder, count) in enumerate(layout.items()):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            write_image(root / folder / f"img{i}.png", COLOURS[c % len(COLOURS)], i)
    return root


def standard_folder(tmp_path: Path) -> Path:
    """Three classes; folder names in other case and with '_' / '-'."""
    return make_folder(tmp_path / "data", {"pleural_effusion": 4, "Normal": 3, "pneumonia": 3})


def probs_of(result: EvaluationResult) -> np.ndarray:
    return result.predictions[list(result.class_names)].to_numpy()


@pytest.fixture
def no_new_pyplot_figures():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


# --------------------------------------------------------------------------- metrics


def test_metrics_equal_scikit_learn_and_zero_shot(tiny_model, tmp_path):
    root = standard_folder(tmp_path)
    result = evaluate_folder(
        tiny_model, root, CLASSES, templates=TEMPLATES, batch_size=4, top_k=(1, 2, 3, 5)
    )
    assert exported is evaluate_folder
    assert result.class_names == tuple(CLASSES)
    preds = result.predictions
    assert list(preds.columns) == ["path", "true", "predicted", *CLASSES]
    assert len(preds) == result.n_images == 10
    assert preds["true"].value_counts().to_dict() == {
        "pleural effusion": 4,
        "normal": 3,
        "pneumonia": 3,
    }
    # Same probabilities as the model's own zero_shot on the same files.
    clf = tiny_model.classifier(CLASSES, TEMPLATES)
    direct = tiny_model.zero_shot(list(preds["path"]), clf)
    probs = probs_of(result)
    np.testing.assert_allclose(probs, direct.numpy(), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)

    y_true = preds["true"].map(CLASSES.index).to_numpy()
    y_pred = preds["predicted"].map(CLASSES.index).to_numpy()
    assert (y_pred == probs.argmax(axis=1)).all()
    labels = [0, 1, 2]
    assert result.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert result.balanced_accuracy == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert set(result.top_k_accuracy) == {1, 2, 3}  # 5 > 3 classes: dropped
    for k, value in result.top_k_accuracy.items():
        assert value == pytest.approx(top_k_accuracy_score(y_true, probs, k=k, labels=labels))
    assert result.top_k_accuracy[1] == pytest.approx(result.accuracy)
    assert result.top_k_accuracy[3] == 1.0
    assert any("top-5" in note for note in result.notes)
    assert result.auroc_macro == pytest.approx(
        roc_auc_score(y_true, probs, multi_class="ovr", average="macro")
    )
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    table = result.per_class
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support"]
    assert list(table["class"]) == CLASSES
    np.testing.assert_allclose(table["precision"], precision)
    np.testing.assert_allclose(table["recall"], recall)
    np.testing.assert_allclose(table["f1"], f1)
    assert list(table["support"]) == list(support) == [4, 3, 3]
    assert list(result.confusion.index) == list(result.confusion.columns) == CLASSES
    np.testing.assert_array_equal(
        result.confusion.to_numpy(), confusion_matrix(y_true, y_pred, labels=labels)
    )
    assert result.skipped.empty and list(result.skipped.columns) == ["path", "reason"]


def test_summary_and_repr(tiny_model, tmp_path):
    result = evaluate_folder(tiny_model, standard_folder(tmp_path), CLASSES)
    line = result.summary()
    assert "\n" not in line
    assert line.startswith("10 images, 3 classes: accuracy ")
    assert "top-1" in line and "AUROC" in line and "top-5" not in line
    assert repr(result) == f"EvaluationResult({line})"


def test_class_without_folder_gives_nan_auroc_with_a_note(tiny_model, tmp_path):
    root = make_folder(tmp_path / "data", {"normal": 2, "pneumonia": 2})
    result = evaluate_folder(tiny_model, root, ["normal", "pneumonia", "edema"])
    assert math.isnan(result.auroc_macro)
    assert any("AUROC" in note and "'edema'" in note for note in result.notes)
    assert list(result.confusion.index) == ["normal", "pneumonia", "edema"]
    assert result.per_class.set_index("class").loc["edema", "support"] == 0
    assert "AUROC n/a" in result.summary()


def test_two_classes(tiny_model, tmp_path):
    root = make_folder(tmp_path / "data", {"normal": 3, "pneumonia": 3})
    result = evaluate_folder(tiny_model, root, ["normal", "pneumonia"])
    probs = probs_of(result)
    y_true = result.predictions["true"].map(["normal", "pneumonia"].index).to_numpy()
    assert result.auroc_macro == pytest.approx(roc_auc_score(y_true, probs[:, 1]))
    assert set(result.top_k_accuracy) == {1}
    assert result.top_k_accuracy[1] == pytest.approx(result.accuracy)


def test_tied_classes_are_noted(tiny_model, tmp_path):
    root = make_folder(tmp_path / "data", {"a": 2, "b": 2})
    weight = torch.nn.functional.normalize(torch.ones(1, tiny_model.embed_dim), dim=-1)
    clf = ZeroShotClassifier(("a", "b"), (("a",), ("b",)), weight.repeat(2, 1))
    result = evaluate_folder(tiny_model, root, clf)
    assert (result.predictions["predicted"] == "a").all()  # the first of the tied classes
    assert any("4 image(s) have several classes tied" in note for note in result.notes)
    assert result.accuracy == 0.5


def test_synonym_mapping_and_ready_classifier(tiny_model, tmp_path):
    root = standard_folder(tmp_path)
    synonyms = {"pleural effusion": ["fluid in the pleura"], "normal": [], "pneumonia": []}
    by_mapping = evaluate_folder(tiny_model, root, synonyms, templates=TEMPLATES)
    clf = tiny_model.classifier(synonyms, TEMPLATES)
    by_classifier = evaluate_folder(tiny_model, root, clf)
    pd.testing.assert_frame_equal(by_mapping.predictions, by_classifier.predictions)
    with pytest.raises(PromptError, match="templates"):
        evaluate_folder(tiny_model, root, clf, templates=TEMPLATES)


# --------------------------------------------------------------------------- folder names


def test_match_folders_exact_then_case_and_separators():
    mapping = match_folders(
        ["Normal", "pleural_effusion", "Pleural-Effusion", "pneumonia"],
        CLASSES,
    )
    assert mapping == {
        "Normal": "normal",
        "pleural_effusion": "pleural effusion",
        "Pleural-Effusion": "pleural effusion",
        "pneumonia": "pneumonia",
    }


def test_folder_to_class_overrides_and_none_leaves_a_folder_out(tiny_model, tmp_path):
    root = make_folder(tmp_path / "data", {"PE": 2, "normal": 2, "pneumonia": 2, "other": 1})
    result = evaluate_folder(
        tiny_model,
        root,
        CLASSES,
        folder_to_class={"PE": "pleural effusion", "normal": "pneumonia", "other": None},
    )
    folders = result.predictions["path"].map(lambda p: Path(p).parent.name)
    truth = dict(zip(folders, result.predictions["true"], strict=True))
    assert truth == {"PE": "pleural effusion", "normal": "pneumonia", "pneumonia": "pneumonia"}
    assert any("'other' left out" in note for note in result.notes)


def test_folder_to_class_with_unknown_folder_or_class_is_an_error(tiny_model, tmp_path):
    root = standard_folder(tmp_path)
    with pytest.raises(EvaluationError, match="'pleura'.*not sub-folders"):
        evaluate_folder(tiny_model, root, CLASSES, folder_to_class={"pleura": "normal"})
    with pytest.raises(EvaluationError, match="'effusion'.*not class names"):
        evaluate_folder(tiny_model, root, CLASSES, folder_to_class={"Normal": "effusion"})


def test_unmatched_folder_lists_the_folder_and_the_classes(tiny_model, tmp_path):
    root = make_folder(tmp_path / "data", {"normal": 1, "covid_19": 1})
    with pytest.raises(EvaluationError) as info:
        evaluate_folder(tiny_model, root, CLASSES)
    message = str(info.value)
    assert "'covid_19'" in message and "folder_to_class" in message
    for name in CLASSES:
        assert repr(name) in message
    assert isinstance(info.value, MMKDError) and isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- layout errors


def test_missing_root_and_root_without_subfolders(tiny_model, tmp_path):
    with pytest.raises(EvaluationError, match="does not exist"):
        evaluate_folder(tiny_model, tmp_path / "nope", CLASSES)
    flat = tmp_path / "flat"
    write_image(flat / "a.png", COLOURS[0], 0)
    (flat / ".hidden").mkdir()
    with pytest.raises(EvaluationError, match="no class sub-folders.*1 images directly"):
        evaluate_folder(tiny_model, flat, CLASSES)
    with pytest.raises(EvaluationError, match="is a file"):
        evaluate_folder(tiny_model, flat / "a.png", CLASSES)


def test_empty_class_folder_raises_or_is_skipped(tiny_model, tmp_path):
    root = make_folder(tmp_path / "data", {"normal": 2, "pneumonia": 2})
    (root / "pleural_effusion").mkdir()
    (root / "pleural_effusion" / "notes.txt").write_text("no images here")
    with pytest.raises(EvaluationError, match="'pleural_effusion'.*holds no image files"):
        evaluate_folder(tiny_model, root, CLASSES)
    with pytest.warns(SkippedImagesWarning, match="1 empty class folder"):
        result = evaluate_folder(tiny_model, root, CLASSES, on_error="skip")
    assert result.n_images == 4
    assert list(result.skipped["path"]) == [str(root / "pleural_effusion")]
    assert "no image files" in result.skipped["reason"].iloc[0]


def test_only_images_are_listed_sorted_with_hidden_files_ignored(tmp_path):
    folder = tmp_path / "normal"
    for name in ["b.png", "a.JPG", "c.nii.gz", "sub/d.dcm", ".e.png", ".cache/f.png"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    (folder / "readme.txt").write_text("x")
    (folder / "scan.nii.gz.bak").write_text("x")
    names = [p.relative_to(folder).as_posix() for p in list_images(folder)]
    assert names == ["a.JPG", "b.png", "c.nii.gz", "sub/d.dcm"]


# --------------------------------------------------------------------------- unreadable images


def test_unreadable_image_with_raise_names_the_file(tiny_model, tmp_path):
    root = standard_folder(tmp_path)
    (root / "Normal" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ImageLoadError, match=re.escape(str(root / "Normal" / "broken.png"))):
        evaluate_folder(tiny_model, root, CLASSES)


def test_unreadable_images_with_skip_are_reported_once_and_the_rest_evaluated(tiny_model, tmp_path):
    root = standard_folder(tmp_path)
    bad = [
        root / "Normal" / "broken.png",  # shares a batch with readable images
        root / "pneumonia" / "a_bad.png",  # these two fill one batch on their own
        root / "pneumonia" / "b_bad.png",
    ]
    for path in bad:
        path.write_bytes(b"this is not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_folder(tiny_model, root, CLASSES, batch_size=2, on_error="skip")
    skipped_warnings = [w for w in caught if issubclass(w.category, SkippedImagesWarning)]
    assert len(skipped_warnings) == 1
    assert "3 unreadable image(s)" in str(skipped_warnings[0].message)
    assert len(skipped_warnings[0].message.failures) == 3
    assert sorted(result.skipped["path"]) == sorted(str(p) for p in bad)
    assert all("not an image" in reason for reason in result.skipped["reason"])
    assert result.n_images == 10
    assert not set(result.predictions["path"]) & {str(p) for p in bad}
    assert "(3 skipped)" in result.summary()


def test_no_readable_image_at_all_is_an_error(tiny_model, tmp_path):
    root = tmp_path / "data"
    for folder in ["normal", "pneumonia"]:
        (root / folder).mkdir(parents=True)
        (root / folder / "x.png").write_bytes(b"junk")
    with pytest.raises(ImageLoadError, match="None of the 2 images"):
        evaluate_folder(tiny_model, root, CLASSES, on_error="skip")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"on_error": "ignore"}, "on_error"),
        ({"top_k": (0,)}, "top_k"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments(tiny_model, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate_folder(tiny_model, standard_folder(tmp_path), CLASSES, **kwargs)


# --------------------------------------------------------------------------- plot


def test_plot_confusion_matrix_from_a_result(tiny_model, tmp_path, no_new_pyplot_figures):
    result = evaluate_folder(tiny_model, standard_folder(tmp_path), CLASSES)
    fig = plot_confusion_matrix(result.confusion)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.texts) == 9
    assert [t.get_text() for t in ax.texts] == [str(v) for v in result.confusion.to_numpy().ravel()]
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    assert all(t.get_rotation() != 0 for t in ax.get_xticklabels())


def test_plot_confusion_matrix_normalised_array_with_labels(no_new_pyplot_figures):
    counts = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    fig = plot_confusion_matrix(counts, labels=["a", "b", "c"], normalize=True)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.75", "0.25", "0.00", "–", "–", "–", "0.25", "0.25", "0.50"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b", "c"]


def test_plot_confusion_matrix_into_an_existing_axes(no_new_pyplot_figures):
    fig = Figure()
    ax = fig.add_subplot()
    frame = pd.DataFrame([[1, 2], [3, 4]], index=["x", "y"], columns=["x", "y"])
    assert plot_confusion_matrix(frame, ax=ax) is fig
    assert len(ax.texts) == 4


def test_plot_confusion_matrix_bad_input(no_new_pyplot_figures):
    with pytest.raises(PromptError, match="labels"):
        plot_confusion_matrix(np.eye(2))
    with pytest.raises(PromptError):
        plot_confusion_matrix(np.eye(2), labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="non-negative"):
        plot_confusion_matrix(-np.eye(2), labels=["a", "b"])
    with pytest.raises(ValueError, match="2-D"):
        plot_confusion_matrix(np.ones(3), labels=["a", "b", "c"])


def test_evaluation_does_not_change_the_model_outputs(tiny_model, tmp_path):
    root = standard_folder(tmp_path)
    paths = list_images(root / "Normal")
    before = tiny_model.encode_images(paths)
    evaluate_folder(tiny_model, root, CLASSES, batch_size=3)
    assert torch.equal(tiny_model.encode_images(paths), before)
