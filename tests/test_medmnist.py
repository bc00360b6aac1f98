"""MedMNIST+ on synthetic files in the real layout: the official evaluator's numbers, stratified
samples, downloads (local server), the offline error, the embedding cache, probes, three models."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from support import dead_url, write_medmnist

from mmkd_utils.errors import ArgumentError, DatasetNotFoundError, MMKDError
from mmkd_utils.tasks.metrics import METRICS, classification_metrics
from mmkd_utils.tasks.probe import FIT

medmnist = pytest.importorskip("medmnist")
mm = pytest.importorskip("mmkd_utils.tasks.medmnist")

#: One dataset of each MedMNIST task type.
KINDS = {
    "binary-class": "pneumoniamnist",
    "multi-class": "dermamnist",
    "multi-label, binary-class": "chestmnist",
    "ordinal-regression": "retinamnist",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("medmnist")
    for flag in KINDS.values():
        write_medmnist(folder, flag, counts=(3, 2, 8))
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One embedding cache for the module's tests that do not test the cache itself."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.mark.parametrize("task", list(KINDS))
def test_acc_and_auc_agree_with_the_official_evaluator(tiny_model, root, cache, task):
    flag = KINDS[task]
    assert medmnist.INFO[flag]["task"] == task
    result = mm.evaluate_medmnist(tiny_model, flag, size=28, root=root, cache=cache)
    official = medmnist.Evaluator(flag, "test", size=28, root=str(root)).evaluate(result.scores)
    assert result.metrics["auc"] == pytest.approx(official.AUC, abs=1e-9)
    assert result.metrics["acc"] == pytest.approx(official.ACC, abs=1e-9)
    with np.load(root / f"{flag}.npz") as npz:
        assert np.array_equal(result.labels, npz["test_labels"])  # as the file stores them
    n_columns = len(medmnist.INFO[flag]["label"])
    assert result.scores.shape == (len(result.labels), n_columns)
    if task != "multi-label, binary-class":
        assert np.allclose(result.scores.sum(axis=1), 1.0)
    assert set(result.metrics) == set(result.ci) == set(METRICS)
    for name, (low, high) in result.ci.items():
        assert low <= result.metrics[name] <= high or np.isnan(result.metrics[name])


def test_the_scores_are_the_models_zero_shot_probabilities(tiny_model, root, cache):
    result = mm.evaluate_medmnist(tiny_model, "dermamnist", size=28, root=root, cache=cache)
    with np.load(root / "dermamnist.npz") as npz:
        images = list(npz["test_images"][result.indices[:3]])
    bank = mm.get_task("dermamnist")
    prompts = {c: list(bank.synonyms[c][1:]) for c in bank.class_names}  # synonyms only
    classes = {names[0]: names[1:] for names in prompts.values()}
    expected = tiny_model.zero_shot(images, tiny_model.classifier(classes, bank.templates))
    assert np.allclose(result.scores[:3], expected.double().numpy(), atol=1e-5)


def test_chestmnist_is_scored_per_finding(tiny_model, root):
    feats = torch.nn.functional.normalize(torch.randn(5, tiny_model.embed_dim), dim=-1).numpy()
    scores = mm.zero_shot_scores(tiny_model, "chestmnist", feats)
    assert scores.shape == (5, 14)
    bank = mm.get_task("chestmnist_effusion")
    pair = tiny_model.classifier(
        {s[1]: s[2:] for s in bank.synonyms.values()}, bank.templates
    ).weights
    expected = (tiny_model.logit_scale * torch.from_numpy(feats) @ pair.T).double().softmax(-1)
    assert np.allclose(scores[:, 2], expected[:, 1].numpy())  # effusion: label 2, "X" second


def test_max_per_class_is_a_stratified_sample_that_keeps_every_class(tiny_model, tmp_path):
    write_medmnist(tmp_path, "pathmnist", counts=(2, 2, 12))
    for seed in (0, 1):
        result = mm.evaluate_medmnist(
            tiny_model, "pathmnist", size=28, root=tmp_path, max_per_class=5, seed=seed
        )
        assert np.bincount(result.labels.ravel(), minlength=9).tolist() == [5] * 9
    other = mm.evaluate_medmnist(tiny_model, "pathmnist", size=28, root=tmp_path, max_per_class=5)
    assert not np.array_equal(result.indices, other.indices)  # seed 1 vs seed 0
    full = mm.evaluate_medmnist(tiny_model, "pathmnist", size=28, root=tmp_path)
    assert len(full.labels) == 9 * 12


def test_a_missing_file_offline_says_what_to_download_and_where(monkeypatch, tmp_path):
    info = dict(medmnist.INFO["breastmnist"], url_64=dead_url("/breastmnist_64.npz"))
    monkeypatch.setitem(medmnist.INFO, "breastmnist", info)
    with pytest.raises(DatasetNotFoundError) as caught:
        mm.medmnist_file("breastmnist", 64, root=tmp_path)
    message = str(caught.value)
    assert "breastmnist_64.npz" in message and info["url_64"] in message
    assert str(tmp_path / "breastmnist_64.npz") in message and info["MD5_64"] in message
    assert isinstance(caught.value, MMKDError) and isinstance(caught.value, FileNotFoundError)
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "breastmnist_64.npz.lock"])


def test_the_default_folder_is_in_the_cache_home(monkeypatch, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("MMKD_HOME", str(home))
    monkeypatch.setattr(medmnist.info, "DEFAULT_ROOT", str(tmp_path / "package_root"))
    write_medmnist(home / "medmnist", "breastmnist")
    assert mm.medmnist_file("breastmnist", 28) == home / "medmnist" / "breastmnist.npz"
    # A file the medmnist package already downloaded is used where it is.
    theirs = write_medmnist(tmp_path / "package_root", "bloodmnist")
    assert mm.medmnist_file("bloodmnist", 28) == theirs


def test_a_download_is_md5_checked_and_written_whole(server, monkeypatch, tmp_path):
    payload = write_medmnist(tmp_path / "source", "breastmnist", size=64).read_bytes()
    server.set("/good.npz", payload)
    server.set("/bad.npz", payload[:-10] + b"0123456789")
    good = dict(
        medmnist.INFO["breastmnist"],
        url_64=server.url("/good.npz"),
        MD5_64=hashlib.md5(payload).hexdigest(),
    )
    monkeypatch.setitem(medmnist.INFO, "breastmnist", good)
    path = mm.medmnist_file("breastmnist", 64, root=tmp_path / "data")
    assert path.read_bytes() == payload
    assert mm.load_split(path, "test").shape == (6, 1)
    monkeypatch.setitem(medmnist.INFO, "breastmnist", dict(good, url_64=server.url("/bad.npz")))
    with pytest.raises(DatasetNotFoundError, match="MD5"):
        mm.medmnist_file("breastmnist", 64, root=tmp_path / "other")
    left = [p.name for p in (tmp_path / "other").iterdir()]
    assert left == ["breastmnist_64.npz.lock"]  # nothing half-written is kept


def test_the_embedding_cache_is_reused_on_the_second_run(tiny_model, tmp_path, monkeypatch):
    write_medmnist(tmp_path, "dermamnist")
    first = mm.evaluate_medmnist(tiny_model, "dermamnist", size=28, root=tmp_path)
    assert first.details["from_cache"] == 0

    def no_images(path, split, what="labels", rows=None):
        assert what == "labels", "a cached split must not be decoded again"
        return real(path, split, what, rows)

    real = mm.load_split
    monkeypatch.setattr(mm, "load_split", no_images)
    second = mm.evaluate_medmnist(tiny_model, "dermamnist", size=28, root=tmp_path)
    assert second.details["from_cache"] == len(second.labels) == len(first.labels)
    assert np.allclose(second.scores, first.scores, atol=1e-6)
    monkeypatch.setattr(mm, "load_split", real)
    # A new file under the same name (other images) is not served from the old cache.
    write_medmnist(tmp_path, "dermamnist", counts=(6, 4, 4))
    third = mm.evaluate_medmnist(tiny_model, "dermamnist", size=28, root=tmp_path)
    assert third.details["from_cache"] == 0 and len(third.labels) == 7 * 4


def test_the_cache_keeps_finished_chunks_and_skips_broken_parts(tiny_model, tmp_path, monkeypatch):
    path = write_medmnist(tmp_path, "breastmnist")
    monkeypatch.setattr(mm, "CHUNK", 4)  # 6 test images: two chunks, two part files
    first = mm.split_embeddings(tiny_model, path, "test", np.arange(6))[0]
    parts = sorted((mm.cache_folder(tiny_model) / "medmnist" / "breastmnist_test").glob("*.npz"))
    assert len(parts) == 2
    parts[0].write_bytes(b"half a file")  # as if a crash had cut it (it never is: renamed whole)
    again, from_cache = mm.split_embeddings(tiny_model, path, "test", np.arange(6))
    assert from_cache in (2, 4) and np.allclose(again, first, atol=1e-6)
    assert mm.split_embeddings(tiny_model, path, "test", np.arange(6))[1] == 6


def test_an_interrupted_run_keeps_the_chunks_it_finished(tiny_model, tmp_path, monkeypatch):
    path = write_medmnist(tmp_path, "breastmnist")
    monkeypatch.setattr(mm, "CHUNK", 4)
    real, calls = mm.embed_arrays, []

    def crash_on_second_chunk(model, images, **kw):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, images, **kw)

    monkeypatch.setattr(mm, "embed_arrays", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        mm.split_embeddings(tiny_model, path, "test", np.arange(6))
    monkeypatch.setattr(mm, "embed_arrays", real)
    assert mm.split_embeddings(tiny_model, path, "test", np.arange(6))[1] == 4


def test_few_shot_probes_use_k_per_class_and_choose_c_on_val(tiny_model, tmp_path):
    write_medmnist(tmp_path, "pathmnist", counts=(6, 4, 3))
    runs = mm.few_shot_medmnist(
        tiny_model,
        "pathmnist",
        shots=[1, 4, "all"],
        seeds=[0, 1],
        size=28,
        root=tmp_path,
        Cs=[0.01, 1.0],
    )
    assert [(r.details["shots"], r.details["seed"]) for r in runs] == [
        (1, 0),
        (1, 1),
        (4, 0),
        (4, 1),
        ("all", 0),  # "all": every seed draws the same images
    ]
    with np.load(tmp_path / "pathmnist.npz") as npz:
        train = npz["train_labels"].ravel()
    for r in runs:
        counts = np.bincount(train[r.details["train"]], minlength=9)
        k = r.details["shots"]
        assert counts.tolist() == [6 if k == "all" else k] * 9
        assert r.details["C"] in (0.01, 1.0) and r.method == "linear probe"
        assert r.scores.shape == (27, 9) and np.allclose(r.scores.sum(axis=1), 1)
    assert not np.array_equal(runs[0].details["train"], runs[1].details["train"])
    # C is the one with the best AUC on the official val split.
    path, run = tmp_path / "pathmnist.npz", runs[2]
    x = mm.split_embeddings(tiny_model, path, "train", run.details["train"])[0]
    x_val, y_val = (
        mm.split_embeddings(tiny_model, path, "val", np.arange(36))[0],
        mm.load_split(path, "val"),
    )
    val_auc = {
        c: classification_metrics(
            y_val,
            LogisticRegression(C=c, **FIT).fit(x, train[run.details["train"]]).predict_proba(x_val),
        )["auc"]
        for c in (0.01, 1.0)
    }
    assert run.details["C"] == max(val_auc, key=val_auc.get) and run.details["converged"]
    # The synthetic classes differ in brightness: a probe on all images separates them.
    assert runs[-1].metrics["auc"] > 0.9  # chance: 0.5


def test_few_shot_works_for_multi_label_chestmnist(tiny_model, root, cache):
    (run,) = mm.few_shot_medmnist(
        tiny_model, "chestmnist", shots=[2], seeds=[0], size=28, root=root, Cs=[1.0], cache=cache
    )
    with np.load(root / "chestmnist.npz") as npz:
        y = npz["train_labels"][run.details["train"]]
    assert (y.sum(axis=0) >= 2).all() and (~y.any(axis=1)).sum() >= 2
    assert run.scores.shape == (len(run.labels), 14) and run.task == "multi-label, binary-class"


def test_three_models_through_the_same_call(three_models, root, cache):
    results = [
        mm.evaluate_medmnist(model, "pneumoniamnist", size=28, root=root, cache=cache)
        for model in three_models.values()
    ]
    diff, low, high = mm.paired_difference(results[0], results[1], "auc")
    assert diff == pytest.approx(results[0].metrics["auc"] - results[1].metrics["auc"])
    assert low <= diff <= high
    other = mm.evaluate_medmnist(
        three_models["biomedclip"],
        "pneumoniamnist",
        size=28,
        root=root,
        cache=cache,
        max_per_class=3,
    )
    with pytest.raises(ArgumentError):
        mm.paired_difference(results[0], other)
    with pytest.raises(ArgumentError):
        mm.paired_difference(results[0], results[1], "kappa")
    frame = mm.results_frame(results)
    assert list(frame.columns) == list(mm.COLUMNS)
    assert sorted(frame["model"].unique()) == sorted(three_models)
    assert len(frame) == 3 * len(METRICS)
    assert frame[["low", "high"]].notna().all().all()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(flag="tissuemnist"),
        dict(flag="pathmnist3d"),
        dict(flag="no such"),
        dict(flag="dermamnist", split="validation"),
        dict(flag="dermamnist", size=32),
        dict(flag="dermamnist", max_per_class=0),
    ],
)
def test_bad_arguments_are_argument_errors(tiny_model, root, kwargs):  # before any work
    with pytest.raises(ArgumentError):
        mm.evaluate_medmnist(tiny_model, **{"size": 28, "root": root, **kwargs})


def test_a_file_that_is_not_medmnist_is_refused(tmp_path):
    (tmp_path / "breastmnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(DatasetNotFoundError, match="breastmnist.npz"):
        mm.load_split(mm.medmnist_file("breastmnist", 28, tmp_path), "test")
    np.savez(tmp_path / "pathmnist.npz", images=np.zeros(3))
    with pytest.raises(DatasetNotFoundError, match="test_labels"):
        mm.load_split(tmp_path / "pathmnist.npz", "test")


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_rows_of_a_split_are_streamed_from_the_file(tmp_path, save):
    path = write_medmnist(tmp_path, "dermamnist", counts=(3, 2, 5))
    with np.load(path) as npz:
        arrays = dict(npz)
    save(path, **arrays)  # stored or deflated members: both are read row by row
    rows = [17, 3, 3, 30, 0]
    part = mm.load_split(path, "test", "images", rows)
    assert np.array_equal(part, arrays["test_images"][rows])
    assert np.array_equal(mm.load_split(path, "train", "labels"), arrays["train_labels"])


def test_rows_are_checked_and_may_repeat_or_come_in_any_order(tmp_path):
    path = write_medmnist(tmp_path, "breastmnist")
    full = mm.load_split(path, "test", "images")
    assert np.array_equal(mm.load_split(path, "test", "images", [5, 1, 5, 0]), full[[5, 1, 5, 0]])
    for rows in ([-1], [6], [0.5], [[0, 1]]):
        with pytest.raises(ArgumentError):
            mm.load_split(path, "test", "images", rows)
    with pytest.raises(ArgumentError):
        mm.load_split(path, "validation")


def test_a_fortran_order_array_is_read_correctly(tmp_path):
    path = write_medmnist(tmp_path, "breastmnist")
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["test_images"] = np.asfortranarray(arrays["test_images"])
    np.savez(path, **arrays)
    part = mm.load_split(path, "test", "images", [4, 2])
    assert np.array_equal(part, arrays["test_images"][[4, 2]])


def test_a_capped_sample_estimates_the_whole_splits_metrics(tiny_model, tmp_path):
    write_medmnist(tmp_path, "pneumoniamnist", counts=(2, 2, 30))
    with np.load(tmp_path / "pneumoniamnist.npz") as npz:
        arrays = dict(npz)
    keep = np.r_[np.arange(30), 30 + np.arange(6)]  # 30 normal, 6 pneumonia: imbalanced
    arrays["test_images"], arrays["test_labels"] = (
        arrays["test_images"][keep],
        arrays["test_labels"][keep],
    )
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    full = mm.evaluate_medmnist(tiny_model, "pneumoniamnist", size=28, root=tmp_path)
    capped = mm.evaluate_medmnist(
        tiny_model, "pneumoniamnist", size=28, root=tmp_path, max_per_class=6
    )
    assert np.bincount(capped.labels.ravel()).tolist() == [6, 6]
    # Weighted by N/n, the capped sample's accuracy is the full set's expectation: compare with
    # the mean over classes of per-class accuracy, weighted by the class sizes of the full set.
    pred = (capped.scores[:, 1] > 0.5).astype(int)
    per_class = [np.mean(pred[capped.labels.ravel() == c] == c) for c in (0, 1)]
    assert capped.metrics["acc"] == pytest.approx((30 * per_class[0] + 6 * per_class[1]) / 36)
    assert full.metrics["auc"] == pytest.approx(
        medmnist.Evaluator("pneumoniamnist", "test", size=28, root=str(tmp_path))
        .evaluate(full.scores)
        .AUC
    )


def test_chestmnist_max_per_class_keeps_every_first_finding(tiny_model, root, cache):
    result = mm.evaluate_medmnist(
        tiny_model, "chestmnist", size=28, root=root, max_per_class=3, cache=cache
    )
    every = np.bincount(mm.strata(mm.load_split(root / "chestmnist.npz", "test"), mm.MULTI_LABEL))
    groups = mm.strata(result.labels, mm.MULTI_LABEL)
    assert np.bincount(groups, minlength=len(every)).tolist() == np.minimum(every, 3).tolist()
    assert (every > 0).sum() > 10


def test_k_shot_sets_grow_by_adding_images(tiny_model, root, cache):
    runs = mm.few_shot_medmnist(
        tiny_model,
        "dermamnist",
        shots=[1, 2, 3],
        seeds=[4],
        size=28,
        root=root,
        Cs=[1.0],
        cache=cache,
        n_resamples=10,
    )
    sets = [set(r.details["train"].tolist()) for r in runs]
    assert sets[0] < sets[1] < sets[2]


def test_few_shot_checks_its_arguments_before_any_download(tiny_model, tmp_path):
    for bad in (dict(shots=[0]), dict(shots=[]), dict(seeds=[0.5]), dict(Cs=[]), dict(Cs=[-1.0])):
        with pytest.raises(ArgumentError):  # tmp_path is empty: a download would be tried next
            mm.few_shot_medmnist(tiny_model, "dermamnist", size=28, root=tmp_path, **bad)


def test_few_shot_with_a_capped_pool_uses_the_same_test_images_as_zero_shot(
    tiny_model, root, cache
):
    zero = mm.evaluate_medmnist(
        tiny_model, "dermamnist", size=28, root=root, max_per_class=3, cache=cache
    )
    (run,) = mm.few_shot_medmnist(
        tiny_model,
        "dermamnist",
        shots=["all"],
        seeds=[0],
        size=28,
        root=root,
        max_per_class=2,
        Cs=[1.0],
        cache=cache,
        n_resamples=10,
    )
    assert len(run.details["train"]) == 7 * 2
    assert np.array_equal(
        run.indices,
        mm.evaluate_medmnist(
            tiny_model, "dermamnist", size=28, root=root, max_per_class=2, cache=cache
        ).indices,
    )
    assert len(zero.indices) == 7 * 3
