"""Prompt banks: zero-shot tasks per imaging modality, kept as YAML data.

Each modality has one YAML file beside this module (``chest_xray.yaml``, ``fundus.yaml``,
...). A file looks like this::

    modality: chest X-ray                 # display name
    modality_id: chest_xray               # lowercase id: letters, digits, _
    description: radiograph of the chest  # a few words, used by the modality task
    identification:                       # optional
      names: [chest radiograph, ...]      # other names of the modality
    tasks:
      chexpert_5x200:                     # task id: full name chest_xray/chexpert_5x200
        description: ...                  # optional
        source: CheXpert 5x200 (...)      # optional: the benchmark
        notes: ...                        # optional
        classes:                          # class -> list of synonyms (may be empty)
          atelectasis: [lung collapse]
          pleural effusion: []
        templates:                        # each with {} exactly once, where the name goes
          - "A chest X-ray showing {}."

Quote templates: a YAML value that starts with ``{}`` is read as an empty mapping.
``classes`` may also be a plain list of class names (no synonyms). Every file is
checked when it is loaded; a problem raises :class:`BankError` naming the file and
the field (and the line, for YAML syntax errors). The built-in banks are read once
(:func:`functools.lru_cache`) at first use, never at import time.

The **modality task** (``"modality"``, :func:`modality_task`) asks which of the
modalities an image is. It is built from the same files: one class per file, named by
its ``modality``; the class's synonyms are its ``identification.names`` and its
``description``; its templates are :data:`MODALITY_TEMPLATES`, defined here because a
classifier uses the same templates for every class (so they must suit all modalities).

Introduced in ``notebooks/03_zero_shot_by_modality.ipynb``.

Example:
    >>> from mmkd_utils.prompts import get_task, list_tasks
    >>> list_tasks("chest_xray")
    ['chest_xray/chexpert_5x200', 'chest_xray/rsna_pneumonia']
    >>> get_task("rsna_pneumonia").class_names
    ('normal', 'pneumonia')
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mmkd_utils.errors import BankError, PromptError

#: Name of the modality-identification task.
MODALITY_TASK = "modality"

#: Templates of the modality task. They take a bare noun phrase ("chest X-ray",
#: "colour photograph of the retina and optic disc"), so they suit every modality.
MODALITY_TEMPLATES: tuple[str, ...] = (
    "A medical image: {}.",
    "Imaging modality: {}.",
    "Type of medical image: {}.",
    "Medical image category: {}.",
    "An example of {} from a clinical dataset.",
    "{}.",
)

_ID = re.compile(r"[a-z0-9][a-z0-9_]*\Z")
_TOP_KEYS = ("modality", "modality_id", "description", "identification", "tasks")
_TOP_REQUIRED = ("modality", "modality_id", "description", "tasks")
_TASK_KEYS = ("description", "source", "notes", "classes", "templates")
_TASK_REQUIRED = ("classes", "templates")
_IDENTIFICATION_KEYS = ("names",)


@dataclass(frozen=True)
class Task:
    """A zero-shot task: class names, their synonyms and the prompt templates.

    ``synonyms[c]`` starts with ``c`` itself; ``templates`` contain ``{}`` once. Pass
    ``task.name`` (or ``task.synonyms`` and ``task.templates``) to
    ``MMKDModel.classifier``.

    Example:
        >>> task = get_task("chest_xray/chexpert_5x200")
        >>> task.synonyms["edema"]
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
        return (
            f"Task({self.name!r}, {len(self.class_names)} classes, {len(self.templates)} templates)"
        )

    def prompts(self, class_name: str) -> list[str]:
        """Every template filled with every name (class name and synonyms) of one class.

        Example:
            >>> get_task("rsna_pneumonia").prompts("pneumonia")[0]
            'Chest X-ray: pneumonia.'
        """
        from mmkd_utils.model.classifier import (
            class_prompts,  # lazy: classifier imports this package
        )

        if class_name not in self.synonyms:
            close = difflib.get_close_matches(str(class_name), self.class_names, n=3)
            hint = f" Did you mean {_or_list(close)}?" if close else ""
            raise PromptError(
                f"{class_name!r} is not a class of {self.name!r}.{hint} Its classes are "
                f"{', '.join(map(repr, self.class_names))}."
            )
        return list(class_prompts(self.synonyms[class_name], self.templates))


