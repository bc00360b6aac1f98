"""The package's shape: layers as ARCHITECTURE.md lists them, one error contract, small size.

Every module is parsed with ``ast``; nothing is imported to check it.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from pathlib import Path

import pytest

import mmkd_utils
from mmkd_utils import errors

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mmkd_utils"
MAX_LINES = 5_000
#: Capabilities added after the redesign, each with its own budget outside the 5,000-line
#: core (ARCHITECTURE.md, "Size"): their modules, their functions in shared modules, lines.
CAPABILITIES = {
    "evidence": (
        {"mmkd_utils.tasks.metrics", "mmkd_utils.tasks.medmnist"},
        {"mmkd_utils.plotting": {"plot_benchmark", "plot_few_shot"}},
        900,
    ),
    "scale-out": (
        {"mmkd_utils.tasks.scale"},
        {
            "mmkd_utils.errors": {"ShardMismatchError"},
            "mmkd_utils.cli": {"_add_scale_commands", "_run_scale"},
        },
        520,
    ),
    "saliency": (
        {"mmkd_utils.tasks.saliency"},
        {"mmkd_utils.plotting": {"plot_saliency", "plot_sanity_check"}},
        400,
    ),
}
MAX_MODEL_CLASS_FILE_LINES = 300
MAX_EXPORTS = 40
#: Bare built-ins the package may raise: not for bad input (also AttributeError in __getattr__).
ALLOWED_BARE = {"NotImplementedError", "SystemExit"}  # SystemExit: the CLI exit code


def module_name(path: Path) -> str:
    """``mmkd_utils/images/decode.py`` -> ``mmkd_utils.images.decode``; a package: its name."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_table() -> dict[str, int]:
    """Module -> layer, from the table in ARCHITECTURE.md."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    table = {}
    for layer, module in re.findall(r"^\| (\d) \| `([\w/.]+\.py)` \|", text, re.M):
        table[module_name(PACKAGE / module)] = int(layer)
    return table


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(p.read_text(encoding="utf-8"), str(p)) for name, p in MODULES.items()}


def imports(name: str) -> list[tuple[str, list[str], ast.AST, bool]]:
    """``(module imported, names taken, node, inside a function)`` for each mmkd_utils import."""
    found = []
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "mmkd_utils":
                        found.append((alias.name, [], child, in_function))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] == "mmkd_utils":
                    taken = [a.name for a in child.names]
                    # `from mmkd_utils.images import decode` imports a module, not a name
                    subs = [f"{base}.{t}" for t in taken if f"{base}.{t}" in MODULES]
                    found.extend((s, [], child, in_function) for s in subs)
                    rest = [t for t in taken if f"{base}.{t}" not in MODULES]
                    if rest or not subs:
                        found.append((base, rest, child, in_function))
            visit(child, nested)

    visit(TREES[name], False)
    return found


def test_every_module_has_a_layer_and_every_listed_module_exists():
    table = layer_table()
    assert set(table) == set(MODULES), (
        f"not in ARCHITECTURE.md: {sorted(set(MODULES) - set(table))}; "
        f"listed but missing: {sorted(set(table) - set(MODULES))}"
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_follow_the_layers(name):
    table = layer_table()
    for target, _, node, in_function in imports(name):
        assert not in_function, f"{name}:{node.lineno} imports {target} inside a function"
        assert target in table, f"{name}:{node.lineno} imports {target}, not a module"
        assert table[target] <= table[name], (
            f"{name} (layer {table[name]}) imports {target} (layer {table[target]}) "
            f"at line {node.lineno}"
        )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_across_modules(name):
    for target, taken, node, _ in imports(name):
        private = [t for t in taken if t.startswith("_")]
        assert not private, f"{name}:{node.lineno} imports private {private} from {target}"
    for node in ast.walk(TREES[name]):  # module.attribute access of another module's _name
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not (node.attr.startswith("__") and node.attr.endswith("__"))
        ):
            chain = ast.unparse(node.value)
            assert not chain.startswith("mmkd_utils"), (
                f"{name}:{node.lineno} uses {chain}.{node.attr}"
            )


def test_no_import_cycles():
    graph = {name: {t for t, _, _, _ in imports(name) if t in MODULES} for name in MODULES}
    state: dict[str, int] = {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])


def test_no_bare_builtin_exceptions_are_raised():
    """Every error for a bad input is an MMKDError; a bare built-in is a mistake."""
    bare = []
    for name, tree in TREES.items():
        owner = {}  # node -> name of the innermost function around it (ast.walk: outer first)
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                owner.update(dict.fromkeys(ast.walk(func), func.name))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if not isinstance(exc, ast.Name):
                continue
            obj = getattr(builtins, exc.id, None)
            if not (inspect.isclass(obj) and issubclass(obj, BaseException)):
                continue
            in_getattr = owner.get(node) == "__getattr__"
            if exc.id in ALLOWED_BARE or (exc.id == "AttributeError" and in_getattr):
                continue
            bare.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno} raise {exc.id}")
    assert not bare, "raise an MMKDError subclass instead:\n" + "\n".join(sorted(set(bare)))


def test_every_error_type_is_also_the_builtin_it_stands_for():
    for name in dir(errors):
        cls = getattr(errors, name)
        if (
            inspect.isclass(cls)
            and issubclass(cls, errors.MMKDError)
            and cls is not errors.MMKDError
        ):
            builtin = [b for b in cls.__mro__ if b.__module__ == "builtins"]
            assert set(builtin) - {Exception, BaseException, object}, (
                f"{name} derives from MMKDError only: add the built-in it stands for"
            )


def test_the_package_is_small():
    lines = {name: len(p.read_text(encoding="utf-8").splitlines()) for name, p in MODULES.items()}
    for name, (modules, functions, budget) in CAPABILITIES.items():
        assert modules <= set(lines), modules - set(lines)
        used = sum(lines.pop(m) for m in modules)
        for module, names in functions.items():  # each with the two blank lines before it
            spans = [
                n.end_lineno - n.lineno + 3
                for n in TREES[module].body
                if getattr(n, "name", "") in names
            ]
            lines[module] -= sum(spans)
            used += sum(spans)
        assert used <= budget, (name, used)
    assert sum(lines.values()) <= MAX_LINES, sorted(lines.items(), key=lambda kv: -kv[1])[:8]
    model_class_file = MODULES["mmkd_utils.model.clip"]
    assert lines["mmkd_utils.model.clip"] <= MAX_MODEL_CLASS_FILE_LINES, model_class_file
    assert len(mmkd_utils.__all__) <= MAX_EXPORTS
    assert set(mmkd_utils.__all__) <= set(dir(mmkd_utils))


def test_the_bar_chart_is_one_short_function():
    tree = TREES["mmkd_utils.plotting"]
    func = next(n for n in tree.body if getattr(n, "name", "") == "plot_probability_bars")
    assert func.end_lineno - func.lineno + 1 <= 45


def test_maintainer_tools_are_not_in_the_package():
    for name in MODULES:
        assert not re.search(r"rebuild|benchmark|update_expected", name), name


def public_definitions(tree: ast.Module):
    """Public functions of a module, and the public methods of its public classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            if isinstance(node, ast.FunctionDef):
                yield node.name, node
            else:
                for item in node.body:
                    decorators = {ast.unparse(d) for d in getattr(item, "decorator_list", [])}
                    if (
                        isinstance(item, ast.FunctionDef)
                        and not item.name.startswith("_")
                        and not decorators & {"property", "cached_property"}
                        and not any(d.endswith(".setter") for d in decorators)
                    ):
                        yield f"{node.name}.{item.name}", item


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_public_function_has_an_example_that_runs(name):
    """Docstring examples run under --doctest-modules; none is skipped."""
    source = MODULES[name].read_text(encoding="utf-8")
    skipped = "+SKIP" in source
    assert not skipped, f"{name}: an example is skipped; make it run on the tiny model"
    missing = [
        qualname
        for qualname, node in public_definitions(TREES[name])
        if ">>>" not in (ast.get_docstring(node) or "")
    ]
    assert not missing, f"{name}: no example in the docstring of {missing}"
