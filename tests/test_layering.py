"""The dependency rules of the layout (README.md, "Layout"), checked: shared imports no framework,
torch_impl and tf_impl never import each other (or each other's framework), no import cycle, no
module uses another module's private (`_name`) names, and no command module of sftrl/commands/
imports another; and no function is longer than a screen."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> set[str]:
    """Top-level names of every module imported anywhere in a package's source."""
    names = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_importing_shared_loads_no_framework():
    code = ("import sys, pkgutil, importlib, shared\n"
            "for m in pkgutil.iter_modules(shared.__path__): importlib.import_module('shared.' + m.name)\n"
            "print(','.join(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=True)
    assert out.stdout.strip() == "", f"importing shared pulled in: {out.stdout.strip()}"


@pytest.mark.parametrize("package,forbidden", [
    ("shared", {"torch", "tensorflow", "keras", "tf_keras", "tensorflow_probability", "transformers",
                "torch_impl", "tf_impl", "sftrl"}),
    ("torch_impl", {"tensorflow", "keras", "tf_keras", "tensorflow_probability", "tf_impl", "sftrl"}),
    ("tf_impl", {"torch", "torch_impl", "sftrl"}),
])
def test_package_imports_respect_layering(package, forbidden):
    assert not imported_modules(package) & forbidden


PACKAGES = ("shared", "torch_impl", "tf_impl", "sftrl", "benchmarks")


def project_import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its source (inside functions too:
    a lazy import is still a dependency)."""
    def module_name(path):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
                module = ".".join(part for part in (base, node.module) if part)
                imported.update([module] + [f"{module}.{alias.name}" for alias in node.names])
        deps = set()
        for target in imported:
            while target and target not in modules:  # `from a.b import c`: c may be a name, not a module
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_import_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_project():
    """Not between packages, nor inside one (sftrl.cli -> sftrl.pipeline -> sftrl.cli was one, when
    the pipeline imported the CLI's `main`; now the CLI passes it in)."""
    graph = project_import_graph()
    assert "sftrl.pipeline.stages" in graph and "shared.reference" in graph  # the walk found the modules
    assert import_cycles(graph) == []


def is_private(name: str) -> bool:
    """`_name`, not `__name__` (a dunder such as `__version__` is public)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, filename: str, project=PACKAGES) -> list[str]:
    """'path:line what' for each private name this module takes from another project module:
    `from a.b import _c`, `from ._b import c` (a private module), or `m._c` where `m` names an
    imported project module (`import a.b as m`, `from a import b`). Third-party privates are not ours
    to police; a module's own private names are its business."""
    found, modules = [], {}  # modules: local name -> the project module (or name) it is bound to
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.split(".")[0] not in project:
                continue
            for alias in node.names:
                if is_private(alias.name) or any(is_private(part) for part in module.split(".")):
                    found.append(f"{filename}:{node.lineno} from {'.' * node.level}{module} import {alias.name}")
                modules[alias.asname or alias.name] = f"{module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in project:
                    if any(is_private(part) for part in alias.name.split(".")):
                        found.append(f"{filename}:{node.lineno} import {alias.name}")
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                found.append(f"{filename}:{node.lineno} {ast.unparse(node)}")
    return found


def test_private_use_finder_finds_each_form():
    source = ("import shared.io as io\nfrom shared import tasks\nfrom shared.io import _write, atomic_write_text\n"
              "from ._helpers import f\nimport numpy as np\n"
              "io._tmp(); tasks._unique_prompts(); np._core; atomic_write_text(); self._x; tasks.__name__\n")
    assert private_uses(source, "m.py") == ["m.py:3 from shared.io import _write", "m.py:4 from ._helpers import f",
                                            "m.py:6 io._tmp", "m.py:6 tasks._unique_prompts"]
    assert private_uses("from shared import __version__\nimport numpy._core\n", "m.py") == []


def test_no_module_uses_another_modules_private_names():
    """What two modules share is public in one of them (or in a common module), never `_name`."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found += private_uses(path.read_text(), str(path.relative_to(REPO)))
    assert found == []


# Modules of sftrl/commands/ that are helpers of the commands, not commands.
COMMAND_HELPERS = {"sftrl.commands", "sftrl.commands.common", "sftrl.commands.flags"}


def test_no_command_module_imports_another():
    """A command reads alone: what two commands need lives in a helper module (common, flags)."""
    graph = project_import_graph()
    commands = {name for name in graph if name.startswith("sftrl.commands.")} - COMMAND_HELPERS
    assert {"sftrl.commands.rl", "sftrl.commands.dpo", "sftrl.commands.reward_model"} <= commands  # found them
    assert {name: sorted(graph[name] & commands) for name in commands if graph[name] & commands} == {}


def test_command_helpers_import_no_command():
    graph = project_import_graph()
    commands = {name for name in graph if name.startswith("sftrl.commands.")} - COMMAND_HELPERS
    assert {name: sorted(graph[name] & commands) for name in COMMAND_HELPERS if graph[name] & commands} == {}


MAX_FUNCTION_LINES = 60
# Functions allowed to be longer, each with its reason (none today).
LONG_FUNCTIONS: dict[str, str] = {}


def long_functions(source: str, filename: str) -> list[str]:
    """'path:line name (N lines)' for every function (methods and nested ones too) longer than
    MAX_FUNCTION_LINES, decorators and docstring included."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - min([node.lineno] + [d.lineno for d in node.decorator_list]) + 1
            if lines > MAX_FUNCTION_LINES and f"{filename}:{node.name}" not in LONG_FUNCTIONS:
                found.append(f"{filename}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_long_function_finder_counts_lines():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}\n", "a.py") == ["a.py:1 f (61 lines)"]
    assert long_functions(f"def f():\n{body}\n".replace("    x0 = 0\n", ""), "a.py") == []


def test_no_function_is_longer_than_a_screen():
    """A phase of the algorithm is a function one can read in one screen (as cleanrl's `ppo.py`
    reads: a training loop is a short sequence of named phases, each a function)."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found += long_functions(path.read_text(), str(path.relative_to(REPO)))
    assert found == []
