"""The MedMNIST+ tasks of the prompt banks against ``medmnist.INFO`` (issue 16, point 3).

A bank's class order is the order of the scores, so a MedMNIST task must list MedMNIST's
labels, in MedMNIST's order. Multi-label ChestMNIST is one binary task per finding,
``chestmnist_<label>``, with the finding second (the column MedMNIST scores).
"""

from __future__ import annotations

import importlib.resources

import pytest

from mmkd_utils.prompts import get_task, list_tasks, load_bank

medmnist = pytest.importorskip(
    "medmnist", reason="medmnist is not installed: pip install -e '.[medmnist]' (or '.[dev]')"
)

#: The single-label 2D datasets and the bank each one is in.
SINGLE_LABEL = {
    "pathmnist": "histopathology",
    "dermamnist": "dermatology",
    "octmnist": "oct",
    "pneumoniamnist": "chest_xray",
    "retinamnist": "fundus",
    "breastmnist": "ultrasound",
    "bloodmnist": "histopathology",
    "organamnist": "ct",
    "organcmnist": "ct",
    "organsmnist": "ct",
}
#: No modality of MMKD-CLIP covers it (fluorescence images of nuclei): see histopathology.yaml.
LEFT_OUT = {"tissuemnist"}


def labels(flag: str) -> tuple[str, ...]:
    """MedMNIST's label names of ``flag``, in label order (the keys are "0", "1", ...)."""
    names = medmnist.INFO[flag]["label"]
    return tuple(names[key] for key in sorted(names, key=int))


def medmnist_tasks() -> list[str]:
    return [name for name in list_tasks() if "mnist" in name.rsplit("/", 1)[-1]]


def test_every_2d_dataset_has_tasks_unless_left_out_on_purpose():
    flags_2d = {flag for flag in medmnist.INFO if not flag.endswith("3d")}
    assert flags_2d == set(SINGLE_LABEL) | {"chestmnist"} | LEFT_OUT
    found = {name.rsplit("/", 1)[-1].split("_")[0] for name in medmnist_tasks()}
    assert found == flags_2d - LEFT_OUT


@pytest.mark.parametrize(("flag", "modality"), list(SINGLE_LABEL.items()))
def test_single_label_task_has_medmnist_labels_in_order(flag, modality):
    task = get_task(f"{modality}/{flag}")
    assert task.class_names == labels(flag)
    if medmnist.INFO[flag]["task"] == "binary-class":
        assert len(task.class_names) == 2
    else:
        assert medmnist.INFO[flag]["task"] in ("multi-class", "ordinal-regression")


def test_chestmnist_is_one_binary_task_per_finding_in_label_order():
    assert medmnist.INFO["chestmnist"]["task"] == "multi-label, binary-class"
    findings = labels("chestmnist")
    assert len(findings) == 14
    names = [name for name in medmnist_tasks() if "/chestmnist_" in name]
    assert names == [f"chest_xray/chestmnist_{finding}" for finding in findings]
    for name, finding in zip(names, findings, strict=True):
        negative, positive = get_task(name).class_names
        assert finding in positive.split()  # "pleural" -> "pleural thickening"
        assert negative == f"no {positive}"


@pytest.mark.parametrize("name", medmnist_tasks())
def test_medmnist_task_is_documented_and_every_class_has_a_synonym(name):
    task = get_task(name)
    assert "MedMNIST v2 (Yang et al., Scientific Data, 2023), from" in task.source
    assert task.notes and task.description
    assert len(task.templates) >= 5
    assert all(template.count("{}") == 1 for template in task.templates)
    # A label such as "0" (RetinaMNIST) says nothing to a text encoder: a synonym must.
    assert all(len(task.synonyms[cls]) >= 2 for cls in task.class_names)


def test_banks_with_medmnist_tasks_load_with_load_bank():
    folder = importlib.resources.files("mmkd_utils.prompts")
    loaded = []
    for modality in sorted({name.split("/")[0] for name in medmnist_tasks()}):
        with importlib.resources.as_file(folder / f"{modality}.yaml") as path:
            tasks = load_bank(path)
        assert tasks == [get_task(name) for name in list_tasks(modality)]
        loaded += [task.name for task in tasks if "mnist" in task.name]
    assert loaded == medmnist_tasks()
