"""Prompt banks: the built-in YAML tasks, their validation, lookup and use in classifiers."""

from __future__ import annotations

import importlib.resources
import textwrap

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TINY, fresh_fact

from mmkd_utils import PromptError
from mmkd_utils.prompts import (
    MODALITY_TEMPLATES,
    BankError,
    Task,
    get_task,
    list_modalities,
    list_tasks,
    load_bank,
    modality_task,
)
from mmkd_utils.prompts import banks as banks_module
from mmkd_utils.prompts.text import class_prompts

MODALITIES = [
    "chest_xray",
    "ct",
    "dermatology",
    "endoscopy",
    "fundus",
    "histopathology",
    "mri",
    "oct",
    "ultrasound",
]

#: The public benchmark tasks and their exact classes, in order.
BENCHMARKS = {
    "chest_xray/chexpert_5x200": (
        "atelectasis",
        "cardiomegaly",
        "consolidation",
        "edema",
        "pleural effusion",
    ),
    "chest_xray/rsna_pneumonia": ("normal", "pneumonia"),
    "fundus/diabetic_retinopathy": (
        "no diabetic retinopathy",
        "mild diabetic retinopathy",
        "moderate diabetic retinopathy",
        "severe diabetic retinopathy",
        "proliferative diabetic retinopathy",
    ),
    "fundus/glaucoma": ("no glaucoma", "glaucoma"),
    "histopathology/lc25000_lung": (
        "adenocarcinoma",
        "benign lung tissue",
        "squamous cell carcinoma",
    ),
    "histopathology/lc25000_colon": ("adenocarcinoma", "benign colonic tissue"),
    "histopathology/nct_crc_he": (
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ),
    "histopathology/pcam": ("lymph node", "lymph node with metastatic tumour"),
    "mri/brain_tumor": ("glioma", "meningioma", "pituitary tumour", "no tumour"),
    "ultrasound/breast_ultrasound": ("normal", "benign", "malignant"),
    "dermatology/ham10000": (
        "melanocytic nevus",
        "melanoma",
        "benign keratosis",
        "basal cell carcinoma",
        "actinic keratosis",
        "dermatofibroma",
        "vascular lesion",
    ),
    "oct/oct2017": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "endoscopy/kvasir": (
        "esophagitis",
        "polyp",
        "ulcerative colitis",
        "normal z-line",
        "normal pylorus",
        "normal cecum",
    ),
    "ct/ct_organs": ("liver", "kidney", "lung", "spleen", "pancreas", "bladder", "heart"),
}

#: Tasks that reproduce a published evaluation with its own whole prompts: one template "{}".
PROTOCOL_TASKS = {"histopathology/lc25000_lung_protocol", "histopathology/lc25000_colon_protocol"}

BUILTIN_FILES = sorted(
    (
        f
        for f in importlib.resources.files("mmkd_utils.prompts").iterdir()
        if f.name.endswith(".yaml")
    ),
    key=lambda f: f.name,
)

VALID = """\
modality: my modality
modality_id: mine
description: images of my own data
tasks:
  t:
    classes:
      a: [alpha]
      b: []
    templates:
      - "An image of {}."
      - "Photo: {}."
"""


