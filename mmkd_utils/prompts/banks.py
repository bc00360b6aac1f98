"""Prompt banks: zero-shot tasks per imaging modality, one YAML file each beside this module.

A bank (``chest_xray.yaml`` is a full example) has ``modality`` (a display name),
``modality_id`` (lowercase letters, digits and _), ``description``, optionally
``identification: {names: [other names]}``, and ``tasks: {task id: task}``. A task has
``classes`` (``{class: [synonyms]}`` or a list), ``templates`` (quoted, with ``{}`` once)
and optionally ``description``, ``source`` (the benchmark whose classes the task follows; the
templates are written in the style of its reports, not taken from it) and ``notes``. The task
``"modality"`` has one class per bank, with ``identification.names`` and ``description`` as
synonyms. Notebook 03 (section 3.1) writes and loads a complete small bank.
"""

import difflib
import functools
import importlib.resources
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from mmkd_utils.errors import BankError, PromptError
from mmkd_utils.prompts.text import check_templates, class_prompts, normalize_classes

MODALITY_TASK = "modality"
#: Templates of the modality task: they take a bare noun phrase, so they suit every modality.
MODALITY_TEMPLATES = (
    "A medical image: {}.",
    "Imaging modality: {}.",
    "Type of medical image: {}.",
    "Medical image category: {}.",
    "An example of {} from a clinical dataset.",
    "{}.",
)
_ID = re.compile(r"[a-z0-9][a-z0-9_]*\Z")


def _did_you_mean(word: Any, names: Iterable[str]) -> str:
    """`` Did you mean ...?`` with the names that contain ``word`` or are close to it, or ``""``."""
    names, key = list(names), str(word).strip().casefold()
    close = [name for name in names if key and key in name.casefold()]
    close = list(dict.fromkeys(close + difflib.get_close_matches(key, names, cutoff=0.5)))
    return f" Did you mean {' or '.join(map(repr, close[:5]))}?" if close else ""


@dataclass(frozen=True)
class Task:
    """A zero-shot task: class names, their synonyms (each starting with the name), templates.

    Example:
        >>> get_task("chest_xray/chexpert_5x200").synonyms["edema"]
        ('edema', 'pulmonary edema', 'pulmonary oedema')
    """

    name: str
    modality: str
    modality_id: str
    description: str
    source: str
    class_names: tuple[str, ...]
    synonyms: dict[str, tuple[str, ...]] = field(hash=False)
    templates: tuple[str, ...]
    notes: str = ""

    def __repr__(self) -> str:
        sizes = f"{len(self.class_names)} classes, {len(self.templates)} templates"
        return f"Task({self.name!r}, {sizes})"

    def prompts(self, class_name: str) -> list[str]:
        """Every template filled with every name (the class name and its synonyms) of one class.

        Example:
            >>> get_task("rsna_pneumonia").prompts("pneumonia")[0]
            'Chest X-ray: pneumonia.'
        """
        if class_name not in self.synonyms:
            hint = _did_you_mean(class_name, self.class_names)
            problem = f"{class_name!r} is not a class of {self.name!r}.{hint}"
            raise PromptError(f"{problem} Use one of: {', '.join(self.class_names)}.")
        return list(class_prompts(self.synonyms[class_name], self.templates))


def _unique_keys(node: yaml.Node | None, where: str, seen: set[int]) -> None:
    """Refuse a key written twice in a mapping (``yaml.safe_load`` keeps the last one)."""
    if id(node) in seen:  # an alias seen before (this also stops recursive aliases)
        return
    seen.add(id(node))
    lines: dict[tuple[str, str], int] = {}
    for key, value in node.value if isinstance(node, yaml.MappingNode) else []:
        if isinstance(key, yaml.ScalarNode) and not key.tag.endswith(":merge"):
            here, line = f"{where}.{key.value}" if where else key.value, key.start_mark.line + 1
            if (key.tag, key.value) in lines:
                twice = f"also on line {lines[key.tag, key.value]}"
                problem = f"the key {key.value!r} appears twice ({twice}); remove one."
                raise BankError(problem, field=here, line=line)
            lines[key.tag, key.value] = line
            _unique_keys(value, here, seen)


def _parse_yaml(text: str, path: str) -> Any:
    """``text`` read by ``yaml.safe_load``; a syntax error says on which line and column."""
    try:
        _unique_keys(yaml.compose(text, yaml.SafeLoader), "", set())
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        if mark is None:  # a character that YAML does not allow
            raise BankError(f"invalid YAML ({err}); remove that character.") from None
        problem = getattr(err, "problem", None) or getattr(err, "context", None)
        shown = (re.split("\r\n|[\n\r\x85\u2028\u2029]", text)[mark.line :] or [""])[0].strip()
        hint = ' Quote templates that contain {}, e.g. - "{} on a chest X-ray."' * ("{" in shown)
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        message = f"{path}, {where}: invalid YAML ({problem}): {shown!r}.{hint}"
        raise BankError(message, path=path, line=mark.line + 1) from None
    except RecursionError:
        raise BankError("invalid YAML (nested too deeply); flatten it.") from None