# -- reading and checking one bank ------------------------------------------------------


@dataclass(frozen=True)
class _Bank:
    """One parsed YAML file."""

    path: str
    modality: str
    modality_id: str
    description: str
    names: tuple[str, ...]
    tasks: tuple[Task, ...]


def _check_unique_keys(node: yaml.Node, where: str, path: str, seen: set[int]) -> None:
    """Raise if a mapping in the composed YAML ``node`` has the same key twice.

    ``yaml.safe_load`` keeps the last of two equal keys, so a class written twice would
    silently vanish; this walk names the field and both lines instead.
    """
    if id(node) in seen:  # an alias seen before (also stops recursive aliases)
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, f"{where}[{i}]", path, seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            child = f"{where}.{key_node.value}" if where else key_node.value
            key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
            if key in first:
                raise BankError(
                    f"{path}, line {line}: {child}: the key {key_node.value!r} appears twice "
                    f"(also on line {first[key]}); keys (class names, task ids, fields) must "
                    "be unique.",
                    path=path,
                    field=child,
                    line=line,
                )
            first[key] = line
            _check_unique_keys(value_node, child, path, seen)


def _parse_yaml(text: str, path: str) -> Any:
    """``text`` parsed as ``yaml.safe_load`` does, refusing duplicate keys.

    A syntax error becomes a BankError naming the file and the line.
    """
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, "", path, set())
        return loader.construct_document(node)
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        raise BankError(
            f"{path}, line {line}: invalid YAML (the character "
            f"U+{int(err.character):04X} is not allowed in YAML; remove it).",
            path=path,
            line=line,
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if mark is None:
            raise BankError(f"{path}: invalid YAML ({problem}).", path=path) from None
        line = mark.line + 1
        lines = re.split("\r\n|[\n\r\x85\u2028\u2029]", text)  # YAML's line breaks
        shown = lines[mark.line].strip() if mark.line < len(lines) else ""
        hint = (
            ' Quote templates that contain {}, e.g. - "{} on a chest X-ray."'
            if "{" in shown
            else ""
        )
        raise BankError(
            f"{path}, line {line}, column {mark.column + 1}: invalid YAML ({problem}): "
            f"{shown!r}.{hint}",
            path=path,
            line=line,
        ) from None
    except RecursionError:
        raise BankError(f"{path}: the YAML is nested too deeply.", path=path) from None
    finally:
        if loader is not None:
            loader.dispose()


def _error(path: str, where: str, problem: str) -> BankError:
    return BankError(f"{path}: {where}: {problem}", path=path, field=where)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} ({text})"


def _check_keys(
    data: Any, allowed: tuple[str, ...], required: tuple[str, ...], where: str, path: str
) -> Mapping[str, Any]:
    """``data`` as a mapping with only ``allowed`` keys and every ``required`` one."""
    label = where or "the top level"
    if not isinstance(data, Mapping):
        raise _error(
            path,
            where or "top level",
            f"{label} must be a mapping with the keys {', '.join(required)}, "
            f"not {_describe(data)}.",
        )
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise _error(
                path,
                f"{where}.{key}" if where else str(key),
                f"unknown key {key!r} in {label}.{hint} Allowed keys: {', '.join(allowed)}.",
            )
    for key in required:
        if data.get(key) is None:
            raise _error(
                path,
                f"{where}.{key}" if where else key,
                f"the required field {key!r} is missing or empty in {label}.",
            )
    return data


def _text(value: Any, where: str, path: str) -> str:
    """A non-blank string without surrounding spaces."""
    if isinstance(value, bool) or not isinstance(value, str):
        hint = " Quote it in the YAML file." if isinstance(value, (bool, int, float)) else ""
        raise _error(path, where, f"expected text, found {_describe(value)}.{hint}")
    if not value.strip():
        raise _error(path, where, "is empty or only whitespace.")
    if value != value.strip():
        raise _error(path, where, f"{value!r} has leading or trailing spaces; remove them.")
    return value


