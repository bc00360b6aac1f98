"""Tests for :mod:`mmkd_utils.tasks.probe`: linear_probe and sample_shots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold

import mmkd_utils.tasks.probe as probe_module
from mmkd_utils import MMKDError
from mmkd_utils import linear_probe as exported
from mmkd_utils.tasks.probe import (
    DEFAULT_C,
    SUMMARY_COLUMNS,
    TABLE_COLUMNS,
    ProbeError,
    ProbeResult,
    linear_probe,
    sample_shots,
)

CLASSES = ["benign", "malignant", "normal"]
CS = [0.01, 1.0, 100.0]  # a small grid keeps the tests fast


def blobs(n_per_class: int | list[int], seed: int, dim: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around fixed centres (the same for every seed), overlapping a little."""
    centres = np.random.default_rng(1234).normal(size=(len(CLASSES), dim)) * 0.7
    counts = [n_per_class] * len(CLASSES) if isinstance(n_per_class, int) else n_per_class
    rng = np.random.default_rng(seed)
    labels = np.repeat(CLASSES, counts)
    x = centres[np.repeat(np.arange(len(CLASSES)), counts)] + rng.normal(size=(sum(counts), dim))
    order = rng.permutation(len(labels))  # classes interleaved, not in blocks
    return x[order], labels[order]


