"""Prompt banks: zero-shot tasks per imaging modality, one YAML file each beside this module.

A bank (``chest_xray.yaml``, ``fundus.yaml``, ...) looks like this::

    modality: chest X-ray                 # display name
    modality_id: chest_xray               # lowercase letters, digits and _
    description: radiograph of the chest  # a few words, used by the modality task
    identification: {names: [chest radiograph]}  # optional: other names of the modality
    tasks:
      chexpert_5x200:                     # full name: chest_xray/chexpert_5x200
        source: CheXpert 5x200            # optional, as are description and notes
        classes:                          # class: [synonyms], or a plain list of classes
          atelectasis: [lung collapse]
          pleural effusion: []
        templates: ["A chest X-ray showing {}."]  # quoted, {} once where the name goes

A problem raises :class:`BankError` naming the file, the field and (for YAML syntax or
a repeated key) the line. The built-in banks are read once, at first use. The task
``"modality"`` has one class per bank: its ``modality``, with ``identification.names``
and ``description`` as synonyms, and the templates :data:`MODALITY_TEMPLATES`.

Example:
    >>> list_tasks("chest_xray")
    ['chest_xray/chexpert_5x200', 'chest_xray/rsna_pneumonia']
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import os
import re
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
_BANK_KEYS = ("modality!", "modality_id!", "description!", "identification", "tasks!")
_TASK_KEYS = ("description", "source", "notes", "classes!", "templates!")


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
            hint = _hint(class_name, self.class_names)
            raise PromptError(
                f"{class_name!r} is not a class of {self.name!r}.{hint} Its classes: "
                f"{', '.join(self.class_names)}."
            )
        return list(class_prompts(self.synonyms[class_name], self.templates))


# -- reading and checking one bank ------------------------------------------------------


def _or_list(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]


def _hint(word: Any, names: Any, cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(str(word), list(names), n=3, cutoff=cutoff)
    return f" Did you mean {_or_list(close)}?" if close else ""


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} ({text if len(text) <= 60 else text[:57] + '...'})"


def _fail(path: str, where: str, problem: str, line: int | None = None) -> BankError:
    at, field = (f", line {line}" if line else ""), (f" {where}:" if where else "")
    return BankError(f"{path}{at}:{field} {problem}", path=path, field=where or None, line=line)


def _unique_keys(node: yaml.Node | None, where: str, path: str, seen: set[int]) -> None:
    """Refuse a key written twice in one mapping (``yaml.safe_load`` would keep the last)."""
    if id(node) in seen:  # an alias seen before (this also stops recursive aliases)
        return
    seen.add(id(node))
    for i, item in enumerate(node.value) if isinstance(node, yaml.SequenceNode) else []:
        _unique_keys(item, f"{where}[{i}]", path, seen)
    lines: dict[tuple[str, str], int] = {}
    for key, value in node.value if isinstance(node, yaml.MappingNode) else []:
        if isinstance(key, yaml.ScalarNode) and not key.tag.endswith(":merge"):
            here, line = f"{where}.{key.value}" if where else key.value, key.start_mark.line + 1
            if (key.tag, key.value) in lines:
                also = f"also on line {lines[key.tag, key.value]}"
                raise _fail(path, here, f"the key {key.value!r} appears twice ({also}).", line)
            lines[key.tag, key.value] = line
            _unique_keys(value, here, path, seen)


def _parse_yaml(text: str, path: str) -> Any:
    """``text`` read as ``yaml.safe_load`` does; a syntax error names the file and the line."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        _unique_keys(node, "", path, set())
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        if mark is None:  # a character that YAML does not allow
            raise _fail(path, "", f"invalid YAML ({err}).") from None
        problem = getattr(err, "problem", None) or getattr(err, "context", None) or "error"
        shown = re.split("\r\n|[\n\r\x85\u2028\u2029]", text)[mark.line :][:1]  # YAML's breaks
        if "{" in str(shown):
            problem += '; quote templates with {}, e.g. - "{} on a chest X-ray."'
        column = f"column {mark.column + 1}"
        raise _fail(path, "", f"invalid YAML ({column}: {problem}).", mark.line + 1) from None
    except RecursionError:
        raise _fail(path, "", "invalid YAML (nested too deeply).") from None
    finally:
        if loader is not None:
            loader.dispose()