def _text_list(value: Any, where: str, path: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list):
        raise _error(path, where, f"expected a list of text, found {_describe(value)}.")
    return [_text(item, f"{where}[{i}]", path) for i, item in enumerate(value)]


def _parse_classes(value: Any, where: str, path: str) -> dict[str, tuple[str, ...]]:
    from mmkd_utils.model.classifier import (
        normalize_classes,  # lazy: classifier imports this package
    )

    if isinstance(value, list):
        places = [f"{where}[{i}]" for i in range(len(value))]
        pairs = [(_text(name, here, path), []) for name, here in zip(value, places, strict=True)]
    elif isinstance(value, Mapping):
        pairs: list[tuple[str, list[str]]] = []
        places = []
        for name, synonyms in value.items():
            if not isinstance(name, str):
                raise _error(
                    path,
                    f"{where}.{name}",
                    f"the class name {_describe(name)} is not text; quote it in the YAML "
                    "file (yes/no/on/off and numbers are read as other types).",
                )
            here = f"{where}.{name}"
            pairs.append((_text(name, here, path), _text_list(synonyms, here, path)))
            places.append(here)
    else:
        raise _error(
            path,
            where,
            "expected a mapping {class name: [synonyms]} or a list of class names, "
            f"found {_describe(value)}.",
        )
    seen: dict[str, str] = {}
    for (name, _), here in zip(pairs, places, strict=True):
        key = name.casefold()
        if key in seen:
            raise _error(
                path,
                here,
                f"duplicate class name {name!r} (same as {seen[key]!r}); class names must "
                "be unique within a task.",
            )
        seen[key] = name
    if len(pairs) < 2:
        found = list(seen.values())
        raise _error(path, where, f"a task needs at least 2 classes, found {len(pairs)}: {found}.")
    try:
        return normalize_classes(dict(pairs))
    except PromptError as err:
        raise _error(path, where, str(err)) from None


def _parse_templates(value: Any, where: str, path: str) -> tuple[str, ...]:
    from mmkd_utils.model.classifier import check_templates  # lazy: classifier imports this package

    if isinstance(value, str) or not isinstance(value, list):
        raise _error(path, where, f"expected a list of templates, found {_describe(value)}.")
    for i, item in enumerate(value):
        if isinstance(item, Mapping) and not item:
            raise _error(
                path,
                f"{where}[{i}]",
                "is an empty mapping, not text: a template that starts with {} must be "
                'quoted, e.g. - "{} on a chest X-ray."',
            )
        if not isinstance(item, str):
            raise _error(path, f"{where}[{i}]", f"expected text, found {_describe(item)}.")
    try:
        return check_templates(value)
    except PromptError as err:
        raise _error(path, where, str(err)) from None


def _parse_task(task_id: Any, data: Any, modality: str, modality_id: str, path: str) -> Task:
    where = f"tasks.{task_id}"
    if not isinstance(task_id, str) or not _ID.match(task_id):
        raise _error(
            path,
            where,
            f"the task id {task_id!r} must be lowercase letters, digits and _ "
            "(e.g. chexpert_5x200).",
        )
    data = _check_keys(data, _TASK_KEYS, _TASK_REQUIRED, where, path)
    optional = {
        key: _text(data[key], f"{where}.{key}", path) if data.get(key) is not None else ""
        for key in ("description", "source", "notes")
    }
    synonyms = _parse_classes(data["classes"], f"{where}.classes", path)
    return Task(
        name=f"{modality_id}/{task_id}",
        modality=modality,
        modality_id=modality_id,
        description=optional["description"],
        source=optional["source"],
        class_names=tuple(synonyms),
        synonyms=synonyms,
        templates=_parse_templates(data["templates"], f"{where}.templates", path),
        notes=optional["notes"],
    )