def _fail(where: str, problem: str) -> BankError:
    return BankError(problem, field=where)  # the file is added by _read_bank


def _not_text(value: Any) -> str:
    if value == {}:  # an unquoted {} is an empty mapping
        return 'a template with {} must be quoted: "{} ...".'
    quote = "" if isinstance(value, (list, dict)) else "; quote it in the YAML file"
    return f"expected text, found {type(value).__name__}{quote}."


def _text(value: Any, where: str, pattern: re.Pattern | None = None) -> str:
    """A non-blank string without spaces at either end (matching ``pattern``, if given)."""
    if not isinstance(value, str):
        raise _fail(where, _not_text(value))
    if not value.strip():
        raise _fail(where, "is empty or only whitespace; write some text or remove it.")
    if value != value.strip():
        raise _fail(where, f"{value!r} has spaces at an end; remove them.")
    if pattern and not pattern.match(value):
        raise _fail(where, f"{value!r} must be lowercase letters, digits and _; rename it.")
    return value


def _list(value: Any, where: str, what: str = "text") -> list:
    if value is not None and not isinstance(value, list):
        raise _fail(where, f"expected a list of {what}, found {type(value).__name__}.")
    return value or []


def _texts(value: Any, where: str) -> list[str]:
    return [_text(item, f"{where}[{i}]") for i, item in enumerate(_list(value, where))]