def draw(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The documented sampling, re-derived: per sorted class, rng.choice without replacement."""
    rng = np.random.default_rng(seed)
    parts = []
    for cls in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == cls)
        parts.append(rng.choice(members, size=min(k, members.size), replace=False))
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def data():
    x_train, y_train = blobs(40, seed=0)
    x_test, y_test = blobs(30, seed=1)
    return x_train, y_train, x_test, y_test


@pytest.fixture(scope="module")
def result(data):
    return linear_probe(*data, shots=(1, 2, 4, "all"), seeds=(0, 5), Cs=CS)


# --------------------------------------------------------------------------- numbers


def test_every_run_matches_a_direct_scikit_learn_fit(data, result):
    x_train, y_train, x_test, y_test = data
    assert list(result.table.columns) == list(TABLE_COLUMNS)
    assert len(result.table) == 3 * 2 + 1
    for row in result.table.itertuples(index=False):
        if row.shots == "all":
            idx = np.arange(len(y_train))
        else:
            idx = draw(y_train, row.shots, row.seed)
        assert row.n_train == idx.size
        clf = LogisticRegression(C=row.C, max_iter=1000, class_weight="balanced").fit(
            x_train[idx], y_train[idx]
        )
        assert abs(row.accuracy - accuracy_score(y_test, clf.predict(x_test))) < 1e-9
    assert exported is linear_probe


@pytest.mark.filterwarnings("ignore::FutureWarning")  # LogisticRegressionCV's 1.10 defaults
def test_c_is_chosen_by_cross_validation_on_the_training_examples(data, result):
    x_train, y_train, _, _ = data
    for row in result.table.itertuples(index=False):
        if row.shots == 1:
            continue
        idx = np.arange(len(y_train)) if row.shots == "all" else draw(y_train, row.shots, row.seed)
        folds = min(5, 40 if row.shots == "all" else row.shots)
        search = LogisticRegressionCV(
            Cs=CS,
            cv=StratifiedKFold(folds),
            scoring="accuracy",
            max_iter=1000,
            class_weight="balanced",
        ).fit(x_train[idx], y_train[idx])
        assert row.cv_folds == folds
        assert row.C == float(np.ravel(search.C_)[0])


def test_all_runs_once_and_separable_blobs_are_learned(data, result):
    rows = result.table[result.table["shots"] == "all"]
    assert len(rows) == 1
    assert pd.isna(rows["seed"].iloc[0])
    assert rows["n_train"].iloc[0] == len(data[1])
    assert rows["accuracy"].iloc[0] > 0.9
    summary = result.summary.set_index("shots")
    assert summary.loc["all", "runs"] == 1 and summary.loc["all", "std"] == 0.0


def test_summary_is_mean_and_std_over_seeds(result):
    assert list(result.summary.columns) == list(SUMMARY_COLUMNS)
    assert result.summary["shots"].tolist() == [1, 2, 4, "all"]
    for row in result.summary.itertuples(index=False):
        acc = result.table.loc[result.table["shots"] == row.shots, "accuracy"].to_numpy()
        assert row.runs == acc.size
        assert row.mean_accuracy == pytest.approx(acc.mean(), abs=1e-12)
        assert row.std == pytest.approx(acc.std(ddof=0), abs=1e-12)
    assert result.classes == tuple(CLASSES)
    assert result.n_test == 90
    text = repr(result)
    assert text.startswith("ProbeResult(3 classes, 90 test embeddings: 1-shot ")
    assert "all " in text and isinstance(result, ProbeResult)


def test_one_shot_uses_the_documented_default_c(result):
    ones = result.table[result.table["shots"] == 1]
    assert (ones["C"] == DEFAULT_C).all() and (ones["cv_folds"] == 0).all()
    assert (ones["n_train"] == len(CLASSES)).all()
    assert any("default" in note and "shots 1 " in note for note in result.notes)


def test_a_single_c_is_used_as_given(data):
    out = linear_probe(*data, shots=(1, 4), seeds=(0,), Cs=[0.5])
    assert out.table["C"].tolist() == [0.5, 0.5]
    assert out.table["cv_folds"].tolist() == [0, 0]
    assert not any("default" in note for note in out.notes)


def test_cv_caps_the_number_of_folds(data):
    out = linear_probe(*data, shots=(8,), seeds=(0,), Cs=CS, cv=3)
    assert out.table["cv_folds"].tolist() == [3]


# --------------------------------------------------------------------------- sampling


def test_shots_are_stratified_and_reproducible_by_seed():
    _, labels = blobs(20, seed=0)
    first = sample_shots(labels, 4, seed=7)
    assert first.tolist() == sample_shots(labels, 4, seed=7).tolist()
    assert first.tolist() == draw(labels, 4, 7).tolist()
    assert first.tolist() != sample_shots(labels, 4, seed=8).tolist()
    assert len(set(first.tolist())) == first.size == 12
    assert pd.Series(labels[first]).value_counts().to_dict() == dict.fromkeys(CLASSES, 4)


def test_runs_with_the_same_seed_are_identical(data):
    a = linear_probe(*data, shots=(2,), seeds=(3,), Cs=CS)
    b = linear_probe(*data, shots=(2,), seeds=(3,), Cs=CS)
    pd.testing.assert_frame_equal(a.table, b.table)


def test_a_class_with_fewer_examples_than_shots_uses_all_of_them():
    x_train, y_train = blobs([10, 3, 10], seed=2)
    x_test, y_test = blobs(5, seed=3)
    out = linear_probe(x_train, y_train, x_test, y_test, shots=(8, "all"), seeds=(0, 1), Cs=CS)
    assert out.table["n_train"].tolist() == [19, 19, 23]
    assert out.table["cv_folds"].tolist() == [3, 3, 3]  # the smallest class has 3 examples
    assert any("'malignant' (3)" in note and "8-shot" in note for note in out.notes)
    idx = sample_shots(y_train, 8, seed=0)
    assert sorted(idx[y_train[idx] == "malignant"]) == sorted(
        np.flatnonzero(y_train == "malignant")
    )


def test_tensors_and_embedding_sets_are_accepted(data, result):
    x_train, y_train, x_test, y_test = data

    @dataclass
    class FakeEmbeddings:
        paths: list[Path]
        labels: list[str | None]
        embeddings: torch.Tensor

    train = FakeEmbeddings(
        [Path(f"{i}.png") for i in range(len(y_train))],
        y_train.tolist(),
        torch.from_numpy(x_train),
    )
    out = linear_probe(
        train,
        None,
        torch.from_numpy(x_test),
        list(y_test),
        shots=(1, 2, 4, "all"),
        seeds=(0, 5),
        Cs=CS,
    )
    pd.testing.assert_frame_equal(out.table, result.table)


def test_integer_labels_work():
    x_train, y_train = blobs(6, seed=4)
    x_test, y_test = blobs(4, seed=5)
    as_int = {c: i for i, c in enumerate(CLASSES)}
    out = linear_probe(
        x_train,
        [as_int[c] for c in y_train],
        x_test,
        [as_int[c] for c in y_test],
        shots=("all",),
        Cs=CS,
    )
    assert out.classes == (0, 1, 2)


# --------------------------------------------------------------------------- errors


def _bad(data, **change):
    args = dict(zip(("x_train", "y_train", "x_test", "y_test"), data, strict=True))
    args.update(change)
    return args


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"y_train": ["benign"] * 5}, r"train_labels has 5 entries but train_embeddings has 120"),
        ({"y_test": ["benign"] * 5}, r"test_labels has 5 entries but test_embeddings has 90"),
        ({"y_train": ["benign"] * 120, "y_test": ["benign"] * 90}, r"at least 2 classes"),
        ({"y_test": ["benign"] * 89 + ["cyst"]}, r"test_labels .* not in train_labels: 'cyst'"),
        ({"x_train": np.full((120, 12), np.nan)}, r"train_embeddings has non-finite"),
        ({"x_test": np.full((90, 12), np.inf)}, r"test_embeddings has non-finite"),
        ({"x_test": np.ones((90, 5))}, r"12-d rows but test_embeddings has 5-d"),
        ({"x_train": np.ones(120)}, r"train_embeddings must be non-empty 2-D"),
        ({"y_train": [None] * 120}, r"train_labels has 120 missing"),
        ({"y_train": [1] * 60 + ["a"] * 60}, r"train_labels mixes label types"),
        ({"y_train": "benign"}, r"not one string"),
        ({"shots": (0,)}, r"shots="),
        ({"shots": ("most",)}, r"shots="),
        ({"shots": (True,)}, r"shots="),
        ({"shots": ()}, r"shots is empty"),
        ({"seeds": (-1,)}, r"seeds="),
        ({"seeds": ()}, r"seeds is empty"),
        ({"Cs": [0.0, 1.0]}, r"Cs="),
        ({"Cs": []}, r"Cs="),
        ({"cv": 1}, r"cv=1"),
    ],
)
def test_errors(data, change, match):
    args = _bad(data, **change)
    with pytest.raises(ProbeError, match=match) as info:
        linear_probe(
            args.pop("x_train"),
            args.pop("y_train"),
            args.pop("x_test"),
            args.pop("y_test"),
            **args,
        )
    assert isinstance(info.value, MMKDError) and isinstance(info.value, ValueError)


def test_groups_keep_the_copies_of_one_original_out_of_each_other_s_folds(monkeypatch):
    """With groups, C is chosen on folds that never split an original's copies."""
    import sklearn.linear_model

    rng = np.random.default_rng(0)
    originals = np.repeat(np.arange(8), 3)  # 8 originals, 3 copies each
    y = np.where(originals < 4, "a", "b")
    x = rng.normal(size=(8, 6))[originals] + 0.01 * rng.normal(size=(24, 6))
    seen = []
    real_fit = sklearn.linear_model.LogisticRegressionCV.fit

    def spy(self, features, labels, *args, **kwargs):
        seen.append(self.cv)
        return real_fit(self, features, labels, *args, **kwargs)

    monkeypatch.setattr(sklearn.linear_model.LogisticRegressionCV, "fit", spy)
    result = linear_probe(x, y, x, y, shots=("all",), groups=originals)
    assert result.table["cv_folds"].tolist() == [4]  # 4 originals per class, not 12 rows
    for train, test in seen[0]:
        assert not set(originals[train]) & set(originals[test])
    plain = linear_probe(x, y, x, y, shots=("all",))
    assert plain.table["cv_folds"].tolist() == [5]
    with pytest.raises(ProbeError, match="groups"):
        linear_probe(x, y, x, y, shots=("all",), groups=originals[:-1])


def near_duplicates(seed: int, n: int = 40, copies: int = 5, dim: int = 64):
    """``copies`` noisy copies of ``n`` random originals, a RANDOM label per original, rows
    shuffled (as files in a folder would be): nothing can be learned about new originals."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    originals = rng.permutation(np.repeat(np.arange(n), copies))
    x = rng.normal(size=(n, dim))[originals] + 0.01 * rng.normal(size=(n * copies, dim))
    return x, labels[originals], originals


def test_grouped_cv_is_at_chance_on_random_labels_where_ungrouped_cv_leaks():
    grouped, plain = [], []
    for seed in range(3):
        x, y, originals = near_duplicates(seed)
        for out, groups in ((grouped, originals), (plain, None)):
            run = linear_probe(x, y, x, y, shots=("all",), Cs=CS, groups=groups).table.iloc[0]
            assert run.cv_folds == 5
            out.append(run.cv_accuracy)
    assert abs(np.mean(grouped) - 0.5) < 0.1 and max(abs(np.array(grouped) - 0.5)) < 0.2
    assert min(plain) > 0.9  # copies of one original on both sides of a fold: leakage


def test_with_groups_shots_count_originals_with_all_their_copies():
    x, y, originals = near_duplicates(0)
    idx = sample_shots(y, 2, seed=1, groups=originals)
    assert pd.Series(originals[idx]).groupby(y[idx]).nunique().tolist() == [2, 2]
    assert idx.size == 2 * 2 * 5  # 2 originals per class, 5 copies each
    assert idx.tolist() == sample_shots(y, 2, seed=1, groups=originals).tolist()
    out = linear_probe(x, y, x, y, shots=(2, 30), seeds=(1,), Cs=CS, groups=originals)
    assert out.table["n_train"].tolist() == [20, 200]
    assert out.table["cv_folds"].tolist() == [2, 5]
    assert any("fewer than 30 training originals" in note for note in out.notes)


def test_one_original_in_a_class_means_a_fixed_c_and_a_note():
    x, y, originals = near_duplicates(1)
    keep = (y == 0) | (originals == originals[y == 1][0])  # class 1: one original left
    out = linear_probe(x[keep], y[keep], x, y, shots=("all",), Cs=CS, groups=originals[keep])
    run = out.table.iloc[0]
    assert run.C == DEFAULT_C and run.cv_folds == 0 and np.isnan(run.cv_accuracy)
    assert any("default" in note and "1 original" in note for note in out.notes)


def test_an_original_with_two_labels_is_refused():
    x, y, originals = near_duplicates(2)
    y = y.copy()
    y[np.flatnonzero(originals == 3)[0]] = 1 - y[np.flatnonzero(originals == 3)[0]]
    with pytest.raises(ProbeError, match="original '3' has rows of two classes"):
        linear_probe(x, y, x, y, groups=originals)


def test_the_cross_validated_model_is_not_fitted_a_second_time(monkeypatch, data):
    import sklearn.linear_model

    calls = []
    real = sklearn.linear_model.LogisticRegression.fit

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(sklearn.linear_model.LogisticRegression, "fit", spy)
    linear_probe(*data, shots=("all",), Cs=CS)
    assert "LogisticRegression" not in calls  # LogisticRegressionCV refits the chosen C itself


def test_a_class_with_more_images_does_not_win_by_number():
    # Three times as many rows of "a" as of "b", a weak signal and strong regularisation: an
    # unweighted fit answers "a" for everything (0.5 on a balanced test set); the probe does not.
    rng = np.random.default_rng(0)
    y_train, y_test = np.repeat(["a", "b"], [60, 20]), np.repeat(["a", "b"], 50)
    signal = {"a": 0.5, "b": -0.5}
    x_train, x_test = (
        np.array([signal[v] for v in y])[:, None] + 0.3 * rng.normal(size=(len(y), 4))
        for y in (y_train, y_test)
    )
    unweighted = LogisticRegression(C=1e-3, max_iter=1000).fit(x_train, y_train)
    assert accuracy_score(y_test, unweighted.predict(x_test)) == 0.5
    run = linear_probe(x_train, y_train, x_test, y_test, shots=("all",), Cs=[1e-3]).table.iloc[0]
    assert run.accuracy > 0.9


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("cs", [[1.0], [0.1, 1.0]])
def test_fits_that_stop_at_max_iter_are_reported(monkeypatch, data, cs):
    monkeypatch.setattr(probe_module, "MAX_ITER", 1)
    monkeypatch.setitem(probe_module.FIT, "max_iter", 1)
    result = linear_probe(*data, shots=("all",), Cs=cs)
    assert any("max_iter=1" in note for note in result.notes)