def _parse_bank(data: Any, path: str) -> _Bank:
    """Check the parsed YAML of one bank and build its tasks."""
    if data is None:
        raise _error(path, "top level", "the file is empty; see mmkd_utils.prompts.banks.")
    data = _check_keys(data, _TOP_KEYS, _TOP_REQUIRED, "", path)
    modality = _text(data["modality"], "modality", path)
    modality_id = _text(data["modality_id"], "modality_id", path)
    if not _ID.match(modality_id):
        raise _error(
            path,
            "modality_id",
            f"{modality_id!r} must be lowercase letters, digits and _ (e.g. chest_xray).",
        )
    description = _text(data["description"], "description", path)
    names: list[str] = []
    if data.get("identification") is not None:
        ident = _check_keys(
            data["identification"], _IDENTIFICATION_KEYS, (), "identification", path
        )
        names = _text_list(ident.get("names"), "identification.names", path)
    tasks = data["tasks"]
    if not isinstance(tasks, Mapping) or not tasks:
        raise _error(
            path, "tasks", f"expected a mapping {{task id: task}}, found {_describe(tasks)}."
        )
    parsed = tuple(
        _parse_task(task_id, task, modality, modality_id, path) for task_id, task in tasks.items()
    )
    return _Bank(path, modality, modality_id, description, tuple(names), parsed)


def _read_bank(path: str, text: str) -> _Bank:
    return _parse_bank(_parse_yaml(text, path), path)