def _write(tmp_path, text, name="bank.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the built-in banks -----------------------------------------------------------------


def test_all_nine_modalities_have_a_bank_and_a_task():
    assert list_modalities() == MODALITIES
    assert [f.name for f in BUILTIN_FILES] == [f"{m}.yaml" for m in MODALITIES]
    for modality in MODALITIES:
        tasks = list_tasks(modality)
        assert tasks, modality
        assert all(name.startswith(f"{modality}/") for name in tasks)
    everything = list_tasks()
    assert everything[-1] == "modality"
    assert sorted(everything[:-1]) == sorted(t for m in MODALITIES for t in list_tasks(m))


@pytest.mark.parametrize("name", list_tasks())
def test_every_builtin_task_is_well_formed(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    assert len(task.class_names) >= 2
    if name in PROTOCOL_TASKS:
        assert task.templates == ("{}",)
    else:
        assert len(task.templates) >= 5, "built-in tasks have at least five templates"
    assert all(t.count("{}") == 1 for t in task.templates)
    assert len(set(task.templates)) == len(task.templates), "a template is repeated"
    assert "a photo of a {}" not in {t.lower().rstrip(".") for t in task.templates}
    assert task.description and task.source and task.notes
    assert tuple(task.synonyms) == task.class_names
    owner: dict[str, str] = {}
    for cls in task.class_names:
        names = task.synonyms[cls]
        assert names[0] == cls and len(set(names)) == len(names)
        for n in names:  # no synonym describes two classes of one task
            assert n.casefold() not in owner, (n, owner.get(n.casefold()), cls)
            owner[n.casefold()] = cls
        prompts = task.prompts(cls)
        assert prompts == list(class_prompts(names, task.templates))
        assert len(prompts) == len(names) * len(task.templates)


@pytest.mark.parametrize("file", BUILTIN_FILES, ids=lambda f: f.name)
def test_builtin_files_load_with_load_bank_like_the_cache(file):
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    assert data["modality_id"] == file.name.removesuffix(".yaml")
    assert data["description"] and data["identification"]["names"]
    with importlib.resources.as_file(file) as path:
        tasks = load_bank(path)
    assert [t.name for t in tasks] == list_tasks(data["modality_id"])
    assert tasks == [get_task(t.name) for t in tasks]


@pytest.mark.parametrize(("name", "classes"), list(BENCHMARKS.items()))
def test_benchmark_tasks_have_exactly_the_listed_classes(name, classes):
    task = get_task(name)
    assert task.class_names == classes
    assert task.modality_id == name.split("/")[0]


def test_modality_task_has_one_class_per_modality():
    task = modality_task()
    assert task == get_task("modality")
    assert len(task.class_names) == 9
    displayed = [get_task(list_tasks(m)[0]).modality for m in MODALITIES]
    assert list(task.class_names) == displayed
    assert task.templates == MODALITY_TEMPLATES and len(task.templates) >= 5
    assert "radiograph of the chest" in task.synonyms["chest X-ray"]
    assert "chest radiograph" in task.synonyms["chest X-ray"]


def test_banks_are_cached_and_not_read_at_import(fresh_imports):
    assert fresh_fact(fresh_imports, "prompts")["banks_read_at_import"] == 0
    assert fresh_fact(fresh_imports, "banks") == {"before_use": 0, "after_use": 1}
    assert banks_module._builtin_banks() is banks_module._builtin_banks()


def test_returned_tasks_cannot_change_the_cache():
    task = get_task("chexpert_5x200")
    task.synonyms["edema"] = ("changed",)
    with pytest.raises(AttributeError):
        task.templates = ()  # type: ignore[misc]
    assert get_task("chexpert_5x200").synonyms["edema"][0] == "edema"
    assert hash(task) == hash(get_task("chexpert_5x200"))
    assert repr(task) == "Task('chest_xray/chexpert_5x200', 5 classes, 8 templates)"


# -- lookup -----------------------------------------------------------------------------


def test_get_task_by_full_and_bare_name():
    full = get_task("chest_xray/chexpert_5x200")
    assert get_task("chexpert_5x200") == full
    assert get_task("  CheXpert_5x200 ") == full
    assert list_tasks("chest X-ray") == list_tasks("chest_xray")


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("chexpert", "chest_xray/chexpert_5x200"),
        ("chest_xray/chexpret_5x200", "chest_xray/chexpert_5x200"),
        ("glaucom", "fundus/glaucoma"),
        ("lc25000", "histopathology/lc25000_colon"),
    ],
)
def test_unknown_task_suggests_close_names(name, suggestion):
    with pytest.raises(PromptError, match="Unknown task") as info:
        get_task(name)
    assert "Did you mean" in str(info.value) and repr(suggestion) in str(info.value)


def test_unknown_without_close_match_lists_all_tasks_and_modalities():
    with pytest.raises(PromptError, match="Known tasks: chest_xray/chexpert_5x200"):
        get_task("qqqqqq")
    with pytest.raises(PromptError, match="Did you mean 'chest_xray'"):
        list_tasks("xray")
    with pytest.raises(PromptError, match="not int"):
        get_task(3)  # type: ignore[arg-type]


def test_ambiguous_bare_name(monkeypatch):
    lung = get_task("lc25000_lung")
    index = {"a/same": lung, "b/same": lung}
    monkeypatch.setattr(banks_module, "_task_index", lambda: index)
    with pytest.raises(PromptError, match="ambiguous.*'a/same' or 'b/same'"):
        get_task("same")


def test_prompts_of_an_unknown_class():
    with pytest.raises(PromptError, match="Did you mean 'edema'"):
        get_task("chexpert_5x200").prompts("oedema")


# -- user banks: validation --------------------------------------------------------------


def test_a_valid_user_bank_may_have_few_templates(tmp_path):
    (task,) = load_bank(_write(tmp_path, VALID))
    assert task.name == "mine/t" and task.modality == "my modality"
    assert task.synonyms == {"a": ("a", "alpha"), "b": ("b",)}
    assert task.templates == ("An image of {}.", "Photo: {}.")
    assert task.source == task.notes == task.description == ""


def test_classes_may_be_a_plain_list(tmp_path):
    text = VALID.replace("      a: [alpha]\n      b: []\n", "      - a\n      - b\n")
    (task,) = load_bank(_write(tmp_path, text))
    assert task.synonyms == {"a": ("a",), "b": ("b",)}