def _mapping(data: Any, keys: tuple[str, ...], where: str, path: str) -> dict:
    """``data`` as a mapping with only ``keys`` (those ending in ``!`` required)."""
    allowed, label = [k.rstrip("!") for k in keys], where or "the top level"
    if not isinstance(data, dict):
        must = f"{label} must be a mapping of {', '.join(allowed)}"
        raise _fail(path, where or "top level", f"{must}, not {_describe(data)}.")
    for key in data:
        if key not in allowed:
            hint = f"{_hint(key, allowed)} Allowed: {', '.join(allowed)}."
            raise _fail(
                path, f"{where}.{key}" if where else str(key), f"unknown key {key!r}.{hint}"
            )
    for key in (k[:-1] for k in keys if k.endswith("!")):
        if data.get(key) is None:
            missing = f"the required field {key!r} is missing or empty in {label}."
            raise _fail(path, f"{where}.{key}" if where else key, missing)
    return data


def _text(value: Any, where: str, path: str) -> str:
    """A non-blank string without spaces at either end."""
    if not isinstance(value, str):
        quote = "" if isinstance(value, (list, dict)) else "; quote it in the YAML file"
        raise _fail(path, where, f"expected text, found {_describe(value)}{quote}.")
    if not value.strip():
        raise _fail(path, where, "is empty or only whitespace.")
    if value != value.strip():
        raise _fail(path, where, f"{value!r} has spaces at an end; remove them.")
    return value


def _texts(value: Any, where: str, path: str) -> list[str]:
    if value is not None and not isinstance(value, list):
        raise _fail(path, where, f"expected a list of text, found {_describe(value)}.")
    return [_text(item, f"{where}[{i}]", path) for i, item in enumerate(value or [])]