def _classes(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    if isinstance(value, dict):
        items = [(f"{where}.{name}", name, synonyms) for name, synonyms in value.items()]
    else:
        names = _list(value, where, "class names or a mapping {class: [synonyms]}")
        items = [(f"{where}[{i}]", name, None) for i, name in enumerate(names)]
    seen: dict[str, tuple[str, list[str]]] = {}
    for here, name, synonyms in items:
        name = _text(name, here)
        if name.casefold() in seen:
            first = seen[name.casefold()][0]
            raise _fail(here, f"duplicate class name {name!r} (same as {first!r}); remove one.")
        seen[name.casefold()] = (name, _texts(synonyms, here))
    if len(seen) < 2:
        raise _fail(where, f"a task needs at least 2 classes, found {len(seen)}; add some.")
    return normalize_classes(dict(seen.values()))


def _templates(value: Any, where: str) -> tuple[str, ...]:
    for i, item in enumerate(_list(value, where, "templates")):
        if not isinstance(item, str):
            raise _fail(f"{where}[{i}]", _not_text(item))
    try:
        return check_templates(value)
    except PromptError as err:
        raise _fail(where, str(err)) from None


def _tasks(value: Any, where: str) -> dict[str, dict]:
    if not isinstance(value, dict) or not value:
        raise _fail(where, f"expected a mapping {{task id: task}}, found {type(value).__name__}.")
    return {
        _text(k, f"{where}.{k}", _ID): _fields(v, _TASK, f"{where}.{k}") for k, v in value.items()
    }


def _names(value: Any, where: str) -> list[str]:
    return _fields(value, {"names": (False, _texts)}, where)["names"]


#: The fields of a bank and of a task: ``{key: (required, check(value, where))}``.
_BANK = {
    "modality": (True, _text),
    "modality_id": (True, functools.partial(_text, pattern=_ID)),
    "description": (True, _text),
    "identification": (False, _names),
    "tasks": (True, _tasks),
}
_TASK = {
    "description": (False, _text),
    "source": (False, _text),
    "notes": (False, _text),
    "classes": (True, _classes),
    "templates": (True, _templates),
}


def _fields(data: Any, spec: dict, where: str) -> dict[str, Any]:
    """The mapping ``data`` with each value checked by ``spec``; None for an absent optional."""
    if not isinstance(data, dict):
        found = "nothing: the file is empty" if data is None and not where else type(data).__name__
        must = f"{where or 'the top level'} must be a mapping of {', '.join(spec)}"
        raise _fail(where or "top level", f"{must}, not {found}.")
    here = {key: f"{where}.{key}" if where else str(key) for key in [*spec, *data]}
    for key in data:
        if key not in spec:
            hint = f"{_did_you_mean(key, list(spec))} Use one of: {', '.join(spec)}."
            raise _fail(here[key], f"unknown key {key!r}.{hint}")
    for key, (required, _) in spec.items():
        if required and data.get(key) is None:
            raise _fail(here[key], f"the required field {key!r} is missing or empty; add it.")
    return {k: None if data.get(k) is None else f(data[k], here[k]) for k, (_, f) in spec.items()}


def _read_bank(text: str, path: str) -> SimpleNamespace:
    """The checked bank in the YAML ``text``: its fields, ``names`` and ``tasks``."""
    try:
        bank = _fields(_parse_yaml(text, path), _BANK, "")
    except BankError as err:
        if err.path:  # a YAML syntax error already says where
            raise
        at = (f", line {err.line}" if err.line else "") + (f": {err.field}" if err.field else "")
        raise BankError(f"{path}{at}: {err}", path=path, field=err.field, line=err.line) from None
    tasks = [
        Task(
            name=f"{bank['modality_id']}/{task_id}",
            modality=bank["modality"],
            modality_id=bank["modality_id"],
            class_names=tuple(spec["classes"]),
            synonyms=spec.pop("classes"),
            **{key: value or "" for key, value in spec.items()},  # texts and templates
        )
        for task_id, spec in bank.pop("tasks").items()
    ]
    return SimpleNamespace(**bank, names=bank["identification"] or [], tasks=tasks)


def load_bank(path: str | os.PathLike) -> list[Task]:
    """Read and check a prompt bank YAML file of your own (on every call); return its tasks.

    Example:
        >>> _ = (tmp / "my.yaml").write_text("modality: mine\\nmodality_id: mine\\n"
        ...     "description: my scans\\ntasks: {t: {classes: [a, b], templates: ['A {}.']}}")
        >>> load_bank(tmp / "my.yaml")
        [Task('mine/t', 2 classes, 1 templates)]
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        problems = {FileNotFoundError: "no such prompt bank file", UnicodeDecodeError: "not UTF-8"}
        problem = problems.get(type(err), "it is a folder" if file.is_dir() else "unreadable")
        message = f"{file}: {problem} ({err}); check the path, and save the file as UTF-8 text."
        raise BankError(message, path=str(file)) from None
    return _read_bank(text, str(file)).tasks


@functools.lru_cache(maxsize=1)
def _builtin_banks() -> tuple[SimpleNamespace, ...]:
    """Every ``*.yaml`` file of this package, read once, sorted by file name."""
    folder = importlib.resources.files(__package__)
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=str)
    return tuple(_read_bank(f.read_text("utf-8"), str(f)) for f in files)


@functools.lru_cache(maxsize=1)
def _task_index() -> dict[str, Task]:
    """Every built-in task by full name, then the modality task."""
    banks = _builtin_banks()
    synonyms = normalize_classes({b.modality: [*b.names, b.description] for b in banks})
    modality = Task(
        name=MODALITY_TASK,
        modality="all modalities",
        modality_id=MODALITY_TASK,
        description=f"Which of the {len(banks)} imaging modalities is this image?",
        source="The prompt banks of mmkd_utils.prompts.",
        class_names=tuple(synonyms),
        synonyms=synonyms,
        templates=MODALITY_TEMPLATES,
        notes="Synonyms: identification names and description of each bank.",
    )
    return {**{t.name: t for b in banks for t in b.tasks}, MODALITY_TASK: modality}


def list_modalities() -> list[str]:
    """The modality ids of the built-in banks, sorted (one YAML file each).

    Example:
        >>> list_modalities()[:3]
        ['chest_xray', 'ct', 'dermatology']
    """
    return [bank.modality_id for bank in _builtin_banks()]


def list_tasks(modality: str | None = None) -> list[str]:
    """Full names of the built-in tasks, then ``"modality"``; or those of one ``modality``.

    Example:
        >>> list_tasks("fundus")  # or list_tasks("fundus photograph"), the display name
        ['fundus/diabetic_retinopathy', 'fundus/glaucoma', 'fundus/retinamnist']
    """
    if modality is None:
        return list(_task_index())
    key = str(modality).strip().casefold()
    for bank in _builtin_banks():
        if key in (bank.modality_id, bank.modality.casefold()):
            return [task.name for task in bank.tasks]
    hint, known = _did_you_mean(key, list_modalities()), ", ".join(list_modalities())
    raise PromptError(f"Unknown modality {modality!r}.{hint} Known modalities: {known}.")


def get_task(name: str) -> Task:
    """The built-in task called ``name``: full (``"chest_xray/chexpert_5x200"``) or bare.

    Example:
        >>> get_task("chexpert_5x200").name
        'chest_xray/chexpert_5x200'
    """
    if not isinstance(name, str):
        raise PromptError(f"A task name is text, not {type(name).__name__}; see list_tasks().")
    index, key = _task_index(), name.strip().lower()
    found = [key] if key in index else [n for n in index if n.rsplit("/", 1)[-1] == key]
    if len(found) == 1:  # a copy: changing its synonyms leaves the cached task alone
        return replace(index[found[0]], synonyms=dict(index[found[0]].synonyms))
    problem = f"Task id {name!r} is ambiguous" if found else f"Unknown task {name!r}"
    raise PromptError(f"{problem}.{_did_you_mean(key, index)} Known tasks: {', '.join(index)}.")


def modality_task() -> Task:
    """The task ``"modality"``: which built-in modality an image is (one class per bank).

    Example:
        >>> modality_task().class_names[:2]
        ('chest X-ray', 'CT')
    """
    return get_task(MODALITY_TASK)