def load_bank(path: str | os.PathLike) -> list[Task]:
    """Read and check a prompt bank YAML file of your own; return its tasks.

    Same format and checks as the built-in banks (see this module's docstring), except
    that a task may have fewer than five templates. The file is read on every call.

    Example:
        >>> tasks = load_bank("my_bank.yaml")  # doctest: +SKIP
        >>> clf = clip.classifier(tasks[0].synonyms, tasks[0].templates)  # doctest: +SKIP
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise BankError(
            f"{file}: no such prompt bank file" + (" (it is a folder)." if file.is_dir() else "."),
            path=str(file),
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise BankError(f"{file}: not UTF-8 text ({err.reason}).", path=str(file)) from None
    except OSError as err:
        raise BankError(f"{file}: could not be read ({err}).", path=str(file)) from None
    return list(_read_bank(str(file), text).tasks)


# -- the built-in banks -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _builtin_banks() -> tuple[_Bank, ...]:
    """Every ``*.yaml`` file of this package, parsed once, sorted by file name."""
    folder = importlib.resources.files(__package__)
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    banks = tuple(_read_bank(str(f), f.read_text(encoding="utf-8")) for f in files)
    for attr in ("modality_id", "modality"):
        owner: dict[str, str] = {}
        for bank in banks:
            value = getattr(bank, attr)
            if value in owner:
                raise _error(bank.path, attr, f"{value!r} is also the {attr} of {owner[value]}.")
            owner[value] = bank.path
    return banks


@functools.lru_cache(maxsize=1)
def _modality_task() -> Task:
    from mmkd_utils.model.classifier import (
        normalize_classes,  # lazy: classifier imports this package
    )

    banks = _builtin_banks()
    synonyms = normalize_classes({b.modality: [*b.names, b.description] for b in banks})
    return Task(
        name=MODALITY_TASK,
        modality="all modalities",
        modality_id=MODALITY_TASK,
        description=f"Which of the {len(banks)} imaging modalities is this image?",
        source="Built from the prompt banks of mmkd_utils.prompts (names and descriptions).",
        class_names=tuple(synonyms),
        synonyms=synonyms,
        templates=MODALITY_TEMPLATES,
        notes="Classes: the modality display names; synonyms: identification names and "
        "the modality description; templates: MODALITY_TEMPLATES.",
    )


@functools.lru_cache(maxsize=1)
def _task_index() -> dict[str, Task]:
    index = {task.name: task for bank in _builtin_banks() for task in bank.tasks}
    index[MODALITY_TASK] = _modality_task()
    return index


def _copy(task: Task) -> Task:
    """A copy with its own synonyms dict, so callers cannot change the cached task."""
    return replace(task, synonyms=dict(task.synonyms))


def _or_list(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _suggest(query: str, names: list[str]) -> list[str]:
    """Names containing ``query``, then close matches of the full and the bare name."""
    q = query.strip().lower()
    found = [n for n in names if q and q in n]
    found += difflib.get_close_matches(q, names, n=3, cutoff=0.5)
    bare = {n.rsplit("/", 1)[-1]: n for n in names}
    found += [bare[b] for b in difflib.get_close_matches(q.rsplit("/", 1)[-1], bare, n=3)]
    return list(dict.fromkeys(found))[:5]


def list_modalities() -> list[str]:
    """The modality ids of the built-in banks, sorted (one YAML file each).

    Example:
        >>> list_modalities()[:3]
        ['chest_xray', 'ct', 'dermatology']
    """
    return [bank.modality_id for bank in _builtin_banks()]


def _find_bank(modality: str) -> _Bank:
    banks = _builtin_banks()
    key = str(modality).strip().casefold()
    for bank in banks:
        if key in (bank.modality_id, bank.modality.casefold()):
            return bank
    known = [b.modality_id for b in banks] + [b.modality for b in banks]
    close = difflib.get_close_matches(str(modality), known, n=3, cutoff=0.5)
    hint = f" Did you mean {_or_list(close)}?" if close else ""
    raise PromptError(
        f"Unknown modality {modality!r}.{hint} Known modalities: "
        f"{', '.join(b.modality_id for b in banks)}."
    )


def list_tasks(modality: str | None = None) -> list[str]:
    """Full names of the built-in tasks (``<modality_id>/<task_id>``), plus ``"modality"``.

    ``modality`` (an id such as ``"fundus"`` or a display name such as ``"chest X-ray"``)
    keeps that modality's tasks only, without the modality task.

    Example:
        >>> list_tasks("fundus")
        ['fundus/diabetic_retinopathy', 'fundus/glaucoma']
    """
    if modality is None:
        return list(_task_index())
    return [task.name for task in _find_bank(modality).tasks]


def get_task(name: str) -> Task:
    """The built-in task called ``name``: full (``"chest_xray/chexpert_5x200"``) or bare.

    A bare task id (``"chexpert_5x200"``) works when only one modality has it; an unknown
    name raises :class:`~mmkd_utils.errors.PromptError` suggesting close names.

    Example:
        >>> get_task("chexpert_5x200").name
        'chest_xray/chexpert_5x200'
    """
    if not isinstance(name, str):
        raise PromptError(f"A task name is text, not {_describe(name)}; see list_tasks().")
    index = _task_index()
    key = name.strip().lower()
    if key in index:
        return _copy(index[key])
    matches = [full for full in index if full.rsplit("/", 1)[-1] == key]
    if len(matches) == 1:
        return _copy(index[matches[0]])
    if matches:
        raise PromptError(f"Task id {name!r} is ambiguous: use the full name, {_or_list(matches)}.")
    close = _suggest(name, list(index))
    if close:
        raise PromptError(
            f"Unknown task {name!r}. Did you mean {_or_list(close)}? "
            f"list_tasks() lists all {len(index)} tasks."
        )
    raise PromptError(f"Unknown task {name!r}. Known tasks: {', '.join(index)}.")


def modality_task() -> Task:
    """The modality-identification task: one class per built-in modality.

    Its classes are the modalities' display names, their synonyms come from each bank's
    ``identification.names`` and ``description``, its templates are
    :data:`MODALITY_TEMPLATES`. Same as ``get_task("modality")``.

    Example:
        >>> modality_task().class_names[:2]
        ('chest X-ray', 'CT')
    """
    return _copy(_modality_task())


__all__ = [
    "MODALITY_TASK",
    "MODALITY_TEMPLATES",
    "BankError",
    "Task",
    "get_task",
    "list_modalities",
    "list_tasks",
    "load_bank",
    "modality_task",
]