def _id(value: Any, where: str, path: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise _fail(path, where, f"{value!r} must be lowercase letters, digits and _.")
    return value


def _classes(value: Any, where: str, path: str) -> dict[str, tuple[str, ...]]:
    if isinstance(value, list):
        items = [(f"{where}[{i}]", name, None) for i, name in enumerate(value)]
    elif isinstance(value, dict):
        items = [(f"{where}.{name}", name, synonyms) for name, synonyms in value.items()]
    else:
        expected = "a mapping {class name: [synonyms]} or a list of class names"
        raise _fail(path, where, f"expected {expected}, found {_describe(value)}.")
    seen: dict[str, tuple[str, list[str]]] = {}
    for here, name, synonyms in items:
        name = _text(name, here, path)
        if name.casefold() in seen:
            first = seen[name.casefold()][0]
            raise _fail(path, here, f"duplicate class name {name!r} (same as {first!r}).")
        seen[name.casefold()] = (name, _texts(synonyms, here, path))
    if len(seen) < 2:
        raise _fail(path, where, f"a task needs at least 2 classes, found {len(seen)}.")
    return normalize_classes(dict(seen.values()))


def _templates(value: Any, where: str, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(path, where, f"expected a list of templates, found {_describe(value)}.")
    for i, item in enumerate(value):
        if item == {}:  # an unquoted {} is an empty mapping
            raise _fail(path, f"{where}[{i}]", 'a template with {} must be quoted: "{} ...".')
        if not isinstance(item, str):
            raise _fail(path, f"{where}[{i}]", f"expected text, found {_describe(item)}.")
    try:
        return check_templates(value)
    except PromptError as err:
        raise _fail(path, where, str(err)) from None


def _read_bank(text: str, path: str) -> SimpleNamespace:
    """Check the YAML ``text`` of one bank; its fields, ``names`` and ``tasks``."""
    data = _parse_yaml(text, path)
    if data is None:
        raise _fail(path, "top level", "the file is empty; see mmkd_utils.prompts.banks.")
    data = _mapping(data, _BANK_KEYS, "", path)
    bank = SimpleNamespace(path=path, tasks=[])
    for key in ("modality", "modality_id", "description"):
        setattr(bank, key, _text(data[key], key, path))
    _id(bank.modality_id, "modality_id", path)
    ident = {} if data.get("identification") is None else data["identification"]
    ident = _mapping(ident, ("names",), "identification", path)
    bank.names = _texts(ident.get("names"), "identification.names", path)
    if not isinstance(data["tasks"], dict) or not data["tasks"]:
        tasks = _describe(data["tasks"])
        raise _fail(path, "tasks", f"expected a mapping {{task id: task}}, found {tasks}.")
    for task_id, spec in data["tasks"].items():
        where = f"tasks.{task_id}"
        task_id = _id(task_id, where, path)
        spec = _mapping(spec, _TASK_KEYS, where, path)
        optional = [k for k in _TASK_KEYS if spec.get(k) is not None and not k.endswith("!")]
        texts = {k: _text(spec[k], f"{where}.{k}", path) for k in optional}
        synonyms = _classes(spec["classes"], f"{where}.classes", path)
        task = Task(
            name=f"{bank.modality_id}/{task_id}",
            modality=bank.modality,
            modality_id=bank.modality_id,
            description=texts.get("description", ""),
            source=texts.get("source", ""),
            class_names=tuple(synonyms),
            synonyms=synonyms,
            templates=_templates(spec["templates"], f"{where}.templates", path),
            notes=texts.get("notes", ""),
        )
        bank.tasks.append(task)
    return bank


def load_bank(path: str | os.PathLike) -> list[Task]:
    """Read and check a prompt bank YAML file of your own (on every call); return its tasks.

    Example:
        >>> _ = (tmp / "my.yaml").write_text("modality: mine\\nmodality_id: mine\\n"
        ...     "description: my scans\\ntasks: {t: {classes: [a, b], templates: ['A {}.']}}")
        >>> load_bank(tmp / "my.yaml")
        [Task('mine/t', 2 classes, 1 templates)]
    """
    file = Path(path).expanduser()
    if not file.is_file():
        folder = " (it is a folder)" if file.is_dir() else ""
        raise BankError(f"{file}: no such prompt bank file{folder}.", path=str(file))
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        problem = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else "unreadable"
        raise BankError(f"{file}: {problem} ({err}).", path=str(file)) from None
    return _read_bank(text, str(file)).tasks


# -- the built-in banks -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _builtin_banks() -> tuple[SimpleNamespace, ...]:
    """Every ``*.yaml`` file of this package, read once, sorted by file name."""
    files = [
        f for f in importlib.resources.files(__package__).iterdir() if f.name.endswith(".yaml")
    ]
    return tuple(_read_bank(f.read_text("utf-8"), str(f)) for f in sorted(files, key=str))


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
        ['fundus/diabetic_retinopathy', 'fundus/glaucoma']
    """
    if modality is None:
        return list(_task_index())
    banks = _builtin_banks()
    for bank in banks:
        if str(modality).strip().casefold() in (bank.modality_id, bank.modality.casefold()):
            return [task.name for task in bank.tasks]
    ids = [b.modality_id for b in banks]
    hint = _hint(modality, ids + [b.modality for b in banks], cutoff=0.5)
    raise PromptError(f"Unknown modality {modality!r}.{hint} Known modalities: {', '.join(ids)}.")


def get_task(name: str) -> Task:
    """The built-in task called ``name``: full (``"chest_xray/chexpert_5x200"``) or bare.

    Example:
        >>> get_task("chexpert_5x200").name
        'chest_xray/chexpert_5x200'
    """
    if not isinstance(name, str):
        raise PromptError(f"A task name is text, not {_describe(name)}; see list_tasks().")
    index, key = _task_index(), name.strip().lower()
    found = [key] if key in index else [n for n in index if n.rsplit("/", 1)[-1] == key]
    if len(found) == 1:  # a copy: changing its synonyms leaves the cached task alone
        return replace(index[found[0]], synonyms=dict(index[found[0]].synonyms))
    if found:
        raise PromptError(f"Task id {name!r} is ambiguous: use the full name, {_or_list(found)}.")
    close = [n for n in index if key and key in n] + difflib.get_close_matches(key, index)
    if not close:
        raise PromptError(f"Unknown task {name!r}. Known tasks: {', '.join(index)}.")
    close = list(dict.fromkeys(close))[:5]
    raise PromptError(f"Unknown task {name!r}. Did you mean {_or_list(close)}? See list_tasks().")


def modality_task() -> Task:
    """The task ``"modality"``: which built-in modality an image is (one class per bank).

    Example:
        >>> modality_task().class_names[:2]
        ('chest X-ray', 'CT')
    """
    return get_task(MODALITY_TASK)