BROKEN = {
    "missing templates": (
        VALID.replace('    templates:\n      - "An image of {}."\n      - "Photo: {}."\n', ""),
        "tasks.t.templates",
        "required field 'templates' is missing",
    ),
    "missing modality_id": (
        VALID.replace("modality_id: mine\n", ""),
        "modality_id",
        "required field 'modality_id' is missing",
    ),
    "template without {}": (
        VALID.replace('"Photo: {}."', '"Photo."'),
        "tasks.t.templates",
        "exactly once",
    ),
    "template with {} twice": (
        VALID.replace('"Photo: {}."', '"{} and {}"'),
        "tasks.t.templates",
        "exactly once",
    ),
    "unquoted {} template": (
        VALID.replace('"Photo: {}."', "{}"),
        "tasks.t.templates[1]",
        "must be quoted",
    ),
    "duplicate class": (
        VALID.replace("b: []", "b: []\n      a: []"),
        "tasks.t.classes.a",
        "appears twice",
    ),
    "duplicate class, other case": (
        VALID.replace("b: []", "A: []"),
        "tasks.t.classes.A",
        "duplicate class name 'A'",
    ),
    "duplicate class in a list": (
        VALID.replace("      a: [alpha]\n      b: []\n", "      - a\n      - a\n"),
        "tasks.t.classes[1]",
        "duplicate class name",
    ),
    "unknown top-level key": (VALID + "tempaltes: []\n", "tempaltes", "unknown key 'tempaltes'"),
    "unknown task key": (
        VALID.replace("    classes:", "    reference: x\n    classes:"),
        "tasks.t.reference",
        "unknown key 'reference'",
    ),
    "one class": (VALID.replace("      b: []\n", ""), "tasks.t.classes", "at least 2 classes"),
    "class name read as a bool": (
        VALID.replace("b: []", "no: []"),
        "tasks.t.classes.False",
        "quote it",
    ),
    "synonyms not a list": (
        VALID.replace("b: []", "b: beta"),
        "tasks.t.classes.b",
        "list of text",
    ),
    "empty synonym": (
        VALID.replace("[alpha]", "[alpha, ' ']"),
        "tasks.t.classes.a[1]",
        "empty or only whitespace",
    ),
    "templates not a list": (
        VALID.split("    templates:")[0] + '    templates: "{}"\n',
        "tasks.t.templates",
        "list of templates",
    ),
    "bad modality_id": (VALID.replace("mine", "My Mod"), "modality_id", "lowercase"),
    "bad task id": (VALID.replace("  t:\n", "  My Task:\n"), "tasks.My Task", "lowercase"),
    "modality not text": (VALID.replace("my modality", "[x]"), "modality", "expected text"),
    "no tasks": (
        VALID.split("tasks:")[0] + "tasks: []\n",
        "tasks",
        "expected a mapping",
    ),
    "a list, not a mapping": ("- a\n- b\n", "top level", "must be a mapping"),
    "empty file": ("", "top level", "the file is empty"),
}


@pytest.mark.parametrize(("text", "field", "message"), BROKEN.values(), ids=list(BROKEN))
def test_broken_banks_name_file_and_field(tmp_path, text, field, message):
    path = _write(tmp_path, text, "my_bank.yaml")
    with pytest.raises(BankError) as info:
        load_bank(path)
    err = info.value
    assert isinstance(err, PromptError)
    assert err.field == field and err.path == str(path)
    assert str(err).startswith(str(path)) and "my_bank.yaml" in str(err)
    assert f": {field}: " in str(err) and message in str(err), str(err)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (VALID.replace('"Photo: {}."', "{} on a chest X-ray."), 11),
        (VALID.replace("    classes:", "    classes: [a, b\n  x: y"), 7),
        ("modality: 'unterminated\n", 2),
    ],
    ids=["unquoted template", "unclosed list", "unterminated quote"],
)
def test_yaml_syntax_errors_name_file_and_line(tmp_path, text, line):
    path = _write(tmp_path, text, "broken.yaml")
    with pytest.raises(BankError, match="invalid YAML") as info:
        load_bank(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}, line {line}")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(BankError, match="no such prompt bank file"):
        load_bank(tmp_path / "absent.yaml")
    with pytest.raises(BankError, match="it is a folder"):
        load_bank(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes("modality: caf\xe9".encode("latin-1"))
    with pytest.raises(BankError, match="not UTF-8"):
        load_bank(tmp_path / "latin1.yaml")


def test_yaml_anchors_and_merge_keys_work(tmp_path):
    text = VALID + textwrap.indent(
        textwrap.dedent(
            """\
            u:
              <<: *base
              templates: ["Another {}."]
            """
        ),
        "  ",
    )
    text = text.replace("  t:\n", "  t: &base\n")
    first, second = load_bank(_write(tmp_path, text))
    assert second.name == "mine/u" and second.class_names == first.class_names
    assert second.templates == ("Another {}.",)


# -- property: random input validates or raises PromptError, nothing else -----------------

#: Mostly plausible names, sometimes any text (empty, whitespace, control characters).
#: YAML reads NEL, LS and PS as line breaks, which PyYAML's allow_unicode dump writes raw:
#: such a name cannot survive the dump/load round trip of this test (not of the loader).
_YAML_BREAKS = "\x85\u2028\u2029"
_names = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z '-]{0,10}[a-z]", fullmatch=True),
    st.text(st.characters(blacklist_characters=_YAML_BREAKS), max_size=12),
)
_filled = st.builds(lambda a, b: f"{a} {{}} {b}", _names, _names)
_templates = st.lists(
    st.one_of(_filled, _filled, _filled, _names),
    min_size=1,
    max_size=3,
)
_classes = st.one_of(
    st.dictionaries(
        st.one_of(_names, _names, _names, st.booleans(), st.integers()),
        st.one_of(st.lists(_names, max_size=3), st.none()),
        min_size=2,
        max_size=4,
    ),
    st.lists(_names, min_size=1, max_size=4),
)
_task_ids = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


