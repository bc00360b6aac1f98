"""Metrics as medmnist's evaluator and scikit-learn compute them; stratified bootstrap CIs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from mmkd_utils.errors import ArgumentError, MMKDError
from mmkd_utils.tasks.metrics import (
    METRICS,
    MULTI_LABEL,
    TASKS,
    bootstrap_ci,
    classification_metrics,
    sampling_weights,
    strata,
    stratified_sample,
    weighted_metrics,
)

evaluator = pytest.importorskip("medmnist.evaluator")


def fake(task: str, n: int, seed: int = 0, signal: float = 1.0):
    """Labels in medmnist's stored shape and scores with some signal, rounded to make ties."""
    rng = np.random.default_rng(seed)
    if task == MULTI_LABEL:
        y = (rng.random((n, 6)) < 0.3).astype(np.uint8)
        return y, np.round(np.clip(0.3 * y * signal + rng.random(y.shape) * 0.7, 0, 1), 2)
    c = 2 if task == "binary-class" else 5
    y = rng.integers(0, c, (n, 1)).astype(np.uint8)
    logits = rng.normal(size=(n, c)) + signal * np.eye(c)[y[:, 0]]
    s = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, np.round(s, 2)


def predicted(task, y, s):
    if task == "binary-class":
        return y.ravel(), (s[:, -1] > 0.5).astype(int), range(2)
    return y.ravel(), s.argmax(axis=1), range(s.shape[1])


@pytest.mark.parametrize("task", TASKS)
def test_acc_and_auc_agree_with_the_medmnist_evaluator(task):
    for seed in range(3):
        y, s = fake(task, 300, seed)
        m = classification_metrics(y, s, task)
        assert m["auc"] == pytest.approx(evaluator.getAUC(y, s, task), abs=1e-9)
        assert m["acc"] == pytest.approx(evaluator.getACC(y, s, task), abs=1e-9)


@pytest.mark.parametrize("task", [t for t in TASKS if t != MULTI_LABEL])
def test_the_other_metrics_agree_with_scikit_learn(task):
    y, s = fake(task, 300)
    truth, pred, labels = predicted(task, y, s)
    m = classification_metrics(y, s, task)
    kw = dict(labels=labels, average="macro", zero_division=0)
    assert m["balanced_acc"] == pytest.approx(sk.balanced_accuracy_score(truth, pred), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(sk.f1_score(truth, pred, **kw), abs=1e-12)
    assert m["precision"] == pytest.approx(sk.precision_score(truth, pred, **kw), abs=1e-12)
    assert m["recall"] == pytest.approx(sk.recall_score(truth, pred, **kw), abs=1e-12)


def test_multi_label_metrics_are_means_over_labels():
    y, s = fake(MULTI_LABEL, 300)
    p, m = (s > 0.5).astype(int), classification_metrics(y, s, MULTI_LABEL)
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro", zero_division=0))
    assert m["recall"] == pytest.approx(sk.recall_score(y, p, average="macro", zero_division=0))
    per_label = [sk.balanced_accuracy_score(y[:, j], p[:, j]) for j in range(y.shape[1])]
    assert m["balanced_acc"] == pytest.approx(np.mean(per_label))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(TASKS), st.integers(0, 10_000), st.integers(8, 60))
def test_a_weighted_resample_equals_the_metrics_of_the_drawn_images(task, seed, n):
    y, s = fake(task, n, seed, signal=0.5)
    idx = np.random.default_rng(seed).integers(0, n, n)
    weighted = weighted_metrics(y, s, task, np.bincount(idx, minlength=n)[None])
    drawn = classification_metrics(y[idx], s[idx], task)
    for name in METRICS:
        assert weighted[name][0] == pytest.approx(drawn[name], abs=1e-12, nan_ok=True)


@pytest.mark.parametrize("task", TASKS)
def test_the_interval_holds_the_estimate_and_narrows_as_n_grows(task):
    widths = []
    for n in (100, 1600):
        y, s = fake(task, n, seed=1)
        point, ci = classification_metrics(y, s, task), bootstrap_ci(y, s, task, seed=3)
        assert set(ci) == set(METRICS)
        for name in METRICS:
            low, high = ci[name]
            assert low <= point[name] <= high, (name, low, point[name], high)
        widths.append(ci["auc"][1] - ci["auc"][0])
    assert widths[1] < 0.6 * widths[0]  # about 1/sqrt(16) = 0.25 expected


def test_the_bootstrap_is_stratified_and_seeded():
    y, s = fake("multi-class", 200)
    assert bootstrap_ci(y, s, seed=5) == bootstrap_ci(y, s, seed=5)
    assert bootstrap_ci(y, s, seed=5) != bootstrap_ci(y, s, seed=6)
    # Stratified: a classifier that is right on class 0 only has a fixed share of class 0
    # in every resample, so its balanced accuracy cannot vary at all.
    y = np.repeat([0, 1], [30, 70])
    scores = np.eye(2)[np.zeros(100, int)]
    assert bootstrap_ci(y, scores)["balanced_acc"] == (0.5, 0.5)
    assert bootstrap_ci(y, scores)["acc"] == (0.3, 0.3)