def _bank(tasks: dict) -> dict:
    return {"modality": "random", "modality_id": "rnd", "description": "random", "tasks": tasks}


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tasks=st.dictionaries(
        _task_ids,
        st.fixed_dictionaries({"classes": _classes, "templates": _templates}),
        min_size=1,
        max_size=2,
    )
)
def test_random_classes_and_templates_validate_or_raise_prompt_error(tmp_path, tasks):
    path = _write(tmp_path, yaml.safe_dump(_bank(tasks), allow_unicode=True, sort_keys=False))
    try:
        loaded = load_bank(path)
    except PromptError as err:
        assert isinstance(err, BankError) and err.path == str(path)
        return
    assert [t.name for t in loaded] == [f"rnd/{task_id}" for task_id in tasks]
    for task, spec in zip(loaded, tasks.values(), strict=True):
        assert list(task.class_names) == list(spec["classes"])
        assert task.templates == tuple(spec["templates"])
        assert len(task.class_names) >= 2
        assert all(t.count("{}") == 1 for t in task.templates)
        for cls in task.class_names:
            assert task.prompts(cls)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.one_of(
        st.text(alphabet=st.sampled_from(list("ab:{}[]-'\"&*!|>#,\n\t ")), max_size=60),
        st.text(max_size=40),
        st.builds(lambda a, b: VALID[:a] + b + VALID[a:], st.integers(0, len(VALID)), _names),
    )
)
def test_random_files_never_raise_anything_but_prompt_error(tmp_path, text):
    try:
        load_bank(_write(tmp_path, text))
    except PromptError as err:
        assert isinstance(err, BankError)


# -- with the tiny model -----------------------------------------------------------------

IMAGES = [TINY / "images" / "rgb_noise.png", TINY / "images" / "gray_gradient.png"]


def test_tiny_model_classifier_from_a_task_name(tiny_model):
    clf = tiny_model.classifier("chest_xray/chexpert_5x200")
    assert len(clf) == 5 and clf.name == "chest_xray/chexpert_5x200"
    assert clf.class_names == BENCHMARKS["chest_xray/chexpert_5x200"]
    task = get_task("chest_xray/chexpert_5x200")
    assert clf.prompts[3] == tuple(task.prompts("edema"))
    assert tiny_model.classifier("chexpert_5x200") is clf  # same task, same cache entry
    probs = tiny_model.zero_shot([IMAGES[0]], clf)
    assert probs.shape == (1, 5)
    assert torch.allclose(probs.sum(dim=1), torch.ones(1), atol=1e-5)


def test_tiny_model_modality_task(tiny_model):
    clf = tiny_model.classifier("modality")
    assert len(clf) == 9
    probs = tiny_model.zero_shot(IMAGES, clf)
    assert probs.shape == (2, 9)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2), atol=1e-5)


def test_tiny_model_user_bank(tiny_model, tmp_path):
    (task,) = load_bank(_write(tmp_path, VALID))
    clf = tiny_model.classifier(task.synonyms, task.templates)
    assert clf.class_names == ("a", "b")
    assert clf.prompts[0] == tuple(task.prompts("a"))


def test_tiny_model_unknown_task_name(tiny_model):
    with pytest.raises(PromptError, match="Did you mean 'chest_xray/chexpert_5x200'"):
        tiny_model.classifier("chexpert")