def test_a_stratified_sample_keeps_every_class():
    groups = np.repeat(np.arange(6), [1, 2, 50, 300, 7, 1000])
    for seed in range(5):
        idx = stratified_sample(groups, 20, seed)
        counts = np.bincount(groups[idx], minlength=6)
        assert counts.tolist() == [1, 2, 20, 20, 7, 20]
        assert len(set(idx.tolist())) == len(idx)
    assert stratified_sample(groups, None).tolist() == list(range(len(groups)))
    assert stratified_sample(groups, 20, 0).tolist() != stratified_sample(groups, 20, 1).tolist()


def test_multi_label_strata_are_the_first_finding():
    assert strata([[0, 0, 0], [0, 1, 1], [1, 0, 1]], MULTI_LABEL).tolist() == [0, 2, 1]
    assert strata([[2], [0]], "multi-class").tolist() == [2, 0]


@pytest.mark.parametrize(
    "call",
    [
        lambda: classification_metrics([0, 1], [[1, 0], [0, 1]], task="regression"),
        lambda: classification_metrics([0, 1, 1], [[1, 0], [0, 1]]),
        lambda: classification_metrics([0, 3], [[1, 0], [0, 1]]),
        lambda: classification_metrics([0, 1], [[1, np.nan], [0, 1]]),
        lambda: bootstrap_ci([0, 1], [[1, 0], [0, 1]], n_resamples=3),
        lambda: bootstrap_ci([0, 1], [[1, 0], [0, 1]], level=95),
        lambda: stratified_sample([0, 1], 0),
        lambda: stratified_sample([0, 1], 1, seed=1.5),
        lambda: bootstrap_ci([0, 1], [[1, 0], [0, 1]], seed=-1),
        lambda: bootstrap_ci([0, 1], [[1, 0], [0, 1]], seed="abc"),
        lambda: bootstrap_ci([0, 1], [[1, 0], [0, 1]], seed=True),
        lambda: classification_metrics([[0, 2]], [[0.1, 0.9]], MULTI_LABEL),
        lambda: classification_metrics([[0, 1]], [[0.1, 0.9, 0.3]], MULTI_LABEL),
        lambda: classification_metrics([0, 2], [[0.1, 0.2, 0.7]] * 2, "binary-class"),
        lambda: classification_metrics([0.7, 1.2], [[0.1, 0.9]] * 2),
        lambda: classification_metrics([0, -1], [[0.1, 0.9]] * 2),
    ],
)
def test_bad_input_is_an_mmkd_argument_error(call):
    with pytest.raises(ArgumentError) as info:
        call()
    assert isinstance(info.value, MMKDError) and isinstance(info.value, ValueError)


def test_an_undefined_auc_is_nan_not_an_error():
    m = classification_metrics([0, 0, 0], [[0.9, 0.1, 0], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    assert np.isnan(m["auc"]) and m["acc"] == pytest.approx(2 / 3)


def test_sampling_weights_restore_the_class_mix_of_the_whole_set():
    y = np.repeat([0, 1], [90, 10])
    always_zero = np.eye(2)[np.zeros(100, int)]
    assert classification_metrics(y, always_zero)["acc"] == pytest.approx(0.9)
    idx = stratified_sample(y, 10)  # 10 of each class
    w = sampling_weights(y, idx)
    assert w.tolist() == [9.0] * 10 + [1.0] * 10
    assert classification_metrics(y[idx], always_zero[idx])["acc"] == pytest.approx(0.5)
    assert classification_metrics(y[idx], always_zero[idx], weights=w)["acc"] == pytest.approx(0.9)
    low, high = bootstrap_ci(y[idx], always_zero[idx], weights=w)["acc"]
    assert low == pytest.approx(0.9) and high == pytest.approx(0.9)  # stratified: no spread


def test_an_interval_is_nan_when_the_metric_is_often_undefined():
    # Label 1 has one positive, in the stratum of label 0: most resamples lose it.
    y = np.array([[1, 1]] + [[1, 0]] * 3 + [[0, 0]] * 4)
    s = np.random.default_rng(0).random(y.shape)
    ci = bootstrap_ci(y, s, MULTI_LABEL)
    assert np.isnan(ci["auc"]).all() and not np.isnan(ci["acc"]).any()


def test_the_paired_bootstrap_sees_a_difference_that_overlapping_intervals_hide():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    hard = rng.normal(size=120)  # shared per-image difficulty: both models' errors follow it
    a = np.c_[np.zeros(120), np.where(y == 1, 0.9, 0) + hard]
    b = np.c_[np.zeros(120), np.where(y == 1, 0.7, 0) + hard + 0.05 * rng.normal(size=120)]
    ci_a, ci_b = bootstrap_ci(y, a, seed=1)["auc"], bootstrap_ci(y, b, seed=1)["auc"]
    assert ci_a[0] < ci_b[1]  # the two intervals overlap
    low, high = bootstrap_ci(y, a, seed=1, versus=b)["auc"]
    point = classification_metrics(y, a)["auc"] - classification_metrics(y, b)["auc"]
    assert 0 < low <= point <= high  # ... but the paired interval of the difference excludes 0
    assert bootstrap_ci(y, a, versus=a)["auc"] == (0.0, 0.0)
